"""The command line against input nobody here wrote, run as a user runs it (a subprocess of
``python -m tts_graph``): binary files, empty questions, outputs that cannot be written or
that are inputs, a full disk, a closed or broken stdout, Ctrl-C. Each case: the exit code,
one line on stderr and no traceback, and nothing lost or overwritten."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cli import SCRIPTED  # the scripted self-consistency graph

#: one call a question, each taking LATENCY seconds: slow enough to be interrupted
SLOW = """\
version: 1
name: slow
models:
  m: {backend: scripted, model: fake, options: {answers: ["Answer: 4"], latency_s: 0.3}}
nodes:
  solve: {role: solver, model: m}
output: solve
"""

SIM_BASE = """\
version: 1
name: simbase
models:
  s1: {backend: sim, model: llama-1b}
  s3: {backend: sim, model: llama-3b}
nodes:
  solve: {role: solver, model: s1, samples: 2}
  vote: {role: vote, inputs: [solve]}
output: vote
"""

SEARCH = """\
version: 1
name: hardening
base: base.yaml
task: {name: "sim:20", search_limit: 10, heldout_limit: 10}
choices:
  - {node: solve, field: samples, values: [1, 2]}
  - {node: solve, field: model, values: [s1, s3]}
objectives: [accuracy]
budget: {trials: 1}
searcher: {name: optuna-tpe, seed: SEED}
concurrency: 4
"""


def cli(*args: str, cwd: Path, stdin: str | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                          text=True, cwd=cwd, input=stdin, timeout=timeout, check=False)


def one_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a command that failed with ``code``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "g.yaml").write_text(SCRIPTED)
    (tmp_path / "slow.yaml").write_text(SLOW)
    (tmp_path / "q.jsonl").write_text("".join(f'"question {i}"\n' for i in range(3)))
    return tmp_path


# ------------------------------------------------------------------ files that are not text
def test_run_input_not_utf8_names_file_and_line(work: Path) -> None:
    (work / "bin.jsonl").write_bytes(b'"fine"\n"caf\xe9"\n')
    line = one_line(cli("run", "g.yaml", "--input", "bin.jsonl", cwd=work))
    assert line.startswith("bin.jsonl:2: not UTF-8 text")


def test_trace_of_binary_file_and_of_foreign_numbers(work: Path) -> None:
    (work / "bin.trace").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage\n")
    assert one_line(cli("trace", "bin.trace", cwd=work)).startswith(
        "bin.trace:1: not a trace line: not UTF-8")
    (work / "odd.trace").write_text('{"step": "s", "model": "m", "prompt_tokens": 3}\n'
                                    '{"step": "s", "model": "m", "prompt_tokens": "12"}\n')
    assert one_line(cli("trace", "odd.trace", cwd=work)) == (
        'odd.trace:2: not a trace line: prompt_tokens: expected a whole number >= 0, '
        'got "12"')


def test_graph_file_not_utf8_names_the_line(work: Path) -> None:
    (work / "latin1.yaml").write_bytes(SCRIPTED.replace("fake", "caf\xe9").encode("latin-1"))
    for command in (("validate",), ("show",), ("run", "-q", "x")):
        line = one_line(cli(*command[:1], "latin1.yaml", *command[1:], cwd=work))
        assert line.startswith("latin1.yaml:4: not UTF-8 text"), command


# --------------------------------------------------------------------------- questions
@pytest.mark.parametrize("question", ["", "   \t"])
def test_empty_question_is_refused(work: Path, question: str) -> None:
    assert one_line(cli("run", "g.yaml", "-q", question, cwd=work)) == (
        "-q/--question: empty question")


def test_empty_question_in_input_file_names_its_line(work: Path) -> None:
    (work / "e.jsonl").write_text('"a"\n{"question": "  "}\n')
    assert one_line(cli("run", "g.yaml", "--input", "e.jsonl", cwd=work)) == (
        "e.jsonl:2: empty question")


def test_line_separator_inside_a_question_does_not_split_it(work: Path) -> None:
    # U+2028 may stand unescaped in a JSON string; str.splitlines() cut the line there
    (work / "u.jsonl").write_text(json.dumps("one\u2028two", ensure_ascii=False) + '\n"b"\n',
                                  encoding="utf-8")
    proc = cli("run", "g.yaml", "--input", "u.jsonl", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_questions_from_stdin(work: Path) -> None:
    proc = cli("run", "g.yaml", "--input", "-", "--json", cwd=work, stdin='"a"\n"b"\n')
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["answer"] for x in proc.stdout.splitlines()] == ["4", "4"]


# ------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize(("out", "says"), [
    ("missing/out.jsonl", "--out missing/out.jsonl: directory missing does not exist"),
    ("g.yaml/out.jsonl", "--out g.yaml/out.jsonl: g.yaml is not a directory"),
    (".", "--out .: is a directory: give a file name"),
])
def test_unwritable_out_is_refused_before_any_call(work: Path, out: str, says: str) -> None:
    proc = cli("run", "g.yaml", "--input", "q.jsonl", "--out", out, "--trace", "t.jsonl",
               cwd=work)
    assert one_line(proc) == says
    # no model was called: the trace (written per call) was never started
    assert not (work / "t.jsonl").exists() or not (work / "t.jsonl").read_text()


@pytest.mark.parametrize("option", ["--out", "--trace"])
def test_output_that_is_an_input_is_refused(work: Path, option: str) -> None:
    before = {p: (work / p).read_bytes() for p in ("g.yaml", "q.jsonl")}
    for target in before:
        line = one_line(cli("run", "g.yaml", "--input", "q.jsonl", option, target, cwd=work))
        assert line.startswith(f"{option} {target}: is also an input")
    assert {p: (work / p).read_bytes() for p in before} == before


def test_eval_trace_or_plot_on_the_graph_leaves_it_intact(work: Path) -> None:
    graph = (work / "g.yaml").read_bytes()
    (work / "h.yaml").write_text(SCRIPTED.replace("scripted-sc", "other"))
    proc = cli("eval", "g.yaml", "--task", "sim:3", "--out", "r", "--trace", "g.yaml",
               cwd=work)
    assert one_line(proc).startswith("--trace g.yaml: is also an input")
    proc = cli("eval", "g.yaml", "h.yaml", "--task", "sim:3", "--out", "r", "--plot", "g.yaml",
               cwd=work)
    assert one_line(proc).startswith("--plot g.yaml: is also an input")
    assert (work / "g.yaml").read_bytes() == graph
    assert not (work / "r").exists()


def test_import_out_on_its_config_is_refused(work: Path) -> None:
    config = json.dumps({"name": "x", "layers": [[{
        "type": "generator", "model": "gpt-4o-mini", "model_type": "OpenAI_API"}]]})
    (work / "a.json").write_text(config)
    assert one_line(cli("import", "archon", "a.json", "--out", "a.json", cwd=work)
                    ).startswith("--out a.json: is also an input")
    assert (work / "a.json").read_text() == config


def test_cache_under_a_regular_file(work: Path) -> None:
    for command in (("run", "g.yaml", "-q", "x"), ("eval", "g.yaml", "--task", "sim:3",
                                                   "--out", "r")):
        line = one_line(cli(*command, "--cache", "q.jsonl/c.sqlite", cwd=work))
        assert "q.jsonl is not a directory" in line, command
    assert not (work / "r").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk(work: Path) -> None:
    proc = cli("run", "g.yaml", "-q", "x", "--out", "/dev/full", cwd=work)
    assert one_line(proc, code=1) == "--out /dev/full: cannot write: No space left on device"
    for command in (("schema",), ("show", "g.yaml"), ("run", "g.yaml", "-q", "x", "--json")):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "tts_graph", *command], cwd=work,
                                  stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                                  check=False)
        assert one_line(proc, code=1) == (
            "tts-graph: standard output: cannot write: No space left on device"), command


def test_trace_on_a_full_disk_names_the_trace(work: Path) -> None:
    # it blamed standard output before (os.write's error carries no file name)
    for command in (("run", "g.yaml", "-q", "x"), ("eval", "g.yaml", "--task", "sim:3",
                                                   "--out", "r")):
        proc = cli(*command, "--trace", "/dev/full", cwd=work)
        assert one_line(proc, code=1) == (
            "/dev/full: cannot write the trace: No space left on device"), command


def test_closed_stdout_still_writes_the_out_file(work: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "run", "g.yaml", "-q", "x",
                           "--out", "o.jsonl"], cwd=work, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120, check=False,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len((work / "o.jsonl").read_text().splitlines()) == 1


def test_broken_pipe_is_quiet(work: Path) -> None:
    many = "".join(f'"q{i}"\n' for i in range(300))
    (work / "many.jsonl").write_text(many)
    for command in (("schema",), ("run", "g.yaml", "--input", "many.jsonl", "--json")):
        proc = subprocess.Popen([sys.executable, "-m", "tts_graph", *command], cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # like `| head -1`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
        assert "Traceback" not in err and "Exception ignored" not in err, err


def test_plot_on_a_fifo_is_written_not_replaced(work: Path) -> None:
    run = cli("eval", "g.yaml", "--task", "sim:3", "--out", "r", cwd=work)
    assert run.returncode == 0, run.stderr
    fifo = work / "plot.png"  # a FIFO: a viewer reading the plot as it comes
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = cli("compare", "r", "--plot", str(fifo), cwd=work)
    if reader.is_alive():  # nothing opened the FIFO: let the reader go
        with open(fifo, "wb"):
            pass
    reader.join(10)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO, not a file renamed over it
    assert got and got[0].startswith(b"\x89PNG")


def test_plot_format_is_checked_before_the_runs(work: Path) -> None:
    (work / "h.yaml").write_text(SCRIPTED.replace("scripted-sc", "other"))
    proc = cli("eval", "g.yaml", "h.yaml", "--task", "sim:3", "--out", "r", "--plot",
               "p.xyz", cwd=work)
    assert one_line(proc).startswith("--plot p.xyz: matplotlib cannot write .xyz files")
    assert not (work / "r").exists()


# ------------------------------------------------------------------------------- eval
def test_failed_eval_start_leaves_no_run_behind(work: Path) -> None:
    (work / "bad.jsonl").write_text('{"question": "a", "answer": "1"}\n{nope\n')
    assert one_line(cli("eval", "g.yaml", "--task", "bad.jsonl", "--out", "r", cwd=work)
                    ).startswith("bad.jsonl:2:")
    assert not (work / "r").exists()
    (work / "bad.jsonl").write_text('{"question": "a", "answer": "4"}\n')
    fixed = cli("eval", "g.yaml", "--task", "bad.jsonl", "--out", "r", cwd=work)
    assert fixed.returncode == 0, fixed.stderr  # not "already holds a run"


def test_eval_resume_refuses_options_it_would_ignore(work: Path) -> None:
    assert cli("eval", "g.yaml", "--task", "sim:3", "--out", "r", cwd=work).returncode == 0
    assert one_line(cli("eval", "--resume", "r", "--task", "sim:9", "--limit", "2", cwd=work)
                    ) == ("--resume continues the run as it was recorded: drop --task, "
                          "--limit")


def test_eval_graphs_with_one_name(work: Path) -> None:
    (work / "sub").mkdir()
    (work / "sub" / "g.yaml").write_text(SCRIPTED.replace("scripted-sc", "other"))
    line = one_line(cli("eval", "g.yaml", "sub/g.yaml", "--task", "sim:3", "--out", "r",
                        cwd=work))
    assert line.startswith("several graphs named g:")
    assert not (work / "r").exists()


def test_huge_simulated_task_is_refused_at_once(work: Path) -> None:
    proc = cli("eval", "g.yaml", "--task", "sim:99999999999", "--out", "r", cwd=work,
               timeout=60)
    assert "1 <= N <= 100,000" in one_line(proc)


def test_more_workers_than_questions(work: Path) -> None:
    # one worker per open question at most: 300 processes for 3 questions took minutes
    proc = cli("eval", "g.yaml", "--task", "sim:3", "--out", "r", "--workers", "300",
               "--json", cwd=work, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["done"] == 3


# ---------------------------------------------------------------------------- numbers
def test_serve_infinite_body_size(work: Path) -> None:
    proc = cli("serve", "g.yaml", "--port", "0", "--max-body-mb", "inf", cwd=work)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "max-body-mb" in proc.stderr


def test_search_seed_and_worker_numbers(work: Path) -> None:
    (work / "base.yaml").write_text(SIM_BASE)
    (work / "neg.yaml").write_text(SEARCH.replace("SEED", "-1"))
    assert one_line(cli("search", "neg.yaml", cwd=work)) == (
        "neg.yaml:10: searcher.seed: must be >= 0")
    (work / "s.yaml").write_text(SEARCH.replace("SEED", "0"))
    assert one_line(cli("search", "s.yaml", "--out", "g.yaml", cwd=work)) == (
        "--out g.yaml: is a file: give a directory")
    proc = cli("search", "s.yaml", "--out", "out", "--worker", str(10**12), "--no-heldout",
               "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr


def test_search_storage_error_is_one_line(work: Path) -> None:
    (work / "base.yaml").write_text(SIM_BASE)
    (work / "s.yaml").write_text(SEARCH.replace("SEED", "0"))
    graph = (work / "g.yaml").read_bytes()
    line = one_line(cli("search", "s.yaml", "--out", "out", "--storage",
                        f"sqlite:///{work / 'g.yaml'}", cwd=work))
    assert line.startswith(f"storage sqlite:///{work / 'g.yaml'}: cannot open: DatabaseError:")
    assert (work / "g.yaml").read_bytes() == graph


# ------------------------------------------------------------------------------ Ctrl-C
def _interrupt_when(cmd: list[str], cwd: Path, ready) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Run ``cmd``, and once ``ready()`` holds send SIGINT to its process group, as a
    terminal's Ctrl-C does."""
    proc = subprocess.Popen([sys.executable, "-m", "tts_graph", *cmd], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_ctrl_c_during_run_keeps_finished_results(work: Path) -> None:
    (work / "many.jsonl").write_text("".join(f'"q{i}"\n' for i in range(40)))
    proc = _interrupt_when(["run", "slow.yaml", "--input", "many.jsonl", "--out", "o.jsonl",
                            "--trace", "t.jsonl", "--concurrency", "2"], work,
                           lambda: _lines(work / "t.jsonl") >= 4)
    line = one_line(proc, code=130)
    done = _lines(work / "o.jsonl")
    assert 4 <= done < 40
    assert line == f"interrupted: {done} of 40 questions finished; their results are in o.jsonl"
    ids = [json.loads(x)["id"] for x in (work / "o.jsonl").read_text().splitlines()]
    assert ids == sorted(ids)


def test_ctrl_c_during_one_question(work: Path) -> None:
    (work / "slower.yaml").write_text(SLOW.replace("0.3", "30"))
    proc = _interrupt_when(["run", "slower.yaml", "-q", "x", "--trace", "t.jsonl"], work,
                           lambda: (work / "t.jsonl").exists())
    assert one_line(proc, code=130) == "interrupted: no question finished (of 1)"


def _stored(run: Path) -> int:
    try:
        with sqlite3.connect(run / "results.sqlite", timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_during_eval_names_the_resume_command(work: Path, workers: str) -> None:
    proc = _interrupt_when(["eval", "slow.yaml", "--task", "sim:60", "--out", "my run",
                            "--concurrency", "2", "--workers", workers], work,
                           lambda: _stored(work / "my run") >= 4)
    line = one_line(proc, code=130)
    done = _stored(work / "my run")
    assert line == (f"interrupted: {done} of 60 questions done and stored in my run; "
                    "continue with: tts-graph eval --resume 'my run'")
    resumed = cli("eval", "--resume", "my run", "--json", cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["done"] == 60
    with sqlite3.connect(work / "my run" / "results.sqlite") as conn:
        ids = [r[0] for r in conn.execute("SELECT item_id FROM results")]
    assert len(ids) == len(set(ids)) == 60


def _interrupt_after(args: list[str], cwd: Path, delay: float
                     ) -> subprocess.CompletedProcess[str]:
    """``args`` interrupted ``delay`` seconds after the start, the whole process group as a
    terminal's Ctrl-C does."""
    proc = subprocess.Popen([sys.executable, "-m", "tts_graph", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(delay)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# while the imports run (a traceback through importlib before), while the graph compiles
# (Typer's silent exit 130 before), or once the questions run: always one line, exit 130
@pytest.mark.parametrize("delay", [0.2, 0.5, 0.9])
def test_ctrl_c_right_after_the_start(work: Path, delay: float) -> None:
    (work / "many.jsonl").write_text("".join(f'"q{i}"\n' for i in range(40)))
    proc = _interrupt_after(["run", "slow.yaml", "--input", "many.jsonl", "--out", "o.jsonl"],
                            work, delay)
    assert one_line(proc, code=130).startswith(("tts-graph: interrupted", "interrupted: "))


@pytest.mark.parametrize("delay", [0.3])
def test_ctrl_c_right_after_an_eval_starts(work: Path, delay: float) -> None:
    proc = _interrupt_after(["eval", "slow.yaml", "--task", "sim:60", "--out", "r"], work,
                            delay)
    line = one_line(proc, code=130)
    if line == "tts-graph: interrupted":  # before the run began: no run directory left
        assert not (work / "r").exists()
    else:
        assert "tts-graph eval --resume r" in line


def test_the_command_starts_light() -> None:
    """What keeps the window above short: the entry point imports nothing heavy before
    ``main`` holds Ctrl-C (the package's names load on first use)."""
    code = ("import sys, tts_graph.cli; print(sorted(m for m in "
            "('typer', 'pydantic', 'rich', 'networkx') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"
    from tts_graph import Graph, compile_graph  # the public names still load

    assert Graph.__name__ == "Graph" and callable(compile_graph)


# ------------------------------------------------------- text that json.loads or argv let in
LONE = "a \\u escape that is half of a UTF-16 pair (a lone surrogate) is not text: fix or remove it"


def test_lone_surrogate_in_run_input_is_refused(work: Path) -> None:
    (work / "sur.jsonl").write_text('"fine"\n"half \\ud800 a pair"\n')
    proc = cli("run", "g.yaml", "--input", "sur.jsonl", "--cache", "c.sqlite", cwd=work)
    assert one_line(proc) == f"sur.jsonl:2: {LONE}"


def test_lone_surrogate_in_eval_task_is_refused(work: Path) -> None:
    (work / "t.jsonl").write_text('{"question": "ok \\ud83d\\ude00", "answer": "4"}\n'
                                  '{"question": "x\\udc80", "answer": "4"}\n')
    proc = cli("eval", "g.yaml", "--task", "t.jsonl", "--out", "r", cwd=work)
    assert one_line(proc) == f"t.jsonl:2: {LONE}"
    assert not (work / "r").exists()
    (work / "t.jsonl").write_text('{"question": "ok \\ud83d\\ude00", "answer": "4"}\n')
    assert cli("eval", "g.yaml", "--task", "t.jsonl", "--out", "r", cwd=work).returncode == 0


def test_question_argument_not_utf8(work: Path) -> None:
    # a Latin-1 terminal: Python keeps the byte as a surrogate, which crashed the cache key
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"tts_graph", b"run", b"g.yaml",
                           b"-q", b"caf\xe9", b"--cache", b"c.sqlite"], capture_output=True,
                          cwd=work, timeout=120, check=False)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "",
                                       proc.stderr.decode("utf-8", "replace"))
    assert one_line(done) == "-q/--question: not UTF-8 text (is the terminal set to UTF-8?)"


def test_out_through_a_dangling_or_looping_link_is_refused_first(work: Path) -> None:
    (work / "dangling").symlink_to(work / "no such dir" / "o.jsonl")
    (work / "loop").symlink_to(work / "loop")
    for link, says in (("dangling", f"--out dangling (a link to {work / 'no such dir' / 'o.jsonl'}"
                                     f"): directory {work / 'no such dir'} does not exist"),
                       ("loop", "--out loop: a symbolic link that loops: give another file")):
        proc = cli("run", "slow.yaml", "--input", "q.jsonl", "--out", link, "--trace", "t.jsonl",
                   cwd=work)
        assert one_line(proc) == says
        assert not (work / "t.jsonl").exists()  # refused before any model call


def test_a_looping_out_link_is_refused_on_python_3_13_too(
        work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Python 3.13's Path.resolve no longer raises on a loop: it stops where os.path.realpath
    # does, at a link. Run the check with that resolve whatever Python runs the tests
    import typer

    from tts_graph.cli.files import check_output_file

    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: Path(os.path.realpath(self)))
    (work / "a").symlink_to(work / "b")
    (work / "b").symlink_to(work / "a")
    with pytest.raises(typer.Exit) as exit_:
        check_output_file(work / "a", "--out")
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err == (f"--out {work / 'a'}: a symbolic link that loops: "
                                       "give another file\n")


@pytest.mark.parametrize(("args", "says"), [
    (["run"], "run: Missing argument 'graph'."),
    (["run", "g.yaml", "--concurrency", "0"], "run: Invalid value for '--concurrency'"),
    (["run", "g.yaml", "--concurrency", "many"], "run: Invalid value for '--concurrency'"),
    (["run", "g.yaml", "--bogus"], "run: No such option: --bogus"),
    (["frobnicate"], "No such command 'frobnicate'."),
    (["import", "langgraph", "x.py"], "import: No such command 'langgraph'."),
    # Click raises this one without the command's context: no command named, no hint
    (["eval", "g.yaml", "--task"], "tts-graph: Option '--task' requires an argument."),
])
def test_a_command_line_that_does_not_parse_is_one_line(work: Path, args: list[str],
                                                        says: str) -> None:
    """Usage errors were Typer's four-line box; now one line naming the command, exit 2."""
    line = one_line(cli(*args, cwd=work))
    assert says in line and "╭" not in line, line
    assert line.endswith("--help')") or line.startswith("tts-graph: "), line


def test_no_arguments_and_help_still_print_the_help(work: Path) -> None:
    bare = cli(cwd=work)
    assert bare.returncode == 2 and "Usage:" in bare.stdout and bare.stderr == ""
    helped = cli("run", "--help", cwd=work)
    assert helped.returncode == 0 and "--concurrency" in helped.stdout
