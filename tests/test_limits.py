"""A model's declared limits (``max_concurrency``, ``rpm``, ``tpm``) hold for the whole
process: across the event loop of each sync ``Graph.run``, across threads sharing one
graph (they were kept per event loop: each run started a fresh minute, each thread took the
whole cap), and across graph objects and executors declaring the same model (a search's
trials, one after another, each started a fresh minute)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from taskfiles import write_sums
from test_executor import Timed

from tts_graph import Executor, Graph, loads_graph
from tts_graph import limits as limits_mod
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.limits import Permits, RequestRate, TokenRate
from tts_graph.testing.fault_server import FaultConfig, fault_stats, serve_fault_server


@pytest.fixture
def short_minute(monkeypatch: pytest.MonkeyPatch) -> float:
    """Rate windows of 0.6 s instead of a minute (read when a binding is made)."""
    monkeypatch.setattr(limits_mod, "RATE_PERIOD_S", 0.6)
    return 0.6


# ------------------------------------------------------------------------------ permits


async def test_permits_are_served_in_the_order_asked() -> None:
    permits = Permits(1)
    await permits.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await permits.acquire()
        order.append(i)
        permits.release()

    tasks = [asyncio.ensure_future(wait(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert permits.locked() and order == []
    permits.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4] and not permits.locked()


async def test_a_cancelled_waiter_takes_no_permit_and_one_granted_passes_it_on() -> None:
    permits = Permits(1)
    await permits.acquire()
    first = asyncio.ensure_future(permits.acquire())
    second = asyncio.ensure_future(permits.acquire())
    await asyncio.sleep(0.01)
    first.cancel()  # cancelled while waiting: it holds nothing
    with pytest.raises(asyncio.CancelledError):
        await first
    permits.release()  # handed to ``second`` ...
    second.cancel()  # ... which is cancelled before it runs: the permit goes back
    with pytest.raises(asyncio.CancelledError):
        await second
    assert not permits.locked()
    await asyncio.wait_for(permits.acquire(), 1.0)


def test_permits_hold_across_threads_and_wake_waiters_on_their_own_loops() -> None:
    permits = Permits(2)
    lock = threading.Lock()
    in_flight = peak = 0

    async def use() -> None:
        nonlocal in_flight, peak
        await permits.acquire()
        try:
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            with lock:
                in_flight -= 1
        finally:
            permits.release()

    async def many() -> None:
        await asyncio.gather(*(use() for _ in range(5)))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: asyncio.run(many()), range(4)))
    # 20 uses of 20 ms, two at a time: at least 0.2 s whatever the threads
    assert peak == 2 and time.perf_counter() - t0 >= 0.19
    assert not permits.locked()


def test_a_waiter_whose_loop_has_closed_is_skipped() -> None:
    permits = Permits(1)
    asyncio.run(permits.acquire())

    async def wait_then_leave() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(permits.acquire(), 0.02)

    asyncio.run(wait_then_leave())
    permits.release()
    assert not permits.locked()


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Permits(0)


# -------------------------------------------------------------------------------- rates


def test_the_request_rate_holds_across_event_loops(short_minute: float) -> None:
    rate = RequestRate(2)
    t0 = time.perf_counter()
    for _ in range(3):  # a loop each, as ``Graph.run`` makes
        asyncio.run(rate.acquire())
    assert time.perf_counter() - t0 >= short_minute * 0.9  # the third waited for the window


def test_a_rate_under_one_a_minute_spaces_its_requests(short_minute: float) -> None:
    """``rpm: 0.5`` is one request every two minutes (it was raised to one a minute), and
    1.5 a minute allows one in any minute (rounding up would allow two)."""
    assert RequestRate(1.5).throttler.rate_limit == 1
    rate = RequestRate(0.5)
    assert (rate.throttler.rate_limit, rate.throttler.period) == (1, 2 * short_minute)
    t0 = time.perf_counter()
    for _ in range(2):
        asyncio.run(rate.acquire())
    assert time.perf_counter() - t0 >= 2 * short_minute * 0.9


def test_the_token_rate_holds_across_threads(short_minute: float) -> None:
    rate = TokenRate(100)
    stamps: list[float] = []
    t0 = time.perf_counter()

    def take() -> None:
        asyncio.run(rate.acquire(60))
        stamps.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert stamps[0] < short_minute / 2 and stamps[1] >= short_minute * 0.9


# ------------------------------------------- through a graph, against a loopback server


@pytest.fixture
def server() -> Iterator[str]:
    with serve_fault_server(FaultConfig(latency_ms=40)) as url:
        yield url


def _graph(url: str, limits: str) -> Any:
    return loads_graph(
        f"version: 1\nname: lim\nmodels:\n  m: {{backend: openai, model: fault, "
        f'api_base: "{url}/v1", {limits}}}\nnodes:\n  s: {{role: solver, model: m, '
        f"max_tokens: 16}}\noutput: s\n")


def test_max_concurrency_holds_across_threads_sharing_a_graph(server: str) -> None:
    with Graph(_graph(server, "max_concurrency: 1")) as g, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(g.run, [f"What is {i} + 1?" for i in range(8)]))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    stats = fault_stats(server)
    assert stats["answered"] == 8
    assert stats["peak_in_flight"] == 1  # on the wire: one at a time, all threads together


def test_rpm_holds_across_sync_runs(server: str, short_minute: float) -> None:
    with Graph(_graph(server, "rpm: 2")) as g:
        t0 = time.perf_counter()
        results = [g.run(f"What is {i} + 2?") for i in range(3)]  # an event loop each
        wall = time.perf_counter() - t0
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert wall >= short_minute * 0.9  # the third waited for the window to move on


def test_rpm_holds_across_executors_one_after_another(server: str,
                                                      short_minute: float) -> None:
    """A search runs its trials one after another, an executor each: the next trial's calls
    count in the same minute as the last one's."""
    t0 = time.perf_counter()
    for i in range(2):
        with Graph(_graph(server, "rpm: 2")) as g:
            results = g.run_many([f"What is {i} + {j}?" for j in range(2)], concurrency=2)
        assert all(r.status == "ok" for r in results), [r.error for r in results]
    # four requests at two a window: the second graph waited for the first one's window
    assert time.perf_counter() - t0 >= short_minute * 0.9


def test_max_concurrency_holds_across_graphs_of_the_same_model(server: str) -> None:
    """Two graph objects (two served graphs, two trials) calling one model at once keep to
    its cap together; a model declared with other limits, or at another endpoint, has its
    own."""
    with Graph(_graph(server, "max_concurrency: 1")) as a, \
            Graph(_graph(server, "max_concurrency: 1")) as b, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: (a, b)[i % 2].run(f"What is {i} + 1?"), range(8)))
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        assert fault_stats(server)["peak_in_flight"] == 1
        ex_a, ex_b = a.executor, b.executor
        assert ex_a.bindings()["m"].limits is ex_b.bindings()["m"].limits
    with Graph(_graph(server, "max_concurrency: 2")) as c:
        assert c.executor.bindings()["m"].limits is not \
            ex_a.bindings()["m"].limits


def _samples_graph(url: str, limits: str, samples: int) -> Any:
    return loads_graph(
        f"version: 1\nname: lim\nmodels:\n  m: {{backend: openai, model: fault, "
        f'api_base: "{url}/v1", {limits}}}\nnodes:\n  s: {{role: solver, model: m, '
        f"samples: {samples}, max_tokens: 16}}\noutput: s\n")


def test_the_samples_a_server_left_out_each_take_an_rpm_permit(short_minute: float) -> None:
    """A server that ignores ``n`` (one choice an answer, as llama.cpp's): the missing
    samples went out inside the first request's one rpm permit, so four samples under
    ``rpm: 2`` made four requests in one window. Each request on the wire now takes its own:
    the last two wait for the next window."""
    with serve_fault_server(FaultConfig(latency_ms=20, max_choices=1)) as url:
        t0 = time.perf_counter()
        with Graph(_samples_graph(url, "rpm: 2", 4)) as g:
            res = g.run("What is 2 + 2?")
        wall = time.perf_counter() - t0
        stats = fault_stats(url)
    assert res.status == "ok", res.error
    assert len(res.steps["s"].candidates) == 4 and res.usage.samples == 4
    # four requests on the wire, a call record each
    assert stats["answered"] == 4 and res.usage.calls == 4
    assert wall >= short_minute * 0.9


def test_the_samples_a_server_left_out_go_out_together_under_the_cap() -> None:
    """... and each takes a concurrency permit: under ``max_concurrency: 2`` the three
    missing samples go two at a time (they went one after another inside the first
    request's permit), never more."""
    with serve_fault_server(FaultConfig(latency_ms=100, max_choices=1)) as url:
        with Graph(_samples_graph(url, "max_concurrency: 2", 4)) as g:
            res = g.run("What is 2 + 2?")
        stats = fault_stats(url)
    assert res.status == "ok", res.error
    texts = [c.text for c in res.steps["s"].candidates]
    assert len(texts) == 4 and len(set(texts)) == 4
    assert stats["answered"] == 4 and stats["peak_in_flight"] == 2


def test_a_forked_child_starts_without_its_parents_limits() -> None:
    """A forked process (an eval worker) is another client of the provider: what the
    parent had taken is not its own."""
    first = limits_mod.shared("k", lambda: Permits(1))
    asyncio.run(first.acquire())  # held by the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh set, free to take
        ok = limits_mod.shared("k", lambda: Permits(1)) is not first
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert limits_mod.shared("k", lambda: Permits(1)) is first


async def test_limits_work_in_one_loop_as_before() -> None:
    backend = Timed(lambda req, i: "Answer: 3", latency=0.01)
    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "max_concurrency: 3, rpm: 1000, tpm: 1000000}\nnodes:\n  s: {role: "
                      "solver, model: m}\noutput: s\n")
    ex = Executor(doc, backends={"m": backend})
    results = await ex.arun_many([f"q{i}" for i in range(12)], concurrency=12)
    assert all(r.status == "ok" for r in results) and backend.peak == 3
    assert not ex.bindings()["m"].limits.sem.locked()  # type: ignore[union-attr]


# ------------------------------------------------- a machine's eval workers share them


def test_a_share_of_the_limits_rounds_down_and_keeps_at_least_one() -> None:
    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "max_concurrency: 5, rpm: 10, tpm: 1001}\nnodes:\n  s: {role: solver, "
                      "model: m}\noutput: s\n")
    binding = Executor(doc, backends={"m": ScriptedBackend(lambda r, i: "x")}).bindings()["m"]
    binding.share_limits(3)
    lim = binding.limits
    assert lim.sem is not None and lim.rpm is not None and lim.tpm is not None
    # 3 × 1 ≤ 5 calls, 3 × 3 ≤ 10 requests, 3 × 333 ≤ 1001 tokens
    assert (lim.rpm.throttler.rate_limit, lim.tpm.per_minute) == (3, 333)
    binding.share_limits(8)
    assert (binding.limits.rpm.throttler.rate_limit,  # type: ignore[union-attr]
            binding.limits.tpm.per_minute) == (1, 125)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        binding.share_limits(0)


def test_a_share_of_a_slow_rate_stays_a_share() -> None:
    """``rpm: 1`` over two workers: one request every two minutes each (each took one a
    minute: twice the declared rate together)."""
    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "rpm: 1}\nnodes:\n  s: {role: solver, model: m}\noutput: s\n")
    binding = Executor(doc, backends={"m": ScriptedBackend(lambda r, i: "x")}).bindings()["m"]
    binding.share_limits(2)
    rpm = binding.limits.rpm
    assert rpm is not None
    assert (rpm.throttler.rate_limit, rpm.throttler.period) == (1, 2 * limits_mod.RATE_PERIOD_S)


def test_eval_refuses_more_workers_than_a_models_cap(tmp_path: Path) -> None:
    """Each worker takes at least one call at a time: three workers under
    ``max_concurrency: 2`` would make three. Refused in one line before anything is made."""
    write_sums(tmp_path / "q.jsonl", 4)
    (tmp_path / "g.yaml").write_text(
        "version: 1\nname: cap\nmodels:\n  m: {backend: openai, model: fault, "
        'api_base: "http://127.0.0.1:9/v1", max_concurrency: 2}\nnodes:\n  s: {role: '
        "solver, model: m}\noutput: s\n")
    got = subprocess.run(
        [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl", "--out",
         "run", "--no-cache", "--workers", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("g.yaml:4: models.m.max_concurrency: 2 ")
    assert "--workers 3" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_eval_workers_keep_to_max_concurrency_together(tmp_path: Path, start: str) -> None:
    """``--workers 2`` with ``max_concurrency: 2``: one call at a time each, not two."""
    # calls slow enough (24 × 150 ms: 3.6 s for one worker alone) that the two overlap
    # however far apart they start (a spawned worker takes about a second of imports)
    write_sums(tmp_path / "q.jsonl", 24)
    with serve_fault_server(FaultConfig(latency_ms=150)) as url:
        (tmp_path / "g.yaml").write_text(
            f"version: 1\nname: cap\nmodels:\n  m: {{backend: openai, model: fault, "
            f'api_base: "{url}/v1", max_concurrency: 2}}\nnodes:\n  s: {{role: solver, '
            f"model: m, max_tokens: 16}}\noutput: s\n")
        got = subprocess.run(
            [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl",
             "--out", "run", "--no-cache", "--workers", "2", "--concurrency", "8", "--json"],
            cwd=tmp_path, env={**os.environ, "TTS_GRAPH_EVAL_START": start},
            capture_output=True, text=True, timeout=300, check=False)
        stats = fault_stats(url)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["done"] == 24
    assert stats["answered"] == 24 and stats["peak_in_flight"] == 2


# ----------------------------------- processes that share a model's limits (--share-limits)


def test_a_process_that_shares_the_limits_keeps_to_its_share(server: str) -> None:
    """``set_share(2)``: this process is one of two calling the model (two machines of one
    search or eval, two replicas of a server): every binding made after takes half of each
    declared limit; bindings made before keep theirs."""
    before = Graph(_graph(server, "max_concurrency: 2, rpm: 3, tpm: 1001"))
    before.executor.bindings()  # bound before the share is set
    limits_mod.set_share(2)
    lim = Graph(_graph(server, "max_concurrency: 2, rpm: 3, tpm: 1001")).executor \
        .bindings()["m"].limits
    assert lim.sem is not None and lim.sem._free == 1
    assert lim.rpm is not None and lim.rpm.throttler.rate_limit == 1  # 1.5 a minute: one
    assert lim.tpm is not None and lim.tpm.per_minute == 500
    assert before.executor.bindings()["m"].limits.sem._free == 2  # type: ignore[union-attr]
    with Graph(_graph(server, "max_concurrency: 2")) as g, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(g.run, [f"What is {i} + 1?" for i in range(8)]))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert fault_stats(server)["peak_in_flight"] == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="one of n >= 1"):
            limits_mod.set_share(bad)  # type: ignore[arg-type]


def _cap_graph(url: str, cap: int) -> str:
    return (f"version: 1\nname: cap\nmodels:\n  m: {{backend: openai, model: fault, "
            f'api_base: "{url}/v1", max_concurrency: {cap}}}\nnodes:\n  s: {{role: solver, '
            f"model: m, max_tokens: 16}}\noutput: s\n")


def _eval(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tts-graph eval g.yaml --task q.jsonl --no-cache ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task",
                           "q.jsonl", "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def test_eval_share_limits_divides_them_over_its_workers_too(tmp_path: Path) -> None:
    """``eval --workers 2 --share-limits 2`` (one of two machines) under ``max_concurrency:
    4``: a call at a time each worker, two on the wire from this machine; three workers
    would take six of the four, and are refused at the cap's line."""
    write_sums(tmp_path / "q.jsonl", 24)
    with serve_fault_server(FaultConfig(latency_ms=150)) as url:
        (tmp_path / "g.yaml").write_text(_cap_graph(url, 4))
        got = _eval(tmp_path, "--out", "run", "--workers", "2", "--concurrency", "8",
                    "--share-limits", "2", "--json")
        stats = fault_stats(url)
        refused = _eval(tmp_path, "--out", "run3", "--workers", "3", "--share-limits", "2")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["done"] == 24
    assert stats["answered"] == 24 and stats["peak_in_flight"] == 2
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("g.yaml:4: models.m.max_concurrency: 4 ")
    assert "--share-limits 2" in lines[0] and not (tmp_path / "run3").exists()


def test_one_eval_process_with_share_limits_keeps_to_its_share(tmp_path: Path) -> None:
    write_sums(tmp_path / "q.jsonl", 12)
    with serve_fault_server(FaultConfig(latency_ms=100)) as url:
        (tmp_path / "g.yaml").write_text(_cap_graph(url, 2))
        got = _eval(tmp_path, "--out", "run", "--concurrency", "8", "--share-limits", "2",
                    "--json")
        stats = fault_stats(url)
    assert got.returncode == 0, got.stderr
    assert stats["answered"] == 12 and stats["peak_in_flight"] == 1


def test_serve_and_search_take_their_share_of_the_limits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --share-limits 2`` (one of two replicas) binds its graphs' models to half
    their caps; ``search --share-limits 2`` (one of two workers of a study) runs its trials
    with the share set."""
    import gc

    from test_search import write_toy
    from typer.testing import CliRunner

    import tts_graph.server as server
    from tts_graph.cli import app
    from tts_graph.search.driver import SearchSession

    # both commands set the process's collector up (``freeze_setup``): this one's, after
    threshold = gc.get_threshold()
    monkeypatch.setattr("tts_graph.collector.freeze_setup", lambda: None)
    served: list[int] = []

    def capture(web: Any, sock: Any, **kw: Any) -> None:
        sock.close()
        sem = web.state.tts.graphs["cap"].executor.bindings()["m"].limits.sem
        served.append(sem._free)

    monkeypatch.setattr(server, "serve", capture)
    (tmp_path / "g.yaml").write_text(_cap_graph("http://127.0.0.1:9", 4))
    got = CliRunner().invoke(app, ["serve", str(tmp_path / "g.yaml"), "--port", "0",
                                   "--share-limits", "2"])
    assert got.exit_code == 0, got.output
    assert served == [2]

    shares: list[int] = []
    run = SearchSession.run

    async def recorded(self: SearchSession, *args: object, **kwargs: object) -> object:
        shares.append(limits_mod.share())
        return await run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SearchSession, "run", recorded)
    limits_mod.set_share(1)
    path = write_toy(tmp_path / "s", budget={"trials": 2})
    got = CliRunner().invoke(app, ["search", str(path), "--out", str(tmp_path / "out"),
                                   "--json", "--share-limits", "2"])
    assert got.exit_code == 0, got.output
    assert shares and set(shares) == {2}
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0


def test_the_cap_check_counts_workers_on_every_sharing_process() -> None:
    from tts_graph.backends.registry import backend_names
    from tts_graph.compile import compile_graph
    from tts_graph.errors import GraphError
    from tts_graph.evaluate.session import _check_workers

    g = compile_graph(_graph("http://127.0.0.1:9", "max_concurrency: 2"),
                      backends=backend_names())
    _check_workers(g, 2, 1)
    _check_workers(g, 1, 2)
    for workers, share, hint in ((3, 1, "use --workers 2 or fewer"),
                                 (2, 2, "use --workers 1 or fewer"),
                                 (1, 3, "at most 2 processes can share it")):
        with pytest.raises(GraphError) as got:
            _check_workers(g, workers, share)
        line = str(got.value)
        assert "models.m.max_concurrency: 2 calls at a time" in line, line
        assert f"({workers * share}); {hint}" in line and "\n" not in line, line
