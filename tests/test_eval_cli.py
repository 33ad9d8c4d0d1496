"""tts-graph eval end to end: a real HTTP server (the loopback fault server, fault-free) behind
the litellm backend, a crash by SIGKILL in the middle of a run, and --resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from taskfiles import write_sums

from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server

N = 40


def _graph(url: str) -> str:
    return f"""
version: 1
name: solve-judge
models:
  m: {{backend: litellm, model: openai/fault, api_base: "{url}/v1", timeout_s: 10,
       price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
defaults: {{max_tokens: 32}}
nodes:
  solve: {{role: solver, model: m, samples: 2}}
  judge: {{role: judge, model: m, inputs: [solve]}}
output: judge
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _rows(run: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(run / "results.sqlite") as conn:
        return list(conn.execute("SELECT item_id, answer FROM results ORDER BY idx"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_sums(tmp_path / "q.jsonl", N)
    return tmp_path


def test_sigkill_then_resume_loses_and_duplicates_nothing(workdir: Path) -> None:
    with serve_fault_server(FaultConfig(latency_ms=60)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        # the reference: one uninterrupted run
        ref = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "ref", "--json",
                   cwd=workdir)
        assert ref.returncode == 0, ref.stderr
        ref_answers = _rows(workdir / "ref")
        assert len(ref_answers) == N
        requests_for_clean_run = fault_stats(url)["answered"]
        # one request for the 2 solver samples (the server honours n) + one judge call each
        assert requests_for_clean_run == N * 2

        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        before = fault_stats(url)["answered"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl",
             "--out", "run", "--concurrency", "4"], cwd=workdir, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill when >= 10 questions are done and some question in flight has its solver
        # samples cached but not its judge call (each done question holds 3 samples)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                done = len(_rows(workdir / "run"))
                with sqlite3.connect(workdir / "run" / "cache.sqlite") as conn:
                    cached = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
                if done >= 10 and cached > done * 3:
                    break
            except sqlite3.OperationalError:
                pass  # not created yet
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_at_kill = len(_rows(workdir / "run"))
        assert 10 <= done_at_kill < N, "the kill should land mid-run"

        resumed = _cli("eval", "--resume", "run", "--json", cwd=workdir)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        rows = _rows(workdir / "run")
        ids = [r[0] for r in rows]
        assert sorted(ids) == sorted(f"q{i}" for i in range(N))  # none lost
        assert len(ids) == len(set(ids))  # none twice
        assert rows == ref_answers  # same answers as the uninterrupted run
        assert summary["done"] == N and summary["planned"] == N
        # calls answered before the crash were replayed from the cache, not sent again:
        # only calls in flight at the kill (at most one per running question) may repeat
        sent = fault_stats(url)["answered"] - before
        assert requests_for_clean_run <= sent <= requests_for_clean_run + 4
        assert summary["cached_calls"] > 0
        assert summary["billed_usd"] < summary["cost_usd"]


def test_eval_bad_task_file_is_one_line(workdir: Path) -> None:
    (workdir / "bad.jsonl").write_text('{"question": "a", "answer": "1"}\n{nope\n')
    (workdir / "g.yaml").write_text(_graph("http://127.0.0.1:9"))
    proc = _cli("eval", "g.yaml", "--task", "bad.jsonl", cwd=workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("bad.jsonl:2:")
    assert "Traceback" not in proc.stderr


def test_eval_refuses_to_mix_runs(workdir: Path) -> None:
    with serve_fault_server(FaultConfig()) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        first = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "3", "--out", "r",
                     cwd=workdir)
        assert first.returncode == 0, first.stderr
        again = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "3", "--out", "r",
                     cwd=workdir)
        assert again.returncode == 2
        assert "already holds a run" in again.stderr


def test_infra_errors_are_counted_apart_and_exit_1(workdir: Path) -> None:
    with serve_fault_server(FaultConfig(faults={"server_error": 1.0})) as url:
        (workdir / "g.yaml").write_text(_graph(url).replace("timeout_s: 10",
                                                             "timeout_s: 10, max_retries: 1"))
        proc = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "3", "--json",
                    cwd=workdir)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["infra_errors"] == 3 and summary["scored"] == 0
    assert "infrastructure errors" in proc.stderr


def _code_eval(workdir: Path, url: str, *flags: str, mode: str | None) -> (
        subprocess.CompletedProcess[str]):
    (workdir / "g.yaml").write_text(_graph(url))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("TTS_GRAPH_SANDBOX_MODE", None)
    if mode is not None:
        env["TTS_GRAPH_SANDBOX_MODE"] = mode
    return subprocess.run([sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task",
                           "humaneval", "--limit", "1", "--json", "--out", "run", *flags],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_code_scorer_refuses_guard_mode_without_the_flag(workdir: Path) -> None:
    with serve_fault_server(FaultConfig()) as url:
        proc = _code_eval(workdir, url, mode="guard")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "guard mode" in lines[0], proc.stderr
        assert "--accept-weak-sandbox" in lines[0]
        assert fault_stats(url)["requests"] == 0  # refused before any question ran

        proc = _code_eval(workdir, url, "--accept-weak-sandbox", mode="guard")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["sandbox"] == "guard"


def test_code_scorer_summary_names_the_namespaces_mode(workdir: Path) -> None:
    from tts_graph.sandbox import sandbox_mode

    if sandbox_mode() != "namespaces":
        pytest.skip("namespaces mode needs root and namespaces")
    with serve_fault_server(FaultConfig()) as url:
        proc = _code_eval(workdir, url, mode=None)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["sandbox"] == "namespaces"


def test_eval_summary_says_how_the_budget_was_used(workdir: Path) -> None:
    """A budgeted graph against a real loopback server: the summary says how much of the
    budget was spent, whether plans fitted and the output was reached, and why steps drew
    fewer samples than they wanted, with no overrun."""
    with serve_fault_server(FaultConfig()) as url:
        graph = _graph(url).replace("samples: 2", "samples: 16") \
            + "budget: {max_tokens_per_query: 400}\n"
        (workdir / "g.yaml").write_text(graph)
        r = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "6", "--concurrency", "3",
                 "--out", "run", "--no-cache", cwd=workdir)
    assert r.returncode in (0, 1), r.stderr
    out = r.stdout
    assert "0 overruns" in out and "spent on average" in out, out
    assert "plan fits" in out and "output reached 6/6" in out, out
    assert "step solve:" in out and "stopped short" in out, out
    with sqlite3.connect(workdir / "run" / "results.sqlite") as conn:
        reports = [json.loads(b) for (b,) in conn.execute("SELECT budget FROM results")]
    assert len(reports) == 6
    assert all(b["spent"]["tokens"] <= 400 and b["output_reached"] for b in reports)


def test_resume_from_another_directory_finds_the_task_file(workdir: Path) -> None:
    """The run recorded the task file as given (``q.jsonl``, relative to where the eval was
    started): ``--resume`` from any other directory could not find it."""
    import socket

    other = workdir / "elsewhere"
    other.mkdir()
    with socket.socket() as s:  # one port for both servers: the graph names it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = FaultConfig(faults={"server_error": 1.0})
    with serve_fault_server(down, port=port) as url:
        (workdir / "g.yaml").write_text(_graph(url).replace("timeout_s: 10",
                                                            "timeout_s: 10, max_retries: 0"))
        first = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--no-cache",
                     "--limit", "5", cwd=workdir)
    assert first.returncode == 1, first.stderr  # every question an infrastructure error
    with serve_fault_server(FaultConfig(), port=port):
        again = _cli("eval", "--resume", str(workdir / "run"), cwd=other)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(workdir / "run" / "results.sqlite") as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM results")]
    assert statuses == ["ok"] * 5  # the infrastructure errors were run again, and answered
