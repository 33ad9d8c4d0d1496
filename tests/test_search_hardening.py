"""``tts-graph search`` against files and options nobody here wrote: each bad one is a single
line (file:line where there is a file) and exit 2 before any trial runs; Ctrl-C is one line,
exit 130, with the finished trials kept and the search resumable.

Real files, real ``python -m tts_graph search`` subprocesses, the SIMULATED backend."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
version: 1
name: simbase
models:
  s1: {backend: sim, model: llama-1b, price: {input_per_mtok: 0.1, output_per_mtok: 0.2}}
  s8: {backend: sim, model: llama-8b, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
defaults: {max_tokens: 256, temperature: 0.7}
nodes:
  solve: {role: solver, model: s1, samples: 1}
  vote: {role: vote, inputs: [solve]}
output: vote
"""

SEARCH = """\
version: 1
name: sim-search
base: base.yaml
task: {name: "sim:60", search_limit: 16, heldout_limit: 8}
choices:
  - {node: solve, field: model, values: [s1, s8]}
  - {node: solve, field: samples, values: [1, 2, 4]}
objectives: [accuracy, tokens]
budget: {trials: 4}
searcher: {name: optuna-motpe, seed: 0}
pruning: {min_questions: 4}
"""


def write(d: Path, search: str | bytes = SEARCH) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "base.yaml").write_text(BASE)
    path = d / "search.yaml"
    if isinstance(search, bytes):
        path.write_bytes(search)
    else:
        path.write_text(search)
    return path


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tts_graph", "search", *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=env, cwd=ROOT)


def refused(proc: subprocess.CompletedProcess[str], out: Path) -> str:
    """The one line of a refusal; nothing ran."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, lines
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("trials/*"))
    return lines[0]


@pytest.mark.parametrize(("change", "expected"), [
    # a misspelt top-level key: one line that names the key meant, not also "budget: required"
    (("budget:", "budgte:"), "9: budgte: unknown field (did you mean 'budget'?)"),
    (("values: [1, 2, 4]", "valeus: [1, 2, 4]"),
     "7: choices.1.valeus: unknown field (did you mean 'values'?)"),
    # searcher options were a free dict: a typo kept the default, a bad value crashed
    (("seed: 0}", "seed: 0, options: {n_startup: 3}}"),
     "10: searcher.options.n_startup: unknown option (known: n_startup_trials)"),
    (("{name: optuna-motpe, seed: 0}", "{name: grid, options: {levels: x}}"),
     "10: searcher.options.levels: must be an integer"),
    (("{name: optuna-motpe, seed: 0}", "{name: grid, options: {levels: 0}}"),
     "10: searcher.options.levels: must be >= 2"),
    (("{name: optuna-motpe, seed: 0}", "{name: optuna-nsga2, options: {population_size: 1}}"),
     "10: searcher.options.population_size: must be >= 2"),
    (("{name: optuna-motpe, seed: 0}", "{name: agent-reinforce, options: {explor: 1}}"),
     "10: searcher.options.explor: unknown option"),
    (("{name: optuna-motpe, seed: 0}", "{name: agent-reinforce, feedback_model: gpt9}"),
     "10: searcher.feedback_model: 'gpt9' is not a model of the base graph"),
    # Optuna steps an int range by whole numbers: step 0.5 crashed with a traceback
    (("values: [1, 2, 4]", "int: [1, 4], step: 0.5"),
     "7: choices.1: the step of an int range must be a whole number, not 0.5"),
    # the base graph is named on a line of the search file: that line is the place
    (("base: base.yaml", "base: nobase.yaml"), "3: base: nobase.yaml: file not found"),
    (("base: base.yaml", "base: ."), "3: base: .: is a directory"),
])
def test_bad_search_file_is_one_line_at_its_line(tmp_path: Path, change: tuple[str, str],
                                                 expected: str) -> None:
    assert change[0] in SEARCH
    path = write(tmp_path, SEARCH.replace(*change))
    line = refused(cli(str(path), "--out", str(tmp_path / "out")), tmp_path / "out")
    assert line.startswith(f"{path}:{expected}"), line


def test_non_utf8_search_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, SEARCH.encode() + b"description: caf\xe9\n")
    line = refused(cli(str(path), "--out", str(tmp_path / "out")), tmp_path / "out")
    assert line == f"{path}:12: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_a_directory_as_the_search_file(tmp_path: Path) -> None:
    write(tmp_path)
    line = refused(cli(str(tmp_path), "--out", str(tmp_path / "out")), tmp_path / "out")
    assert line == f"{tmp_path}: is a directory, not a file"


@pytest.mark.parametrize(("storage", "expected"), [
    ("notaurl", "storage 'notaurl': not a storage URL"),
    ("", "storage '': not a storage URL"),
    ("sqlite:{d}/x.db", "an SQLite URL is sqlite:///FILE"),
    ("sqlite:///{d}/missing/dir/x.db", "directory {d}/missing/dir does not exist"),
    ("sqlite:///{d}/plain/x.db", "directory {d}/plain is not a directory"),
    ("sqlite:///{d}", "{d} is not a file"),
    # the driver's own errors come with lines of help: only the first is kept
    ("sqlite:///{d}/base.yaml", "cannot open: DatabaseError: (sqlite3.DatabaseError) file is "
     "not a database"),
    ("postgresql://u:secret@127.0.0.1:1/db", "storage postgresql://u:***@127.0.0.1:1/db: "
     "cannot open: OperationalError"),
])
def test_bad_storage_is_one_line(tmp_path: Path, storage: str, expected: str) -> None:
    path = write(tmp_path)
    (tmp_path / "plain").write_text("a regular file\n")
    d = str(tmp_path)
    line = refused(cli(str(path), "--out", str(tmp_path / "out"), "--storage",
                       storage.format(d=d)), tmp_path / "out")
    assert expected.format(d=d) in line, line
    assert "secret" not in line


@pytest.mark.parametrize(("out", "expected"), [
    # the CLI checks --out before the search session would (a session made from Python
    # says "output directory ...: exists and is not a directory")
    ("plain", "--out {d}/plain: is a file: give a directory"),
    ("plain/sub", "--out {d}/plain/sub: {d}/plain is not a directory"),
])
def test_unwritable_out_is_refused_before_trials(tmp_path: Path, out: str,
                                                 expected: str) -> None:
    path = write(tmp_path)
    (tmp_path / "plain").write_text("a regular file\n")
    line = refused(cli(str(path), "--out", str(tmp_path / out)), tmp_path / "out")
    assert line == expected.format(d=tmp_path)
    assert (tmp_path / "plain").read_text() == "a regular file\n"


def _trials(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select state, count(*) from trials group by state"))


def _trials_so_far(db: Path) -> dict[str, int]:
    """``_trials`` while the search may still be making the file: none before its tables."""
    try:
        return _trials(db) if db.exists() else {}
    except sqlite3.OperationalError:  # the file is there, Optuna's schema not yet
        return {}


def test_ctrl_c_keeps_finished_trials_and_resumes(tmp_path: Path) -> None:
    # trials long enough to be caught mid-way: many questions, wide sample counts
    search = (SEARCH.replace("sim:60", "sim:600").replace("search_limit: 16", "search_limit: 200")
              .replace("values: [1, 2, 4]", "int: [8, 64]").replace("trials: 4", "trials: 400")
              .replace("[accuracy, tokens]", "[accuracy]").replace("optuna-motpe", "random"))
    path = write(tmp_path, search)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    db = out / "study.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until a trial has finished
        time.sleep(0.5)
        if sum(n for s, n in _trials_so_far(db).items() if s != "RUNNING") >= 1:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "run the same command to resume" in last, last
    states = _trials(db)
    # nothing left RUNNING (it would count against the budget until its heartbeat is stale)
    assert "RUNNING" not in states, states
    finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    assert finished >= 1
    assert f"interrupted: {finished} finished trials kept in sqlite:///" in last, last

    # resume: a smaller budget that the finished trials leave room for one more
    (tmp_path / "search.yaml").write_text(search.replace("trials: 400",
                                                         f"trials: {finished + 1}"))
    again = cli(str(path), "--out", str(out), "--no-heldout", timeout=300)
    assert again.returncode == 0, again.stderr
    states = _trials(db)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) >= finished + 1, states
    assert "RUNNING" not in states


# ------------------------------------------------------ spaces that cannot run, said up front


@pytest.mark.parametrize(("change", "expected"), [
    # a value listed twice was silently drawn twice as often
    (("values: [s1, s8]", "values: [s1, s8, s1]"),
     "6: choices.0: 's1' is listed twice in values"),
    # a float range on an int field passed at its whole ends; every trial was infeasible
    (("values: [1, 2, 4]", "float: [1, 4]"),
     "7: choices.1: samples = 2.11: must be an integer"),
    # grid listed every value of the range before the first trial (10^9: out of memory)
    (("values: [1, 2, 4]}\n", "values: [1, 2, 4]}\n  - {node: solve, field: seed, "
      "int: [0, 1000000000], step: 1}\n"),
     "8: choices.2: 1,000,000,001 values with step 1: grid enumerates them"),
    # nothing fits: every trial was infeasible, and the search ended with exit 0
    (("pruning:", "constraints: {max_tokens_per_query: 10}\npruning:"),
     "11: constraints: no graph of the search space fits the constraints (for example: "
     "worst case"),
    (("choices:\n", "choices:\n  - {node: solve, enabled: [false]}\n"),
     "5: choices: no configuration of the search space is a valid graph"),
    # the base graph prices nothing: the line of the cap, not a line without a file
    (("pruning:", "constraints: {max_cost_usd_per_query: 0.01}\npruning:"),
     "11: constraints.max_cost_usd_per_query: the base graph declares no price for u"),
    # base: naming a search file gave a page of "unknown field" lines
    (("base: base.yaml", "base: search.yaml"), "3: base: search.yaml: is a search file"),
])
def test_space_that_cannot_run_is_one_line_before_trials(tmp_path: Path,
                                                         change: tuple[str, str],
                                                         expected: str) -> None:
    search = SEARCH.replace("{name: optuna-motpe, seed: 0}", "{name: grid}")
    assert change[0] in search
    path = write(tmp_path, search.replace(*change))
    (tmp_path / "base.yaml").write_text(
        BASE.replace("  s8:", "  u: {backend: sim, model: llama-3b}\n  s8:"))
    line = refused(cli(str(path), "--out", str(tmp_path / "out")), tmp_path / "out")
    assert line.startswith(f"{path}:{expected}"), line


def test_a_huge_space_is_counted_not_walked() -> None:
    """``Space.size`` over GRID_LIMIT configurations counted them one by one: 2 * 10^7 took
    90 s before the first trial, 10^9 hours."""
    from tts_graph.search.space import Space
    from tts_graph.search.spec import SearchSpec

    tens = list(range(1, 11))
    choices = [{"node": "solve", "field": f, "values": tens}
               for f in ("samples", "seed", "max_tokens")]
    choices += [{"node": "solve", "field": "temperature", "values": [t / 10 for t in tens]},
                {"node": "solve", "field": "top_p", "values": [t / 10 for t in tens]},
                {"node": "judge", "field": "seed", "values": tens},
                {"node": "judge", "field": "max_tokens", "values": tens},
                {"node": "judge", "field": "temperature", "values": [t / 10 for t in tens]},
                {"node": "plan"}]
    base = {"version": 1, "name": "b", "models": {"m": {"backend": "sim", "model": "llama-1b"}},
            "nodes": {"plan": {"role": "planner", "model": "m"},
                      "solve": {"role": "solver", "model": "m", "inputs": ["plan"]},
                      "judge": {"role": "judge", "model": "m", "inputs": ["solve"]}},
            "output": "judge"}
    spec = SearchSpec.model_validate({
        "name": "s", "base": "b.yaml", "task": {"name": "sim:10"}, "choices": choices,
        "budget": {"trials": 3}, "searcher": {"name": "grid"}})
    started = time.monotonic()
    census = Space(spec, base).census()
    assert census.conditional == 2 * 10**8 and census.graphs == -1
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(("make", "expected"), [
    (lambda out: (out / "front").write_text("x"), "front is not a directory"),
    (lambda out: (out / "front.json").mkdir(), "front.json is a directory"),
])
def test_outputs_that_cannot_be_written_are_refused_before_trials(tmp_path: Path, make: Any,
                                                                  expected: str) -> None:
    """They failed with a traceback after every trial had run (and been paid for)."""
    path = write(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    line = refused(cli(str(path), "--out", str(out)), out)
    assert line == f"output directory {out}: {expected}: move it away, or give another --out"


def test_a_failed_export_keeps_the_earlier_front_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The earlier front was deleted before the new one was written: a failure (a full disk,
    Ctrl-C) part-way left neither whole."""
    import asyncio

    import tts_graph.search.driver as driver

    path = write(tmp_path, SEARCH.replace("trials: 4", "trials: 6"))
    s = driver.SearchSession(path, out_dir=tmp_path / "out")
    try:
        asyncio.run(s.run())
        entries = s.front()
        assert len(entries) >= 2
        s.export(entries)
        front = tmp_path / "out" / "front"
        before = {p.name: p.read_text() for p in front.iterdir()}
        calls = {"n": 0}
        dump = driver.yaml.safe_dump

        def failing(*args: Any, **kwargs: Any) -> str:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return dump(*args, **kwargs)

        monkeypatch.setattr(driver.yaml, "safe_dump", failing)
        with pytest.raises(OSError):
            s.export(list(reversed(entries)))  # another order: other file names
        after = {p.name: p.read_text() for p in front.iterdir()}
        for name, text in before.items():  # every earlier graph still there, whole
            assert after.get(name) == text, name
        assert all(not n.startswith(".") for n in after)  # no temporary file left
    finally:
        s.close()


def test_the_best_graph_validates_and_reproduces_its_score(tmp_path: Path) -> None:
    path = write(tmp_path, SEARCH.replace("{min_questions: 4}", "{enabled: false}"))
    out = tmp_path / "out"
    proc = cli(str(path), "--out", str(out), "--json", "--no-heldout")
    assert proc.returncode == 0, proc.stderr
    best = json.loads(proc.stdout)["front"][0]
    graph = best["graph_file"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    check = subprocess.run([sys.executable, "-m", "tts_graph", "validate", graph],
                           capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    again = subprocess.run([sys.executable, "-m", "tts_graph", "eval", graph, "--task", "sim:60",
                            "--split", "search", "--seed", "0", "--limit", "16", "--no-cache",
                            "--json", "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["done"] == 16
    assert rerun["accuracy"] == best["search"]["accuracy"]
    assert rerun["tokens_per_question"] == pytest.approx(best["search"]["tokens"])


# ------------------------------------------------------------------ a study and its space


def test_a_study_refuses_a_changed_space_and_allows_a_bigger_budget(tmp_path: Path) -> None:
    path = write(tmp_path, SEARCH.replace("trials: 4", "trials: 2"))
    out = tmp_path / "out"
    assert cli(str(path), "--out", str(out), "--no-heldout").returncode == 0
    # more trials and another searcher: the same search, continued
    path.write_text(SEARCH.replace("trials: 4", "trials: 3").replace(
        "{name: optuna-motpe, seed: 0}", "{name: random, seed: 5}"))
    more = cli(str(path), "--out", str(out), "--no-heldout")
    assert more.returncode == 0, more.stderr
    assert _trials(out / "study.db")["COMPLETE"] >= 3
    # other choices, task or base graph: its trials would not compare with the new ones
    for old, new, key, line in (("values: [1, 2, 4]", "values: [1, 8]", "choices", 5),
                                ("sim:60", "sim:61", "task", 4)):
        path.write_text(SEARCH.replace(old, new))
        got = refused(cli(str(path), "--out", str(out), "--no-heldout"), tmp_path / "none")
        assert got.startswith(f"{path}:{line}: {key}: study 'sim-search' in sqlite:///"), got
        assert f"its {key} differ" in got
    (tmp_path / "base.yaml").write_text(BASE.replace("max_tokens: 256", "max_tokens: 512"))
    path.write_text(SEARCH)
    got = refused(cli(str(path), "--out", str(out), "--no-heldout"), tmp_path / "none")
    assert "its base differ" in got and got.startswith(f"{path}:3: base: ")
    # a second search of another space naming the same study in a shared storage
    (tmp_path / "base.yaml").write_text(BASE)
    other = tmp_path / "other.yaml"
    other.write_text(SEARCH.replace("values: [1, 2, 4]", "values: [2, 3]"))
    got = refused(cli(str(other), "--out", str(tmp_path / "out2"), "--storage",
                      f"sqlite:///{out / 'study.db'}"), tmp_path / "out2")
    assert "its choices differ" in got
