"""``tts-graph eval --workers N --storage postgresql://...``: eval workers of several
"machines" (parents with run directories of their own) share one run's claims on a real
PostgreSQL server, against the loopback fault server (backend: openai).

.ci/run starts a throwaway server (Debian's ``postgresql``, a cluster in a temp directory on
127.0.0.1) and exports ``TTS_GRAPH_TEST_POSTGRES_URL``; without it the tests that need one
skip. The URL checks and the redaction need no server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
from taskfiles import write_sums
from test_eval_workers import _graph as workers_graph

from tts_graph.errors import TTSGraphError
from tts_graph.evaluate.pgboard import PgBoard, check_url, redact, run_key, scrub
from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server

URL = os.environ.get("TTS_GRAPH_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(
    not URL, reason="TTS_GRAPH_TEST_POSTGRES_URL is not set: .ci/run starts a throwaway "
    "PostgreSQL server (Debian's postgresql, installed with apt-get as root) and sets it")

N = 40


def _graph(url: str, retries: int = 3) -> str:
    # a fresh name per test: the database may hold runs of earlier tests with the same graph
    text = workers_graph(url, retries)
    assert "name: solve-vote\n" in text
    return text.replace("name: solve-vote\n", f"name: pg-{uuid.uuid4().hex[:8]}\n")


def _eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "tts_graph", "eval", *args]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300, check=False)


def _answers(run: Path) -> list[tuple[str, str | None, str]]:
    with sqlite3.connect(run / "results.sqlite", timeout=30) as conn:
        return list(conn.execute("SELECT item_id, answer, status FROM results ORDER BY idx"))


def _password() -> str:
    assert URL is not None
    pw = urllib.parse.urlsplit(URL).password
    assert pw, "the test database URL has no password to keep secret"
    return urllib.parse.unquote(pw)


def _no_password_in(*paths: Path, texts: tuple[str, ...] = ()) -> None:
    pw = _password().encode()
    for text in texts:
        assert pw.decode() not in text
    for root in paths:
        for f in root.rglob("*"):
            if f.is_file():
                assert pw not in f.read_bytes(), f"the password was written to {f.name}"


def _pg() -> Any:
    import psycopg2

    return psycopg2.connect(URL)


def _workers(run: Path) -> list[tuple[str, int, int, int]]:
    """(worker, pid, done, taken_over) of the run ``run``'s PostgreSQL record."""
    if not (run / "results.sqlite").exists():
        raise sqlite3.OperationalError("not yet")  # connecting would create an empty file
    with sqlite3.connect(run / "results.sqlite", timeout=30) as conn:
        identity = json.loads(conn.execute(
            "SELECT value FROM run WHERE key = 'identity'").fetchone()[0])
    with _pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT worker, pid, done, taken_over FROM tts_eval_workers "
                    "WHERE run = %s ORDER BY worker", (run_key(identity),))
        return list(cur.fetchall())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_sums(tmp_path / "q.jsonl", N)
    return tmp_path


# --------------------------------------------------------------------------- no server


def test_redaction_hides_the_password_raw_and_encoded() -> None:
    url = "postgresql://tts:s%40cr%2Ft@db.example:5432/runs"
    assert redact(url) == "postgresql://tts:***@db.example:5432/runs"
    assert redact("postgresql://db.example/runs") == "postgresql://db.example/runs"
    msg = 'password "s@cr/t" or s%40cr%2Ft rejected'
    assert "s@cr/t" not in scrub(msg, url) and "s%40cr%2Ft" not in scrub(msg, url)


def test_the_run_key_is_the_identity_whatever_its_key_order() -> None:
    a = {"graph_sha": "x", "task": "t", "seed": 0}
    assert run_key(a) == run_key(dict(reversed(list(a.items()))))
    assert run_key(a) != run_key({**a, "seed": 1})


def test_a_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(TTSGraphError, match="not a postgresql:// URL"):
        check_url("sqlite:///runs.db")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.mark.parametrize("storage", [
    "mysql://u:hunter2pw@localhost/db",
    f"postgresql://u:hunter2pw@127.0.0.1:{_closed_port()}/db",
])
def test_a_bad_or_unreachable_database_is_one_line_exit_2(workdir: Path, storage: str) -> None:
    (workdir / "g.yaml").write_text(_graph("http://127.0.0.1:9"))
    got = _run(_eval("g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
                     "--storage", storage), workdir)
    assert got.returncode == 2, got.stderr
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--storage ")
    assert "hunter2pw" not in got.stderr + got.stdout
    assert not (workdir / "run").exists()  # refused before the run was recorded


# ------------------------------------------------------------------------ with a server


@needs_pg
def test_a_wrong_password_is_one_line_exit_2_without_the_password(workdir: Path) -> None:
    assert URL is not None
    wrong = URL.replace(f":{urllib.parse.urlsplit(URL).password}@", ":not-the-pw-123@")
    (workdir / "g.yaml").write_text(_graph("http://127.0.0.1:9"))
    got = _run(_eval("g.yaml", "--task", "q.jsonl", "--out", "run", "--storage", wrong), workdir)
    assert got.returncode == 2, got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
    assert "password authentication failed" in got.stderr
    assert "not-the-pw-123" not in got.stderr


@needs_pg
def test_two_machines_share_one_run_each_question_once(workdir: Path) -> None:
    assert URL is not None
    with serve_fault_server(FaultConfig(latency_ms=100)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        before = fault_stats(url)
        procs = [subprocess.Popen(
            _eval("g.yaml", "--task", "q.jsonl", "--out", out, "--no-cache", "--workers", "2",
                  "--concurrency", "2", "--storage", URL, "--json"),
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for out in ("a", "b")]
        outs = [p.communicate(timeout=300) for p in procs]
        after = fault_stats(url)
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert " ended: " not in err, err  # no worker died (its claims would run again)
    # no cache: every question either machine ran reached the server, each exactly once
    assert after["answered"] - before["answered"] == N
    # both run directories hold every result (copied from the database), the same ones
    a, b = _answers(workdir / "a"), _answers(workdir / "b")
    assert [r[0] for r in a] == [f"q{i}" for i in range(N)] and a == b
    assert all(s == "ok" for _, _, s in a)
    sa, sb = (json.loads(out) for out, _ in outs)
    assert sa["scored"] == sb["scored"] == N and sa["accuracy"] == sb["accuracy"]
    workers = _workers(workdir / "a")
    assert len(workers) == 4 and sum(d for _, _, d, _ in workers) == N
    parents = {w.rsplit(":", 1)[0] for w, _, d, _ in workers if d > 0}
    assert len(parents) == 2  # both machines did part of the work
    _no_password_in(workdir, texts=tuple(t for pair in outs for t in pair))


@needs_pg
def test_a_killed_workers_claims_are_taken_over(workdir: Path) -> None:
    assert URL is not None
    env = {"TTS_GRAPH_EVAL_LEASE_S": "1.5"}
    with serve_fault_server(FaultConfig(latency_ms=150)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = subprocess.Popen(
            _eval("g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
                  "--concurrency", "2", "--storage", URL, "--json"),
            # without the test's own variable: the workers must not get the URL any other way
            cwd=workdir, env={**{k: v for k, v in os.environ.items()
                                 if k != "TTS_GRAPH_TEST_POSTGRES_URL"}, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                rows = _workers(workdir / "run")
            except (sqlite3.OperationalError, TypeError):
                continue  # the run is not recorded yet
            if len(rows) == 2 and all(d >= 3 for _, _, d, _ in rows):
                victim = rows[0]
        assert victim is not None, "the workers did not get going"
        proc_dir = Path(f"/proc/{victim[1]}")
        if proc_dir.exists():  # Linux: the URL is in neither its command line nor environment
            for name in ("cmdline", "environ"):
                assert _password().encode() not in (proc_dir / name).read_bytes(), name
        os.kill(victim[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=200)
    assert proc.returncode == 0, err
    assert f"worker {victim[0]}" in err and "signal 9" in err
    assert json.loads(out)["scored"] == N
    rows = _answers(workdir / "run")
    assert [r[0] for r in rows] == [f"q{i}" for i in range(N)]
    assert all(s == "ok" for _, _, s in rows)
    survivor = [w for w in _workers(workdir / "run") if w[0] != victim[0]]
    assert survivor[0][3] >= 1  # it took over the dead worker's claims


@needs_pg
def test_resume_reruns_infra_errors_and_a_late_machine_reuses_results(workdir: Path) -> None:
    assert URL is not None
    # every request fails once: with no retries each question is an infrastructure error
    with serve_fault_server(FaultConfig(faults={"server_error": 1.0},
                                        max_faults_per_request=1)) as url:
        (workdir / "g.yaml").write_text(_graph(url, retries=0))
        first = _run(_eval("g.yaml", "--task", "q.jsonl", "--out", "run", "--workers", "2",
                           "--storage", URL, "--json"), workdir)
        mid = fault_stats(url)
        again = _run(_eval("--resume", "run", "--workers", "2", "--storage", URL, "--json"),
                     workdir)
        end = fault_stats(url)
        late = _run(_eval("g.yaml", "--task", "q.jsonl", "--out", "late", "--workers", "2",
                          "--storage", URL, "--json"), workdir)
        after_late = fault_stats(url)
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["infra_errors"] == N
    assert mid["requests"] == N  # not claimed again within the run
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["scored"] == N
    assert [s for _, _, s in _answers(workdir / "run")] == ["ok"] * N
    # a machine joining the finished run sends nothing and gets every result
    assert late.returncode == 0, late.stderr
    assert after_late["requests"] == end["requests"]
    assert _answers(workdir / "late") == _answers(workdir / "run")
    _no_password_in(workdir, texts=(first.stderr, again.stderr, late.stderr, late.stdout))


@needs_pg
def test_a_machine_joining_beside_writes_takes_no_lock_on_the_tables() -> None:
    """Creating the tables IF NOT EXISTS locks them (CREATE INDEX takes SHARE before it finds
    the index): a worker or machine joining while others write deadlocked with them, and the
    transaction PostgreSQL aborted was a worker's (it died; its claims ran again)."""
    import threading

    PgBoard(URL or "", "").close()  # the tables exist
    writer = _pg()
    try:
        with writer.cursor() as cur:  # an open transaction writing both tables
            cur.execute("INSERT INTO tts_eval_results (run, item_id, seq, status, row) VALUES "
                        "('lock-test', 'q', 0, 'ok', '{}') ON CONFLICT DO NOTHING")
            cur.execute("UPDATE tts_eval_claims SET state = 'done' WHERE run = 'lock-test'")
        joined: list[BaseException | None] = []

        def join() -> None:
            try:
                PgBoard(URL or "", "lock-test").close()
                joined.append(None)
            except BaseException as exc:  # reported below
                joined.append(exc)

        t = threading.Thread(target=join, daemon=True)
        t.start()
        t.join(10)
        assert joined == [None], "joining waited for the writer's transaction"
    finally:
        writer.rollback()
        writer.close()


@needs_pg
def test_a_transaction_aborted_by_a_deadlock_runs_again() -> None:
    import threading

    board = PgBoard(URL or "", "")
    other = _pg()
    table = f"tts_test_dl_{uuid.uuid4().hex[:8]}"
    with other, other.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (k INTEGER PRIMARY KEY)")
        cur.execute(f"INSERT INTO {table} VALUES (1), (2)")
    locked_1, tries = threading.Event(), []

    def rival() -> None:  # holds row 1, then wants row 2 (held by the board's transaction)
        with other, other.cursor() as cur:
            cur.execute(f"SELECT k FROM {table} WHERE k = 1 FOR UPDATE")
            locked_1.set()
            time.sleep(0.5)  # the board's transaction waits first: it is the one aborted
            cur.execute(f"SELECT k FROM {table} WHERE k = 2 FOR UPDATE")

    def go(cur: Any) -> int:
        tries.append(1)
        cur.execute(f"SELECT k FROM {table} WHERE k = 2 FOR UPDATE")
        if len(tries) == 1:
            t.start()
            assert locked_1.wait(10)
        cur.execute(f"SELECT k FROM {table} WHERE k = 1 FOR UPDATE")
        return len(tries)

    t = threading.Thread(target=rival, daemon=True)
    try:
        assert board._tx(go) == 2  # aborted once (deadlock detected), then done
        t.join(10)
        assert not t.is_alive()
    finally:
        with other, other.cursor() as cur:
            cur.execute(f"DROP TABLE {table}")
        other.close()
        board.close()


@needs_pg
def test_a_statement_error_is_the_servers_message_not_its_hint() -> None:
    board = PgBoard(URL or "", "")
    try:
        with pytest.raises(TTSGraphError) as err:
            board._tx(lambda cur: cur.execute("SELECT 1 / 0"))
    finally:
        board.close()
    assert str(err.value).endswith(": division by zero (22012)")
    assert _password() not in str(err.value)


def _terminate(board: PgBoard) -> None:
    """End the board's server process from another connection, as a restart would."""
    pid = board.conn.get_backend_pid()
    with _pg() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.close()


@needs_pg
def test_a_lost_connection_is_connected_again() -> None:
    """A server restart, a failover or a proxy closing an idle connection ended every
    worker of the run (their claims then waited out their leases)."""
    board = PgBoard(URL or "", f"reconnect-{uuid.uuid4().hex[:8]}")
    try:
        first = board.conn.get_backend_pid()
        _terminate(board)
        assert board.progress() == {"done": 0, "left": 0, "workers": {}}
        assert not board.conn.closed and board.conn.get_backend_pid() != first
    finally:
        board.close()


@needs_pg
def test_a_server_that_stays_away_is_one_line_after_the_reconnect_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph.evaluate import pgboard

    monkeypatch.setattr(pgboard, "RECONNECT_S", 0.5)
    board = PgBoard(URL or "", "")
    board.url = f"postgresql://tts:{_password()}@127.0.0.1:{_closed_port()}/db"
    _terminate(board)
    with pytest.raises(TTSGraphError) as err:
        board.progress()
    text = str(err.value)
    assert text.startswith("--storage postgresql://tts:***@127.0.0.1:") and "\n" not in text
    assert _password() not in text


@needs_pg
def test_a_run_goes_on_when_the_server_drops_every_connection(workdir: Path) -> None:
    assert URL is not None
    with serve_fault_server(FaultConfig(latency_ms=150)) as url:
        (workdir / "g.yaml").write_text(_graph(url))
        proc = subprocess.Popen(
            _eval("g.yaml", "--task", "q.jsonl", "--out", "run", "--no-cache", "--workers", "2",
                  "--concurrency", "2", "--storage", URL, "--json"),
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        dropped = 0
        deadline = time.monotonic() + 120
        while not dropped and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                rows = _workers(workdir / "run")
            except (sqlite3.OperationalError, TypeError):
                continue
            if len(rows) == 2 and all(d >= 2 for _, _, d, _ in rows):
                with _pg() as conn, conn.cursor() as cur:  # as a restart of the server would
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                "application_name = 'tts-graph-eval'")
                    dropped = len(cur.fetchall())
                conn.close()
        out, err = proc.communicate(timeout=200)
        stats = fault_stats(url)
    assert dropped >= 3, "the parent and both workers each hold a connection"
    assert proc.returncode == 0, err
    assert " ended: " not in err, err  # no worker died
    assert json.loads(out)["scored"] == N
    assert stats["answered"] == N  # and no question ran twice
    assert [s for _, _, s in _answers(workdir / "run")] == ["ok"] * N
