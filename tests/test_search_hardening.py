"""``tts-graph search`` against files and options nobody here wrote: each bad one is a single
line (file:line where there is a file) and exit 2 before any trial runs; Ctrl-C is one line,
exit 130, with the finished trials kept and the search resumable.

Real files, real ``python -m tts_graph search`` subprocesses, the SIMULATED backend."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

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
        if db.exists() and sum(n for s, n in _trials(db).items() if s != "RUNNING") >= 1:
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
