"""Blocking calls share one event loop per process (``tts_graph.blocking``): a backend's
pooled connections live from one ``Graph.run`` to the next, the caller's context is the
run's, an interrupted caller cancels its run, and nothing is left open at exit."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tts_graph import Graph, loads_graph
from tts_graph.blocking import run_sync
from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server

ROOT = Path(__file__).resolve().parents[1]
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_runs_share_one_loop_in_another_thread() -> None:
    async def where() -> tuple[int, int]:
        return id(asyncio.get_running_loop()), threading.get_ident()

    first, second = run_sync(where), run_sync(where)
    assert first == second and first[1] != threading.get_ident()


def test_results_exceptions_and_the_callers_context_come_through() -> None:
    async def value() -> str:
        return VAR.get()

    async def fail() -> None:
        raise KeyError("boom")

    token = VAR.set("the caller's")
    try:
        assert run_sync(value) == "the caller's"
    finally:
        VAR.reset(token)
    assert run_sync(value) == "unset"
    with pytest.raises(KeyError, match="boom"):
        run_sync(fail)


def test_many_threads_at_once() -> None:
    async def nap(i: int) -> int:
        await asyncio.sleep(0.05)
        return i

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: run_sync(lambda: nap(i)), range(16)))
    assert got == list(range(16)) and time.perf_counter() - t0 < 0.5  # together, not in turn


def test_a_blocking_call_from_the_loop_itself_does_not_deadlock() -> None:
    async def inner() -> str:
        return "inner"

    async def outer() -> str:
        return run_sync(inner)  # on the shared loop: runs in a worker thread instead

    assert run_sync(outer) == "inner"


def test_an_interrupted_caller_cancels_its_run() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt_soon() -> None:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the main thread waits in run_sync

    threading.Thread(target=interrupt_soon).start()
    with pytest.raises(KeyboardInterrupt):
        run_sync(forever)
    assert cancelled.wait(5)


def test_sync_runs_reuse_one_connection_pool_and_nothing_is_left_open() -> None:
    """Against the loopback server: three ``Graph.run`` calls, one TCP connection (each
    opened its own before); the process exits without an "Unclosed" warning whether the
    graph was closed, dropped or kept."""
    script = textwrap.dedent("""
        import gc, sys
        from tts_graph import Graph, loads_graph
        url, how = sys.argv[1], sys.argv[2]
        g = Graph(loads_graph(
            "version: 1\\nname: p\\nmodels:\\n  m: {backend: openai, model: fault, "
            'api_base: "' + url + '/v1"}\\nnodes:\\n  s: {role: solver, model: m, '
            "max_tokens: 8}\\noutput: s\\n"))
        for i in range(3):
            assert g.run(f"What is {i} + 1?").status == "ok"
        if how == "close":
            g.close()
        elif how == "drop":
            del g
            gc.collect()
        print("done")
    """)
    with serve_fault_server(FaultConfig()) as url:
        for how in ("close", "drop", "keep"):
            before = fault_stats(url)
            proc = subprocess.run([sys.executable, "-W", "always", "-c", script, url, how],
                                  capture_output=True, text=True, timeout=120, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            after = fault_stats(url)
            assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
            assert "Unclosed" not in proc.stderr, (how, proc.stderr)
            assert after["requests"] - before["requests"] == 3
            assert after["connections"] - before["connections"] == 1, how


def test_graph_run_from_threads_shares_its_backends(tmp_path: Path) -> None:
    with serve_fault_server(FaultConfig(latency_ms=20)) as url:
        doc = loads_graph(f"version: 1\nname: t\nmodels:\n  m: {{backend: openai, model: "
                          f'fault, api_base: "{url}/v1"}}\nnodes:\n  s: {{role: solver, '
                          "model: m, max_tokens: 8}\noutput: s\n")
        with Graph(doc) as g, ThreadPoolExecutor(4) as pool:
            results: list[Any] = list(pool.map(g.run, [f"What is {i}?" for i in range(8)]))
        assert all(r.status == "ok" for r in results)
        backend = g.executor.bindings()["m"].backend
        assert getattr(backend, "_sessions", None) == {}  # closed with the graph
