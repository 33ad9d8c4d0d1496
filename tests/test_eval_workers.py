"""``tts-graph eval --workers N`` end to end: worker processes sharing one run directory
against the loopback fault server (backend: openai), a worker killed mid-run, --resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from taskfiles import write_sums

from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server

N = 60


def _graph(url: str, retries: int = 3) -> str:
    return f"""
version: 1
name: solve-vote
models:
  m: {{backend: openai, model: fault, api_base: "{url}/v1", timeout_s: 10,
       max_retries: {retries}}}
defaults: {{max_tokens: 32}}
nodes:
  solve: {{role: solver, model: m, samples: 3}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300, check=False)


def _db(run: Path) -> sqlite3.Connection:
    return sqlite3.connect(run / "results.sqlite", timeout=30)


def _answers(run: Path) -> list[tuple[str, str | None, str]]:
    with _db(run) as conn:
        return list(conn.execute("SELECT item_id, answer, status FROM results ORDER BY idx"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_sums(tmp_path / "q.jsonl", N)
    return tmp_path


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_share_the_run_each_question_once(workdir: Path, start: str) -> None:
    env = {"TTS_GRAPH_EVAL_START": start}
    with serve_fault_server(FaultConfig(latency_ms=30)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        ref = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "ref", "--no-cache",
                   cwd=workdir)
        assert ref.returncode == 0, ref.stderr
        before = fault_stats(url)
        got = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--no-cache",
                   "--workers", "3", "--concurrency", "2", "--json", cwd=workdir, env=env)
        after = fault_stats(url)
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["done"] == summary["scored"] == N
    assert _answers(workdir / "run") == _answers(workdir / "ref")
    # no cache, so every question the workers ran reached the server: each exactly once
    assert after["answered"] - before["answered"] == N
    assert all(after["answers_per_key"][k] == 2 for k in before["answers_per_key"])
    with _db(workdir / "run") as conn:
        workers = conn.execute("SELECT worker, done, taken_over FROM workers").fetchall()
        states = dict(conn.execute("SELECT state, COUNT(*) FROM claims GROUP BY state"))
    assert sorted(w for w, _, _ in workers) == ["w0", "w1", "w2"]
    assert sum(d for _, d, _ in workers) == N and all(t == 0 for _, _, t in workers)
    assert sum(1 for _, d, _ in workers if d > 0) >= 2  # the work was shared
    assert states == {"done": N}


def test_a_killed_workers_questions_are_taken_over(workdir: Path) -> None:
    env = {"TTS_GRAPH_EVAL_LEASE_S": "1.5"}
    with serve_fault_server(FaultConfig(latency_ms=150)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl",
             "--out", "run", "--workers", "2", "--concurrency", "2", "--json"],
            cwd=workdir, env={**os.environ, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if not (workdir / "run" / "results.sqlite").exists():
                continue
            try:
                with _db(workdir / "run") as conn:
                    rows = conn.execute("SELECT worker, pid, done FROM workers").fetchall()
                    held = conn.execute("SELECT COUNT(*) FROM claims WHERE state = 'claimed' "
                                        "AND worker = 'w0'").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # the tables are not there yet
            if len(rows) == 2 and all(d >= 3 for _, _, d in rows) and held:
                victim = next(pid for w, pid, _ in rows if w == "w0")
        assert victim is not None, "the workers did not get going"
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=200)
        ref = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "ref", cwd=workdir)
    assert ref.returncode == 0, ref.stderr
    assert proc.returncode == 0, err
    assert "worker w0" in err and "signal 9" in err
    assert json.loads(out)["scored"] == N
    rows = _answers(workdir / "run")
    assert [r[0] for r in rows] == [f"q{i}" for i in range(N)]  # each question once
    assert rows == _answers(workdir / "ref")
    with _db(workdir / "run") as conn:
        taken = conn.execute("SELECT taken_over FROM workers WHERE worker = 'w1'").fetchone()
    assert taken[0] >= 1


def test_infra_errors_are_not_claimed_again_and_resume_runs_them(workdir: Path) -> None:
    # every request fails once: with no retries each question is an infrastructure error
    with serve_fault_server(FaultConfig(faults={"server_error": 1.0},
                                        max_faults_per_request=1)) as url:
        (workdir / "g.yaml").write_text(_graph(url, retries=0))
        first = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
                     "--json", cwd=workdir)
        mid = fault_stats(url)
        again = _cli("eval", "--resume", "run", "--workers", "2", "--json", cwd=workdir)
    assert first.returncode == 1
    assert json.loads(first.stdout)["infra_errors"] == N
    assert mid["requests"] == N  # not claimed again within the run
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["scored"] == N and summary["infra_errors"] == 0
    assert [s for _, _, s in _answers(workdir / "run")] == ["ok"] * N


def _plan(backend: str) -> Any:
    """What ``start_method`` reads of a run's plan: its graph."""
    from tts_graph import loads_graph
    from tts_graph.backends.registry import backend_names
    from tts_graph.compile import compile_graph

    model = {"openai": 'backend: openai, model: fault, api_base: "http://127.0.0.1:9/v1"',
             "local": "backend: local, model: m, options: {path: m.gguf}"}[backend]
    return SimpleNamespace(graph=compile_graph(loads_graph(f"""
version: 1
name: g
models:
  m: {{{model}}}
nodes:
  solve: {{role: solver, model: m}}
output: solve
"""), backends=backend_names()))


@pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")
def test_workers_of_a_server_client_are_forked_in_process_models_spawned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph.evaluate.workers import start_method

    monkeypatch.delenv("TTS_GRAPH_EVAL_START", raising=False)
    # threads other tests of this process left running (servers, pools) are not this test's:
    # the parent is seen with only its main thread, then with a second one below
    threads = 1
    monkeypatch.setattr("tts_graph.evaluate.workers.threading.active_count", lambda: threads)
    client = _plan("openai")
    assert start_method(client) == "fork"
    assert start_method(_plan("local")) == "spawn"  # a model in the process
    # the URL is on the parent's command line, which a forked worker would show as its own
    assert start_method(client, "postgresql://u:pw@db/run") == "spawn"
    monkeypatch.setenv("TTS_GRAPH_EVAL_START", "spawn")
    assert start_method(client) == "spawn"
    monkeypatch.delenv("TTS_GRAPH_EVAL_START")
    threads = 2  # a fork copies only the forking thread: with another one running, spawn
    assert start_method(client) == "spawn"
    monkeypatch.undo()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # and as counted for real
        assert threading.active_count() > 1 and start_method(client) == "spawn"
    finally:
        stop.set()
        other.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_forked_workers_error_line_and_exit_status_reach_the_parent(tmp_path: Path) -> None:
    import tempfile

    from tts_graph.evaluate.workers import _fork_worker

    with tempfile.TemporaryFile() as errlog:
        proc = _fork_worker(errlog, tmp_path / "nothing", "w7", 2, cache=None,
                            use_cache=False, trace=None)
        assert proc.wait(60) == 2
        errlog.seek(0)
        lines = errlog.read().decode().strip().splitlines()
    assert lines[-1].startswith("worker w7: --resume ") and "no run there" in lines[-1]


def test_the_math_scorers_warm_up_loads_math_verify_before_any_question() -> None:
    # in a fresh interpreter: what the parent loads before forking its workers
    code = ("import sys\n"
            "from tts_graph.evaluate.scorers import get_scorer\n"
            "scorer = get_scorer('math')\n"
            "assert 'sympy' not in sys.modules\n"
            "scorer.warm_up()\n"
            "assert 'math_verify' in sys.modules and 'sympy' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_progress_bar_with_workers_shows_the_runs_figures(workdir: Path) -> None:
    """With workers the bar showed each worker's count only; it now shows what one process
    shows (accuracy, cost, tokens, read from the results the workers wrote), then the
    workers' counts. Run as in a terminal (TTY_COMPATIBLE: rich draws the bar)."""
    import re

    env = {"TTY_COMPATIBLE": "1", "COLUMNS": "400"}
    with serve_fault_server(FaultConfig(latency_ms=5)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        got = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--no-cache",
                   "--workers", "2", "--concurrency", "4", cwd=workdir, env=env)
    assert got.returncode == 0, got.stderr
    with _db(workdir / "run") as conn:
        right, tokens = conn.execute("SELECT SUM(correct), SUM(prompt_tokens + "
                                     "completion_tokens) FROM results").fetchone()
    # the last drawing of the bar: every question, the run's accuracy and tokens, each worker
    last = [line for line in got.stderr.splitlines() if f"{N}/{N}" in line][-1]
    assert f"acc {right / N:.1%}  $0.0000  {tokens} tok" in last, last
    assert re.search(r"  w0 \d+", last) and re.search(r"  w1 \d+", last), last


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_the_trace_of_an_eval_with_workers_is_one_run(workdir: Path, start: str) -> None:
    """Each worker traced under a run id of its own: the trace of one eval summarised as
    N runs. The workers now share the eval's."""
    from tts_graph.tracing import read_trace, summarize_trace

    # calls slow enough (60 × 100 ms two at a time: 3 s for one worker alone) that both
    # workers take questions, however far apart they start (a spawned one imports first)
    with serve_fault_server(FaultConfig(latency_ms=100)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        got = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--no-cache",
                   "--workers", "2", "--concurrency", "2", "--trace", "t.jsonl", cwd=workdir,
                   env={"TTS_GRAPH_EVAL_START": start})
    assert got.returncode == 0, got.stderr
    s = summarize_trace(workdir / "t.jsonl")
    assert (s["runs"], s["queries"], s["query_status"]) == (1, N, {"ok": N})
    assert s["total"]["calls"] == N  # a line per call: the solver's one call a question
    with _db(workdir / "run") as conn:
        workers = {w for (w,) in conn.execute("SELECT worker FROM claims")}
    assert len(workers) == 2 and len({ln["run"] for ln in read_trace(workdir / "t.jsonl")}) == 1
