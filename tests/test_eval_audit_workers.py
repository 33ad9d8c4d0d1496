"""``tts-graph eval --workers N`` as a demanding user runs it: the eval killed or stopped
mid-run, then ``--resume``; real CLI subprocesses against the loopback fault server."""

from __future__ import annotations

import contextlib
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
from test_eval_workers import _graph

from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server

N = 300


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300, check=False)


def _start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tts_graph", *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _running_workers(run: Path, n: int, timeout: float = 120) -> list[int]:
    """The pids of the run's ``n`` workers once each has finished a few questions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with sqlite3.connect(run / "results.sqlite", timeout=30) as conn:
                rows = conn.execute("SELECT pid, done FROM workers").fetchall()
        except sqlite3.OperationalError:
            continue  # not made yet
        if len(rows) == n and all(d >= 2 for _, d in rows):
            return [pid for pid, _ in rows]
    raise AssertionError("the workers did not get going")


def _alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pids: list[int], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _rows(run: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(run / "results.sqlite", timeout=30) as conn:
        return list(conn.execute("SELECT item_id, status FROM results ORDER BY idx"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_sums(tmp_path / "q.jsonl", N)
    return tmp_path


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_stop_when_the_eval_is_killed_and_resume_finishes_once(
        workdir: Path, start: str) -> None:
    env = {"TTS_GRAPH_EVAL_START": start}
    with serve_fault_server(FaultConfig(latency_ms=200)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = _start("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "3",
                      "--concurrency", "1", cwd=workdir, env=env)
        try:
            pids = _running_workers(workdir / "run", 3)
        finally:
            proc.kill()
            proc.communicate(timeout=60)
        # left running, they would go on beside the --resume below (and its workers of the
        # same names), claiming and answering its questions
        assert _gone(pids), "the workers of a killed eval are still running"
        done = len(_rows(workdir / "run"))
        assert 0 < done < N
        again = _cli("eval", "--resume", "run", "--workers", "3", "--json", cwd=workdir)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["done"] == summary["scored"] == N
    assert _rows(workdir / "run") == [(f"q{i}", "ok") for i in range(N)]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_stops_the_eval_and_its_workers_in_one_line(workdir: Path) -> None:
    with serve_fault_server(FaultConfig(latency_ms=200)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = _start("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "3",
                      "--concurrency", "1", cwd=workdir)
        try:
            pids = _running_workers(workdir / "run", 3)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert _gone(pids)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    done = len(_rows(workdir / "run"))
    assert lines == [f"interrupted: {done} of {N} questions done and stored in run; continue "
                     "with: tts-graph eval --resume run"]
    assert out == ""


def _code_task(path: Path, n: int = 4) -> None:
    path.write_text("".join(json.dumps({
        "task_id": f"H/{i}", "prompt": f'def f{i}(x):\n    """x plus {i}"""\n',
        "test": f"def check(c):\n    assert c(1) == {1 + i}\n", "entry_point": f"f{i}"})
        + "\n" for i in range(n)))


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_get_the_evals_accept_weak_sandbox(workdir: Path, start: str) -> None:
    # the guard mode, forced: the user accepted it for the eval, so for its workers too
    env = {"TTS_GRAPH_EVAL_START": start, "TTS_GRAPH_SANDBOX_MODE": "guard"}
    _code_task(workdir / "he.jsonl")
    with serve_fault_server(FaultConfig()) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        got = _cli("eval", "g.yaml", "--task", "he.jsonl", "--out", "run", "--workers", "2",
                   "--accept-weak-sandbox", "--json", cwd=workdir, env=env)
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout)
    assert summary["scored"] == 4 and summary["sandbox"] == "guard"


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    """A preexec_fn: files the eval writes stop growing at ``limit`` bytes, as on a full
    disk (Python ignores SIGXFSZ: the write fails with EFBIG)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_results_store_that_cannot_grow_is_one_line_and_resume_finishes(
        workdir: Path, workers: str) -> None:
    with serve_fault_server(FaultConfig()) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        full = subprocess.run(
            [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl", "--out",
             "run", "--no-cache", "--workers", workers, "--json"], cwd=workdir,
            capture_output=True, text=True, timeout=300, check=False,
            preexec_fn=_file_size_limit(400_000))
        assert full.returncode == 1, full.stderr
        lines = full.stderr.strip().splitlines()
        why = "run run: results.sqlite: write failed ("
        if workers == "1":
            assert len(lines) == 1 and lines[0].startswith(why), full.stderr
        else:  # the workers that ended alike, in one line; then what is left to run
            assert len(lines) == 2, full.stderr
            assert lines[0].startswith("workers w0 (pid ") and f"ended: {why}" in lines[0]
            assert lines[1].endswith("questions were not run (workers ended early); "
                                     "--resume runs them")
        assert len(_rows(workdir / "run")) < N
        again = _cli("eval", "--resume", "run", "--workers", workers, "--json", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["scored"] == N
    assert _rows(workdir / "run") == [(f"q{i}", "ok") for i in range(N)]


def _edit_task(workdir: Path) -> None:
    """The task file rewritten with other questions under the same ids (same name, size)."""
    (workdir / "q.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is {i} * 7?", "answer": str(7 * i)})
        + "\n" for i in range(N)))


def _drop_results(run: Path, keep: int) -> None:
    with sqlite3.connect(run / "results.sqlite") as conn:
        conn.execute("DELETE FROM results WHERE idx >= ?", (keep,))


@pytest.mark.parametrize("workers", ["1", "3"])
def test_resume_refuses_a_task_file_edited_since_the_run(workdir: Path, workers: str) -> None:
    with serve_fault_server(FaultConfig()) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        first = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "20", "--out", "run",
                     cwd=workdir)
        assert first.returncode == 0, first.stderr
        _drop_results(workdir / "run", 10)  # as if it had crashed half-way
        before = _questions(workdir / "run")
        _edit_task(workdir)
        again = _cli("eval", "--resume", "run", "--workers", workers, cwd=workdir)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "run run: task q: its questions or answers differ from those the run was started "
        "with (the task file changed); refusing to mix results"]
    assert _questions(workdir / "run") == before  # nothing mixed in


def _questions(run: Path) -> list[str]:
    with sqlite3.connect(run / "results.sqlite") as conn:
        return [q for (q,) in conn.execute("SELECT question FROM results ORDER BY idx")]


def test_a_run_recorded_before_the_questions_digest_still_resumes(workdir: Path) -> None:
    with serve_fault_server(FaultConfig()) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        first = _cli("eval", "g.yaml", "--task", "q.jsonl", "--limit", "20", "--out", "run",
                     cwd=workdir)
        assert first.returncode == 0, first.stderr
        _drop_results(workdir / "run", 10)
        with sqlite3.connect(workdir / "run" / "results.sqlite") as conn:
            (text,) = conn.execute("SELECT value FROM run WHERE key = 'identity'").fetchone()
            old = json.loads(text)
            del old["items_sha"]
            conn.execute("UPDATE run SET value = ? WHERE key = 'identity'",
                         (json.dumps(old, sort_keys=True),))
        again = _cli("eval", "--resume", "run", "--workers", "2", "--json", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["scored"] == 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock is POSIX")
@pytest.mark.parametrize("second", [["--workers", "2"], []])
def test_a_second_eval_on_a_running_run_is_refused(workdir: Path, second: list[str]) -> None:
    # it would list the open questions again under the first one's workers: some answered
    # twice, the first eval's counts wrong
    with serve_fault_server(FaultConfig(latency_ms=200)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        first = _start("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
                       "--concurrency", "4", "--no-cache", "--json", cwd=workdir)
        try:
            _running_workers(workdir / "run", 2)
            again = _cli("eval", "--resume", "run", "--no-cache", *second, cwd=workdir)
            out, err = first.communicate(timeout=200)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        stats = fault_stats(url)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"run run: another eval is running it (pid {first.pid}); wait for it to end, or stop it"]
    assert first.returncode == 0, err
    assert json.loads(out)["scored"] == N
    assert stats["answered"] == N  # no cache: each question reached the server once


def test_a_password_given_as_a_url_parameter_is_redacted_too() -> None:
    from tts_graph.evaluate.pgboard import redact, scrub

    # libpq reads ?password= as well as user:password@
    url = "postgresql://tts@db.example/runs?sslmode=require&password=s%40cr3t+pw"
    assert redact(url) == "postgresql://tts@db.example/runs?sslmode=require&password=***"
    msg = "s%40cr3t+pw, s@cr3t pw, s@cr3t+pw rejected"
    assert scrub(msg, url) == "***, ***, *** rejected"
    both = "postgresql://tts:upw@db.example/runs?password=qpw"
    assert redact(both) == "postgresql://tts:***@db.example/runs?password=***"


def test_an_unreachable_database_with_a_password_parameter_keeps_it_secret(
        workdir: Path) -> None:
    import socket

    pytest.importorskip("psycopg2")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    (workdir / "g.yaml").write_text(_graph("http://127.0.0.1:9"))
    got = _cli("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
               "--storage", f"postgresql://u@127.0.0.1:{port}/db?password=hunter2pw",
               cwd=workdir)
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"--storage postgresql://u@127.0.0.1:{port}/db?password=***: ")
    assert "hunter2pw" not in got.stderr + got.stdout
    assert not (workdir / "run").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_hung_worker_does_not_keep_the_eval_from_ending(workdir: Path) -> None:
    # a worker frozen mid-run (SIGSTOP here; a deadlock in native code, a paused VM): its
    # claims are taken over, and once every question is done the eval stops it and ends
    with serve_fault_server(FaultConfig(latency_ms=50)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = _start("eval", "g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "3",
                      "--concurrency", "2", "--json", cwd=workdir,
                      env={"TTS_GRAPH_EVAL_LEASE_S": "1.5"})
        pids = _running_workers(workdir / "run", 3)
        os.kill(pids[0], signal.SIGSTOP)
        try:
            out, err = proc.communicate(timeout=90)
        finally:
            for pid in pids:  # never leave one stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        ") ended: still running when every question was done: stopped"), err
    assert json.loads(out)["scored"] == N
    assert _rows(workdir / "run") == [(f"q{i}", "ok") for i in range(N)]
    assert _gone(pids)
