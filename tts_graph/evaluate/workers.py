"""``tts-graph eval --workers N``: N processes share one run directory.

Why processes: one Python process spends its one core on client work (executor, HTTP, JSON,
scoring); a fast server waits on it. Each worker is a full evaluation process of its own
(executor, backends, scorer) on the run's results store and response cache, both SQLite in
WAL mode, which several processes may write.

How they start (``start_method``): on Linux, when every model is a server's client, the
workers are forked from the parent after its set-up (imports, task, graph, the scorer's
math-verify warmed up), so each starts in milliseconds and shares those pages; otherwise (an
in-process model, ``--storage``, another OS) each is a fresh ``python -m`` of this module.

The claim protocol, in the results store (``claims`` and ``workers`` tables):

- the parent lists every question not yet done as ``todo``, then starts the workers;
- a worker claims a few questions at a time in one write transaction (the oldest ``todo``, or
  a ``claimed`` one whose lease has run out), so each question is claimed by one worker;
- a worker renews the leases of its claims every ``lease / 3`` seconds; a killed worker's
  leases run out and its questions are claimed again by the others;
- results are written, and their claims marked ``done``, in one transaction every
  ``FLUSH_S`` seconds (a result not yet written is run again by whoever takes it over);
- a worker that finds nothing to claim waits while other workers hold claims (they may die)
  and stops when none do;
- a worker whose parent is gone (killed, or ended by a signal it could not handle) writes
  what it finished and stops: it is not left running beside a later ``--resume``.

Infrastructure errors are written unscored and not claimed again in this run; ``--resume``
lists them as ``todo`` again, as it always has. The lease is ``TTS_GRAPH_EVAL_LEASE_S``
seconds (default 15).

    python -m tts_graph.evaluate.workers RUN_DIR --worker w0 [--concurrency 8] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..collector import freeze_setup
from ..errors import TTSGraphError
from .pgboard import PgBoard, run_key, scrub
from .runner import score_result, to_row
from .store import ResultStore, Row

DEFAULT_LEASE_S = 15.0
#: questions a worker claims at a time, at most
MAX_BATCH = 32
#: finished results are committed together at this interval: one write transaction per
#: interval, not per question, because a transaction waiting for another process's lock
#: blocks the worker's event loop (a killed worker loses at most this much, run again)
FLUSH_S = 0.05


def lease_s() -> float:
    try:
        return max(0.5, float(os.environ.get("TTS_GRAPH_EVAL_LEASE_S", DEFAULT_LEASE_S)))
    except ValueError:
        return DEFAULT_LEASE_S


class ClaimBoard:
    """The claim tables of one results store (SQLite: one writer at a time, BEGIN IMMEDIATE
    so that a claim's read and write are one step)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.conn = store.conn
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("CREATE TABLE IF NOT EXISTS claims (item_id TEXT PRIMARY KEY, "
                          "idx INTEGER NOT NULL, state TEXT NOT NULL, worker TEXT, "
                          "expires REAL)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS claims_by_state ON claims (state, idx)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, "
                          "pid INTEGER, host TEXT, heartbeat REAL, done INTEGER NOT NULL, "
                          "taken_over INTEGER NOT NULL)")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; a database error (a full disk) is the store's one line."""
        try:
            with self.store.transaction():
                yield
        except sqlite3.DatabaseError as exc:
            raise self.store.write_failed(exc) from None

    def prepare(self, todo: list[tuple[int, str]]) -> None:
        """A new session: ``todo`` (idx, item id) are the questions to run."""
        with self._tx():
            self.conn.execute("DELETE FROM claims")
            self.conn.execute("DELETE FROM workers")
            self.conn.executemany("INSERT INTO claims (item_id, idx, state) VALUES (?, ?, "
                                  "'todo')", [(i, idx) for idx, i in todo])

    def register(self, worker: str) -> None:
        with self._tx():
            self.conn.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, 0, 0)",
                              (worker, os.getpid(), socket.gethostname(), time.time()))

    def claim(self, worker: str, k: int, lease: float) -> list[str]:
        """Up to ``k`` questions for ``worker``: unclaimed ones first, then expired claims."""
        now = time.time()
        with self._tx():
            rows = self.conn.execute(
                "SELECT item_id, state FROM claims WHERE state = 'todo' OR (state = "
                "'claimed' AND expires < ?) ORDER BY state DESC, idx LIMIT ?",
                (now, k)).fetchall()
            if rows:
                self.conn.executemany(
                    "UPDATE claims SET state = 'claimed', worker = ?, expires = ? "
                    "WHERE item_id = ?", [(worker, now + lease, r[0]) for r in rows])
                taken = sum(1 for r in rows if r[1] == "claimed")
                if taken:
                    self.conn.execute("UPDATE workers SET taken_over = taken_over + ? "
                                      "WHERE worker = ?", (taken, worker))
        return [r[0] for r in rows]

    def renew(self, worker: str, lease: float) -> None:
        now = time.time()
        with self._tx():
            self.conn.execute("UPDATE claims SET expires = ? WHERE worker = ? AND state = "
                              "'claimed'", (now + lease, worker))
            self.conn.execute("UPDATE workers SET heartbeat = ? WHERE worker = ?",
                              (now, worker))

    def finish(self, worker: str, rows: list[Row]) -> None:
        """Results and the end of their claims, in one transaction."""
        with self._tx():
            for row in rows:
                self.store.write(row)
            self.conn.executemany("UPDATE claims SET state = 'done', worker = ? "
                                  "WHERE item_id = ?", [(worker, r.item_id) for r in rows])
            self.conn.execute("UPDATE workers SET done = done + ? WHERE worker = ?",
                              (len(rows), worker))

    def held_by_others(self, worker: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM claims WHERE state = 'claimed' AND worker != ?",
            (worker,)).fetchone()[0])

    def progress(self) -> dict[str, Any]:
        """Questions done and left, and each worker's count (for the parent's display)."""
        states = dict(self.conn.execute(
            "SELECT state, COUNT(*) FROM claims GROUP BY state").fetchall())
        workers = {w: (d, t) for w, d, t in self.conn.execute(
            "SELECT worker, done, taken_over FROM workers ORDER BY worker")}
        return {"done": states.get("done", 0), "left": states.get("todo", 0)
                + states.get("claimed", 0), "workers": workers}


# ----------------------------------------------------------------------------- a worker


async def work(plan: Any, board: Any, worker: str, concurrency: int,
               on_row: Callable[[Row], None] | None = None, parent: int | None = None) -> int:
    """Claim, run, score and write questions until none are left; returns how many.
    ``parent``: the pid of the eval that started this worker; when it is gone the worker
    writes what it finished and stops (the questions in flight are run again by
    ``--resume``, or by another machine once their leases run out)."""
    executor, scorer = plan.executor, plan.task.scorer
    threaded = scorer.name == "code"
    by_id = {str(it.id): (i, it) for i, it in enumerate(plan.items)}
    lease = lease_s()
    batch = max(1, min(MAX_BATCH, concurrency // 2))
    queue: collections.deque[str] = collections.deque()
    finished: list[Row] = []
    ran = 0
    orphaned = False
    failed: Exception | None = None

    def flush() -> None:
        if finished:
            rows = finished[:]
            finished.clear()
            board.finish(worker, rows)
            if on_row is not None:
                for row in rows:
                    on_row(row)

    async def heartbeat() -> None:
        nonlocal orphaned, failed
        beat = time.monotonic()
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                flush()
                if parent is not None and os.getppid() != parent:  # re-parented: it is gone
                    orphaned = True
                    slots.cancel()
                    return
                if time.monotonic() - beat >= lease / 3:
                    beat = time.monotonic()
                    board.renew(worker, lease)
        except Exception as exc:  # a write or renewal failed: the questions must stop too
            failed = exc  # (run on unrenewed, their claims would be taken over and rerun)
            slots.cancel()

    async def slot() -> None:
        nonlocal ran
        while True:
            if not queue:
                got = board.claim(worker, batch, lease)
                if not got:
                    flush()  # before waiting: others must not take over what is done
                    if board.held_by_others(worker):
                        await asyncio.sleep(min(0.1, lease / 4))  # they may die: wait
                        continue
                    return
                queue.extend(got)
            item_id = queue.popleft()
            if item_id not in by_id:  # not a question of this run (cannot happen)
                continue
            idx, item = by_id[item_id]
            res = await executor.arun(item.question, query_id=item_id)
            correct, detail = await score_result(scorer, item, res, threaded)
            finished.append(to_row(idx, item, res, correct, detail))
            ran += 1

    slots = asyncio.gather(*(slot() for _ in range(max(1, concurrency))))
    beat = asyncio.create_task(heartbeat())
    try:
        await slots
    except asyncio.CancelledError:
        if failed is not None:
            raise failed from None
        if not orphaned:
            raise
        print(f"worker {worker}: its eval (pid {parent}) is gone: stopped", file=sys.stderr)
    finally:
        beat.cancel()
        flush()
    return ran


def worker_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tts_graph.evaluate.workers")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--worker", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--trace", type=Path, default=None)
    p.add_argument("--trace-run", default=None,
                   help="the run id of the eval's trace lines, shared by all its workers")
    p.add_argument("--storage-stdin", action="store_true",
                   help="read the run's postgresql:// URL from the first line of stdin")
    p.add_argument("--parent", type=int, default=None,
                   help="pid of the eval that started it: the worker stops when it is gone")
    p.add_argument("--accept-weak-sandbox", action="store_true",
                   help="the eval's --accept-weak-sandbox: the code scorer may run in guard mode")
    p.add_argument("--ways", type=int, default=1,
                   help="workers of this machine: each takes this share of a model's limits")
    a = p.parse_args(argv)
    storage = sys.stdin.readline().strip() if a.storage_stdin else None
    return run_worker(a.run_dir, a.worker, a.concurrency, cache=a.cache,
                      use_cache=not a.no_cache, trace=a.trace, storage=storage,
                      parent=a.parent, accept_weak_sandbox=a.accept_weak_sandbox,
                      ways=a.ways, trace_run=a.trace_run)


def run_worker(run_dir: Path, worker: str, concurrency: int, *, cache: Path | None,
               use_cache: bool, trace: Path | None, storage: str | None,
               parent: int | None = None, accept_weak_sandbox: bool = False,
               ways: int = 1, trace_run: str | None = None) -> int:
    """One worker on the run in ``run_dir``, to the end; its exit status. ``ways``: the
    workers of this machine, which share each model's declared limits (``max_concurrency``,
    ``rpm``, ``tpm``) equally, so that together they keep to them. ``trace_run``: the run id
    of its trace lines (one for all the workers of an eval: its trace is one run)."""
    from .session import plan_run

    try:
        plan = plan_run(graph_path=None, args=None, out=None, resume=run_dir,
                        cache=cache, use_cache=use_cache,
                        accept_weak_sandbox=accept_weak_sandbox)
        executor = plan.executor  # the executor itself, not the tracer wrapping it
        if trace is not None:
            from ..tracing import Tracer

            tracer = Tracer(trace, graph=plan.graph, run_id=trace_run)
            if tracer.active:
                plan.executor = tracer.wrap(plan.executor)
        board = _board(plan, storage)
        board.register(worker)

        async def main() -> int:
            if ways > 1:
                for binding in executor.bindings().values():
                    binding.share_limits(ways)
            try:
                return await work(plan, board, worker, concurrency, parent=parent)
            finally:
                await plan.executor.aclose()

        asyncio.run(main())
    except TTSGraphError as exc:
        print(f"worker {worker}: {exc}", file=sys.stderr)
        return 2
    return 0


def _board(plan: Any, url: str | None) -> Any:
    """The run's claim board: PostgreSQL when the parent passed a URL (``--storage``), else
    the run directory's results store."""
    if not url:
        return ClaimBoard(plan.store)
    return PgBoard(url, run_key(plan.store.identity() or {}))


# ---------------------------------------------------------------------------- the parent

#: backends that are clients of a server: a process holding them can be forked (nothing of a
#: model, a GPU context or an engine process is in it); in-process models are not forked
FORKABLE_BACKENDS = frozenset({"openai", "litellm", "sim"})


def start_method(plan: Any, storage: str | None = None) -> str:
    """How the parent starts its workers: ``fork`` (Linux, every model a server's client, no
    other thread in the parent) copies the parent after its set-up, so a worker starts in
    milliseconds with the modules, graph, task and scorer already loaded; ``spawn`` starts a
    fresh interpreter per worker (about 1 s of imports, task load and compile each).
    With ``storage`` (``--storage URL``, on the parent's command line) workers are spawned:
    a forked one would show that command line, password included, as its own.
    ``TTS_GRAPH_EVAL_START=spawn`` asks for spawn (to compare them)."""
    if os.environ.get("TTS_GRAPH_EVAL_START") == "spawn" or storage:
        return "spawn"
    backends = {plan.graph.spec.models[m].backend for m in plan.graph.used_models()}
    if (sys.platform == "linux" and backends <= FORKABLE_BACKENDS
            and threading.active_count() == 1):
        return "fork"
    return "spawn"


class _Forked:
    """A forked worker, with the part of ``subprocess.Popen``'s interface the parent uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
            time.sleep(0.02)
        return code

    def terminate(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


def _fork_worker(errlog: Any, run_dir: Path, name: str, concurrency: int, *,
                 cache: Path | None, use_cache: bool, trace: Path | None,
                 accept_weak_sandbox: bool = False, ways: int = 1,
                 trace_run: str | None = None) -> _Forked:
    """A worker forked from the parent: it opens its own store, cache and backends
    (``run_worker``; SQLite connections must not cross a fork) and never touches the
    parent's, and ends with ``os._exit`` so nothing of the parent's is closed or flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or a broken pipe
            stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        # the parent's handlers are its own (the eval turns SIGTERM into an interruption):
        # a worker the parent terminates ends at once, as a spawned one does
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(errlog.fileno(), 2)
        os.close(null)
        # new stream objects: the parent's may hold buffered output or a lock
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        code = run_worker(run_dir, name, concurrency, cache=cache, use_cache=use_cache,
                          trace=trace, storage=None, parent=parent,
                          accept_weak_sandbox=accept_weak_sandbox, ways=ways,
                          trace_run=trace_run)
    except BaseException:
        traceback.print_exc()
    finally:
        # no atexit handlers: those registered by the parent (temporary directories, log
        # files) are the parent's to run; a forked worker has no in-process model to stop
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


def _stop(p: Any) -> None:
    """End a worker that still runs: SIGTERM, then SIGKILL if it has not ended in 10 s."""
    if p.poll() is not None:
        return
    p.terminate()
    with contextlib.suppress(ProcessLookupError):  # a stopped process acts on it once woken
        os.kill(p.pid, signal.SIGCONT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)


@dataclass
class WorkerReport:
    """How the workers ended: a line per way workers ended that was not clean."""

    problems: list[str] = field(default_factory=list)  # workers that ended alike: one line
    failed: int = 0  # workers that did not end cleanly
    progress: dict[str, Any] = field(default_factory=dict)
    started: int = 0  # workers started: no more than there were open questions


def run_workers(plan: Any, n: int, concurrency: int, *, cache: Path | None, use_cache: bool,
                trace: Path | None = None,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                poll_s: float = 0.1, storage: str | None = None,
                accept_weak_sandbox: bool = False, share: int = 1) -> WorkerReport:
    """List the run's open questions, start ``n`` worker processes on it and wait for them,
    calling ``on_progress`` with the board's counts as they change.

    ``storage`` (a ``postgresql://`` URL): the claims and results live there, shared with
    the workers of other machines on the same run (``pgboard``); results are copied into
    this run directory's store as they arrive."""
    board: Any
    if storage:
        identity = plan.store.identity() or {}
        board = PgBoard(storage, run_key(identity))
        board.prepare(identity, [(i, str(it.id)) for i, it in enumerate(plan.items)],
                      plan.store, resume=plan.resumed)
        # unique across machines and across runs joined from one machine
        prefix = f"{socket.gethostname()}:{os.getpid()}:"
    else:
        done = plan.store.done_ids()
        board = ClaimBoard(plan.store)
        open_items = [(i, str(it.id)) for i, it in enumerate(plan.items)
                      if str(it.id) not in done]
        board.prepare(open_items)
        prefix = ""
        # a worker per open question at most: more would only start (and import) for nothing
        n = max(1, min(n, len(open_items)))
    n = max(1, min(n, len(plan.items)))
    synced = 0

    def sync() -> None:
        nonlocal synced
        if isinstance(board, PgBoard):
            synced = board.sync(plan.store, synced)

    run_dir = plan.store.run_dir
    # the workers' trace lines are one run's, as one process's are
    trace_run = uuid.uuid4().hex[:12]
    # each worker's share of a model's limits: this machine's workers, times the processes
    # (machines) this eval shares them with
    ways = n * share
    report = WorkerReport(started=n)
    procs: list[tuple[str, Any, Any]] = []  # Popen or _Forked
    hung: set[str] = set()  # workers stopped because they did not end when all was done
    with contextlib.ExitStack() as stack:
        try:
            fork = start_method(plan, storage) == "fork"
            if fork:  # loaded once here, shared by every worker forked below
                warm_up = getattr(plan.task.scorer, "warm_up", None)  # a plugin's may lack it
                if warm_up is not None:
                    warm_up()
                freeze_setup()
            for i in range(n):
                name = f"{prefix}w{i}"
                errlog = stack.enter_context(tempfile.TemporaryFile())
                if fork:
                    procs.append((name, _fork_worker(
                        errlog, run_dir, name, concurrency, cache=cache, use_cache=use_cache,
                        trace=trace, accept_weak_sandbox=accept_weak_sandbox, ways=ways,
                        trace_run=trace_run),
                        errlog))
                    continue
                cmd = [sys.executable, "-m", "tts_graph.evaluate.workers", str(run_dir),
                       "--worker", name, "--concurrency", str(concurrency),
                       "--parent", str(os.getpid()), "--ways", str(ways)]
                if not use_cache:
                    cmd.append("--no-cache")
                elif cache is not None:
                    cmd += ["--cache", str(cache)]
                if trace is not None:
                    cmd += ["--trace", str(trace), "--trace-run", trace_run]
                if accept_weak_sandbox:  # the code scorer's guard mode, accepted by the user
                    cmd.append("--accept-weak-sandbox")
                if storage:
                    cmd.append("--storage-stdin")
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE if storage else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=errlog)
                if storage and proc.stdin is not None:
                    with contextlib.suppress(BrokenPipeError):  # it died at once: reported
                        proc.stdin.write(storage.encode() + b"\n")
                        proc.stdin.close()
                procs.append((name, proc, errlog))
            last: dict[str, Any] = {}
            all_done_at: float | None = None
            while True:
                running = [p for _, p, _ in procs if p.poll() is None]
                sync()
                now = board.progress()
                if now != last and on_progress is not None:
                    on_progress(now)
                last = now
                if not running:
                    break
                if now.get("left", 1) == 0:
                    # every question is done, results and all: a worker that has not ended
                    # a lease after is hung (stopped, stuck in native code) and would keep
                    # the eval from ever ending
                    all_done_at = all_done_at or time.monotonic()
                    if time.monotonic() - all_done_at > lease_s():
                        for name, p, _ in procs:
                            if p.poll() is None:
                                hung.add(name)
                                _stop(p)
                time.sleep(poll_s)
            report.progress = last
        finally:
            for _, p, _ in procs:
                _stop(p)
        sync()  # what the last workers wrote
        if storage:
            board.close()
        ended: dict[str, list[str]] = {}  # why: the workers that ended so (one line each)
        for name, p, errlog in procs:
            if p.returncode == 0:
                continue
            errlog.seek(0)
            lines = errlog.read().decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else (f"killed by signal {-p.returncode}"
                                            if p.returncode < 0 else f"exit {p.returncode}")
            why = why.removeprefix(f"worker {name}: ")
            if name in hung:
                why = "still running when every question was done: stopped"
            if storage:
                why = scrub(why, storage)
            ended.setdefault(why, []).append(f"{name} (pid {p.pid})")
            report.failed += 1
        report.problems = [f"worker{'s' if len(who) > 1 else ''} {', '.join(who)} ended: {why}"
                           for why, who in ended.items()]
    return report


if __name__ == "__main__":
    sys.exit(worker_main())
