"""Client throughput against a loopback OpenAI-compatible server: a bare aiohttp client, the
litellm backend and the openai backend side by side, then ``tts-graph eval`` with 1, 2, 4
worker processes.

Part 1. For concurrency c = 1, 2, 4, ..., 256: calls per second against the ideal
(c / latency) and client CPU per call for (a) bare aiohttp (c calls in flight, one session,
the solver's request), (b) tts-graph with ``backend: litellm`` and (c) with ``backend: openai``:
a one-node graph (``solver``, one sample) over many questions through
``Executor.arun_many(concurrency=c)``. (b) and (c) include the executor, role and binding.

Part 2. ``tts-graph eval`` as a user runs it (a whole process, start-up included) over Q
one-call questions, no cache: litellm with one process, openai with 1, 2 and 4 workers.

The server is the fault server (tts_graph.testing) with no faults, in its own process (its own
core and GIL). Client CPU is the benchmark process's CPU time per call; server CPU comes from
its /stats.

    .venv/bin/python benchmarks/throughput.py [--levels 1,2,...] [--latency-ms 20]
    .venv/bin/python benchmarks/throughput.py --quick          # small sizes (a test runs it)
    .venv/bin/python benchmarks/throughput.py --profile 32     # where the openai side's time goes
    .venv/bin/python benchmarks/throughput.py --layers         # backend vs binding vs executor
    .venv/bin/python benchmarks/throughput.py --layers --gc-log  # and each run's time in GC
    .venv/bin/python benchmarks/throughput.py --overhead       # tts-graph's own CPU, no HTTP
    .venv/bin/python benchmarks/throughput.py --sync --latency-ms 0  # blocking Graph.run

Part 4 (``--eval-scoring math|code``, instead of the others): what eval workers are for, a
per-question cost that is CPU in the worker: the math scorer (math-verify/sympy, ~12 ms a
question here) or the code scorer (one sandboxed Python run a question), against the same
cheap server; ``tts-graph eval`` with 1 process, then 2 and 4 workers forked (the default on
Linux) and spawned (``TTS_GRAPH_EVAL_START=spawn``), in alternating rounds; each row's answers
and scores are checked against the first row's.

    .venv/bin/python benchmarks/throughput.py --eval-scoring math [--eval-repeats 3]

Part 3 (``--layers``, instead of parts 1 and 2): where the openai side's gap to bare aiohttp
is. The same calls through each layer in turn, at each concurrency: bare aiohttp, the
openai backend alone (``OpenAIBackend.generate``), the model binding around it
(``ModelBinding.generate``: limits, timeout, retries, cache lookup off) and the whole
executor, twice: ``Executor.arun_many`` (role, budget, records; every result kept for the
list it returns) and ``arun`` a question, each result checked and dropped as eval's workers
write each one out (kept results make CPython's collections run more often, each walking
every object of the calls in flight: the gap between the two). litellm is not imported here, as
it is not in an eval process with ``backend: openai`` (its module graph makes every full
garbage collection slower). With ``--gc-freeze`` the objects alive after set-up are moved
out of the collector's reach first (``gc.freeze()``, as ``tts-graph eval`` does).

Part 5 (``--sync``, instead of the others): blocking ``Graph.run``, one query after another,
as a script calls it: on the process's shared loop (``tts_graph.blocking``), against
``asyncio.run`` per query (a new loop, aiohttp session and connection each: what it did
before) and ``arun`` in one loop (the floor); time and connections opened a query.

Part 4 (``--overhead``, no server): tts-graph's own client CPU a call, without HTTP, whose
cost and the server's share of two shared cores make parts 1 and 3 noisy. The backend is an
in-process stand-in that answers the solver's request after ``--latency-ms`` (an
``asyncio.sleep``); the same calls go through it alone, through the binding, and through the
executor, as in part 3, and a bare loop of c workers awaiting the same sleep is the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.metadata
import io
import json
import os
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import ROOT, print_header, table

from tts_graph import Executor, Graph, loads_graph
from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.litellm_backend import import_litellm
from tts_graph.collector import YOUNG_THRESHOLD, freeze_setup
from tts_graph.roles.solver import Solver
from tts_graph.testing import FaultConfig, fault_stats, spawn_fault_server
from tts_graph.types import Completion, Message

MAX_TOKENS = 64


def solver_request(q: str) -> GenerationRequest:
    """The request the one-node solver graph sends for ``q``, built by hand for the layers
    below the executor."""
    return GenerationRequest((Message("system", Solver.system_prompt["main"]),
                              Message("user", q)), max_tokens=MAX_TOKENS, temperature=0.7)
TIMEOUT_S = 60.0
GRAPH = """
version: 1
name: throughput
models:
  m: {{backend: {backend}, model: {model}, api_base: "{url}/v1", timeout_s: {timeout}}}
defaults: {{max_tokens: {max_tokens}, temperature: 0.7}}
nodes:
  solve: {{role: solver, model: m}}
output: solve
"""
MODELS = {"litellm": "openai/fault", "openai": "fault"}


def graph_text(backend: str, url: str) -> str:
    return GRAPH.format(backend=backend, model=MODELS[backend], url=url, timeout=TIMEOUT_S,
                        max_tokens=MAX_TOKENS)


def questions(tag: str, n: int) -> list[str]:
    return [f"[{tag}] What is {i} plus {2 * i + 7}?" for i in range(n)]


async def pool(qs: list[str], c: int, one: Any) -> None:
    """``one(q)`` for every question, ``c`` at a time: c workers each taking the next
    question as it finishes one (no task per call, no semaphore to wake), as
    ``Executor.arun_many`` does, so every side pays the same for its concurrency."""
    todo = iter(qs)

    async def worker() -> None:
        for q in todo:
            await one(q)

    await asyncio.gather(*(worker() for _ in range(min(c, len(qs)))))


async def raw(session: Any, url: str, qs: list[str], c: int) -> None:
    """The floor of a client's cost: the solver's request with a bare aiohttp session."""
    system = Solver.system_prompt["main"]

    async def one(q: str) -> None:
        async with session.post(f"{url}/v1/chat/completions", json={
                "model": "fault", "max_tokens": MAX_TOKENS, "temperature": 0.7, "top_p": 1.0,
                "seed": 0, "messages": [{"role": "system", "content": system},
                                        {"role": "user", "content": q}]}) as r:
            assert (await r.json())["choices"][0]["message"]["content"]

    await pool(qs, c, one)


async def ours(ex: Executor, qs: list[str], c: int) -> None:
    results = await ex.arun_many(qs, concurrency=c)
    bad = [r for r in results if r.status != "ok"]
    assert not bad, bad[0].error


class GcLog:
    """Time spent in the garbage collector and collections by generation (``gc.callbacks``),
    for ``--gc-log``: where a side's client CPU goes besides its own code."""

    def __init__(self) -> None:
        self.on = False
        self.reset()

    def reset(self) -> None:
        self.s, self.counts, self._t0 = 0.0, [0, 0, 0], 0.0
        self.by_gen = [0.0, 0.0, 0.0]  # seconds in collections of each generation

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            spent = time.perf_counter() - self._t0
            self.s += spent
            self.counts[info["generation"]] += 1
            self.by_gen[info["generation"]] += spent


GC_LOG = GcLog()


SETTLE_WINDOW_S = 0.05


async def settle(max_s: float = 10.0) -> float:
    """Wait until this process is idle (under 5% of a core over ``SETTLE_WINDOW_S``), at
    most ``max_s``; the CPU spent meanwhile. litellm finishes each call's logging after
    the call has returned (its logging worker, on this loop, and threads): 0.2 s of CPU
    after 1,500 calls, which the side timed next would otherwise pay."""
    spent, t_end = 0.0, time.perf_counter() + max_s
    while time.perf_counter() < t_end:
        c0 = time.process_time()
        await asyncio.sleep(SETTLE_WINDOW_S)
        used = time.process_time() - c0
        spent += used
        if used < 0.05 * SETTLE_WINDOW_S:
            break
    return spent


async def timed(url: str, run: Any, label: str = "") -> dict[str, float]:
    await settle()  # a quiet start, whatever the side before left running
    s0 = fault_stats(url, keys=False)
    GC_LOG.reset()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await run
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    # the work a side leaves running after its last call returns is its own CPU
    cpu += await settle()
    s1 = fault_stats(url, keys=False)
    if GC_LOG.on:
        n = max(1, s1["answered"] - s0["answered"])
        print(f"    {label}: {wall:.2f} s, CPU {cpu / n * 1e3:.2f} ms a call, of which GC "
              f"{GC_LOG.s / n * 1e3:.3f} ms (collections by generation {GC_LOG.counts}, "
              f"ms in them {[round(t * 1e3, 1) for t in GC_LOG.by_gen]})",
              flush=True)
    return {"wall": wall, "cpu": cpu, "calls": s1["answered"] - s0["answered"],
            "server_cpu": s1["process_cpu_s"] - s0["process_cpu_s"]}


async def calls_part(a: argparse.Namespace, url: str) -> None:
    import aiohttp

    await asyncio.to_thread(import_litellm)
    latency = a.latency_ms / 1000.0
    exs = {b: Executor(loads_graph(graph_text(b, url))) for b in ("litellm", "openai")}
    # warm-up: litellm's first call imports the OpenAI client's resources (~0.5 s)
    for b, ex in exs.items():
        await ours(ex, questions(f"warm-{b}", 64), 16)
    if a.gc_freeze:
        freeze_setup()
    if a.profile:
        c = a.profile
        pr = cProfile.Profile()
        pr.enable()
        await ours(exs["openai"], questions("profile", min(c * a.rounds, a.max_calls)), c)
        pr.disable()
        out = io.StringIO()
        pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
        return
    rows = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await raw(session, url, questions("warm-raw", 64), 16)
        for c in a.levels:
            n = min(max(c * a.rounds, a.min_calls), a.max_calls)
            ideal = c / latency
            runs: dict[str, list[dict[str, float]]] = {"raw": [], "litellm": [], "openai": []}
            for rep in range(a.repeats):  # alternate the sides, keep each side's best run
                runs["raw"].append(await timed(url, raw(session, url,
                                                        questions(f"raw{c}.{rep}", n), c)))
                for b, ex in exs.items():
                    runs[b].append(await timed(url, ours(ex, questions(f"{b}{c}.{rep}", n), c)))
            best = {k: min(v, key=lambda r: r["wall"]) for k, v in runs.items()}
            assert all(r["calls"] == n for r in best.values()), (best, n)
            rate = {k: n / r["wall"] for k, r in best.items()}
            cpu = {k: r["cpu"] / n * 1e3 for k, r in best.items()}
            rows.append([
                c, n, f"{ideal:.0f}",
                *(f"{rate[k]:.0f} ({rate[k] / ideal:.2f})" for k in ("raw", "litellm", "openai")),
                f"{rate['openai'] / rate['raw']:.2f}",
                *(f"{cpu[k]:.2f}" for k in ("raw", "litellm", "openai")),
                *(f"{best[k]['server_cpu'] / best[k]['wall']:.0%}" for k in ("raw", "openai")),
            ])
            print(f"  c={c}: raw {rate['raw']:.0f}/s, litellm {rate['litellm']:.0f}/s, "
                  f"openai {rate['openai']:.0f}/s (ideal {ideal:.0f})", flush=True)
    for ex in exs.values():
        await ex.aclose()
    print()
    print(table(["c", "calls", "ideal/s", "raw aiohttp/s (×ideal)", "litellm/s (×ideal)",
                 "openai/s (×ideal)", "openai ÷ raw", "raw CPU ms/call",
                 "litellm CPU ms/call", "openai CPU ms/call", "server CPU (raw)",
                 "server CPU (openai)"], rows))
    print(f"\nlitellm {importlib.metadata.version('litellm')}, aiohttp "
          f"{importlib.metadata.version('aiohttp')}; latency {a.latency_ms:g} ms; calls per "
          f"level = min(max(c × {a.rounds}, {a.min_calls}), {a.max_calls}); best of "
          f"{a.repeats} alternating runs per side; litellm and openai through the executor; "
          f"collector set up as eval's (--gc-freeze): {'yes' if a.gc_freeze else 'no'}")


async def layers_part(a: argparse.Namespace, url: str) -> None:
    """The same calls through bare aiohttp, the backend, the binding and the executor."""
    import aiohttp

    latency = a.latency_ms / 1000.0
    ex = Executor(loads_graph(graph_text("openai", url)))
    binding = ex.bindings()["m"]
    backend = binding.backend
    async def via_backend(q: str) -> None:
        assert (await backend.generate(solver_request(q)))[0].text

    async def via_binding(q: str) -> None:
        assert (await binding.generate(solver_request(q), 2 * MAX_TOKENS))[0].completions[0].text

    async def via_arun(q: str) -> None:
        # one query, its result checked and dropped, as eval's workers write each out
        res = await ex.arun(q)
        assert res.status == "ok", res.error

    sides = ("raw", "backend", "binding", "executor", "arun")
    rows = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await raw(session, url, questions("warm-raw", 64), 16)
        await ours(ex, questions("warm-ex", 64), 16)
        if a.gc_freeze:
            freeze_setup()
        for c in a.levels:
            n = min(max(c * a.rounds, a.min_calls), a.max_calls)
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
            for rep in range(a.repeats):  # alternate the sides, keep each side's best run
                tag = f"{c}.{rep}"
                runs["raw"].append(await timed(url, raw(session, url, questions(
                    f"raw{tag}", n), c), f"c={c} raw"))
                runs["backend"].append(await timed(url, pool(questions(
                    f"be{tag}", n), c, via_backend), f"c={c} backend"))
                runs["binding"].append(await timed(url, pool(questions(
                    f"bi{tag}", n), c, via_binding), f"c={c} binding"))
                runs["executor"].append(await timed(url, ours(ex, questions(
                    f"ex{tag}", n), c), f"c={c} executor"))
                runs["arun"].append(await timed(url, pool(questions(
                    f"ar{tag}", n), c, via_arun), f"c={c} arun"))
            best = {k: min(v, key=lambda r: r["wall"]) for k, v in runs.items()}
            assert all(r["calls"] == n for r in best.values()), (best, n)
            rate = {k: n / r["wall"] for k, r in best.items()}
            cpu = {k: r["cpu"] / n * 1e3 for k, r in best.items()}
            rows.append([c, n, f"{c / latency:.0f}",
                         *(f"{rate[k]:.0f} ({rate[k] / rate['raw']:.2f})" for k in sides),
                         *(f"{cpu[k]:.2f}" for k in sides)])
            print(f"  c={c}: " + ", ".join(f"{k} {rate[k]:.0f}/s" for k in sides), flush=True)
    await ex.aclose()
    print()
    print(table(["c", "calls", "ideal/s", *(f"{k}/s (÷raw)" for k in sides),
                 *(f"{k} CPU ms/call" for k in sides)], rows))
    print(f"\naiohttp {importlib.metadata.version('aiohttp')}; latency {a.latency_ms:g} ms; "
          f"calls per level = min(max(c × {a.rounds}, {a.min_calls}), {a.max_calls}); best of "
          f"{a.repeats} alternating runs per side; collector set up as eval's "
          f"(--gc-freeze): {'yes' if a.gc_freeze else 'no'}")


class _Sleeper(Backend):
    """Answers every request after ``latency`` seconds, as a server would, with no HTTP."""

    def __init__(self, latency: float, reply_chars: int = 0) -> None:
        self.latency = latency
        self._info = ModelInfo(identity="sleeper")
        # a chain of thought of about ``reply_chars`` characters before the answer line
        step = ("We add the 2 apples in the first basket to the 7 in the second, which gives "
                "9 apples in all, and check it: 9 - 7 = 2. ")
        self.text = step * (reply_chars // len(step)) + "2 plus 7 is 9.\nAnswer: 9"

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        await asyncio.sleep(self.latency)
        return [Completion(text=self.text, prompt_tokens=40,
                           completion_tokens=9) for _ in range(request.n)]


async def overhead_part(a: argparse.Namespace) -> None:
    """Client CPU a call through the floor, the backend, the binding and the executor."""
    latency = a.latency_ms / 1000.0
    ex = Executor(loads_graph(graph_text("openai", "http://127.0.0.1:9")),
                  backends={"m": _Sleeper(latency, a.reply_chars)})
    binding = ex.bindings()["m"]
    backend = binding.backend
    async def via_floor(q: str) -> None:
        await asyncio.sleep(latency)

    async def via_backend(q: str) -> None:
        assert (await backend.generate(solver_request(q)))[0].text

    async def via_binding(q: str) -> None:
        assert (await binding.generate(solver_request(q), 2 * MAX_TOKENS))[0].completions[0].text

    async def via_executor(qs: list[str], c: int) -> None:
        await ours(ex, qs, c)

    sides = tuple(a.sides)
    if not sides or not set(sides) <= {"floor", "backend", "binding", "executor"}:
        raise SystemExit(f"--sides: one or more of floor, backend, binding, executor, not "
                         f"{','.join(sides)!r}")
    await ours(ex, questions("warm-ex", 256), 64)
    if a.gc_freeze:
        freeze_setup()
    rows = []
    for c in a.levels:
        n = min(max(c * a.rounds, a.min_calls), a.max_calls)
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        for rep in range(a.repeats):  # alternate the sides, keep each side's least CPU
            for k, one in (("floor", via_floor), ("backend", via_backend),
                           ("binding", via_binding), ("executor", None)):
                if k not in sides:
                    continue
                qs = questions(f"{k}{c}.{rep}", n)
                c0 = time.process_time()
                await (via_executor(qs, c) if one is None else pool(qs, c, one))
                cpu[k].append((time.process_time() - c0) / n * 1e6)
        best = {k: min(v) for k, v in cpu.items()}
        rows.append([c, n, *(f"{best[k]:.0f}" for k in sides),
                     *(f"{best[k] - best[j]:.0f}" if {k, j} <= best.keys() else "-"
                       for k, j in (("executor", "binding"), ("executor", "floor")))])
        print(f"  c={c}: " + ", ".join(f"{k} {best[k]:.0f} us" for k in sides), flush=True)
    print()
    print(table(["c", "calls", *(f"{k} CPU us/call" for k in sides),
                 "executor − binding", "executor − floor"], rows))
    print(f"\nin-process backend answering after {a.latency_ms:g} ms (no HTTP, no server) "
          f"with a reply of {len(backend.text) if isinstance(backend, _Sleeper) else '?'} "
          "characters; "
          f"calls per level = min(max(c × {a.rounds}, {a.min_calls}), {a.max_calls}); least "
          f"CPU of {a.repeats} alternating runs per side; collector set up as eval's "
          f"(--gc-freeze): {'yes' if a.gc_freeze else 'no'}")


def sync_part(a: argparse.Namespace, url: str) -> None:
    """Blocking ``Graph.run`` one query after another: on the process's shared loop (what it
    does), against ``asyncio.run`` per query (what it did before: a new loop, session and
    connection each) and ``arun`` in one loop of the caller's (the floor)."""
    graph = Graph(loads_graph(graph_text("openai", url)))
    graph.run("warm-up")
    n = a.sync_queries

    def each_run(qs: list[str]) -> None:
        for q in qs:
            assert asyncio.run(graph.arun(q)).status == "ok"

    def shared(qs: list[str]) -> None:
        for q in qs:
            assert graph.run(q).status == "ok"

    def one_loop(qs: list[str]) -> None:
        async def go() -> None:
            for q in qs:
                assert (await graph.arun(q)).status == "ok"

        asyncio.run(go())

    sides = (("asyncio.run a query (before)", each_run), ("Graph.run (shared loop)", shared),
             ("arun in one loop (floor)", one_loop))
    best: dict[str, tuple[float, float, int]] = {}
    for rep in range(a.repeats):  # alternating; each side's fastest run is kept
        for label, run in sides:
            s0, c0, t0 = fault_stats(url, keys=False), time.process_time(), time.perf_counter()
            run(questions(f"sync{rep}{label[:4]}", n))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            conns = fault_stats(url, keys=False)["connections"] - s0["connections"]
            if label not in best or wall < best[label][0]:
                best[label] = (wall, cpu, conns)
    graph.close()
    rows = [[label, n, f"{best[label][0] / n * 1e3:.2f}", f"{best[label][1] / n * 1e3:.2f}",
             best[label][2]] for label, _ in sides]
    print(table(["blocking calls", "queries", "ms a query", "client CPU ms a query",
                 "connections opened"], rows))
    print(f"\none query at a time; latency {a.latency_ms:g} ms; fastest of {a.repeats} "
          "alternating runs per side")


def eval_part(a: argparse.Namespace, url: str) -> None:
    """``tts-graph eval`` as a whole process: litellm (1 process), openai (1, 2, 4 workers)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    rows = []
    base: float | None = None
    base_rate = float("nan")
    with tempfile.TemporaryDirectory(prefix="tts-eval-bench-") as tmp:
        work = Path(tmp)
        (work / "q.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} plus {2 * i + 7}?",
                        "answer": str(3 * i + 7)}) + "\n" for i in range(a.eval_questions)))
        sides = [] if a.skip_litellm_eval else [("litellm", 1)]
        sides += [("openai", w) for w in a.workers]
        first: dict[str, str | None] | None = None
        for backend, workers in sides:
            (work / f"{backend}.yaml").write_text(graph_text(backend, url))
            out = work / f"run-{backend}-{workers}"
            s0 = fault_stats(url, keys=False)["answered"]
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "tts_graph", "eval", f"{backend}.yaml", "--task",
                 "q.jsonl", "--out", str(out), "--no-cache", "--json", "--concurrency",
                 str(a.eval_concurrency), "--workers", str(workers)],
                cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False)
            wall = time.perf_counter() - t0
            answered = fault_stats(url, keys=False)["answered"] - s0
            if proc.returncode != 0:
                raise SystemExit(f"eval {backend} --workers {workers} failed:\n{proc.stderr}")
            summary = json.loads(proc.stdout)
            with sqlite3.connect(out / "results.sqlite") as conn:
                answers = dict(conn.execute("SELECT item_id, answer FROM results"))
            first = first or answers  # the same requests get the same answers from the server
            same = sum(answers.get(k) == v for k, v in first.items())
            rate = steady_rate(out / "results.sqlite")
            if backend == "openai" and workers == 1:
                base, base_rate = wall, rate
            rows.append([backend, workers, a.eval_concurrency, summary["scored"], answered,
                         f"{same}/{len(first)}",
                         f"{wall:.2f}", f"{a.eval_questions / wall:.0f}",
                         f"{base / wall:.2f}" if base and backend == "openai" else "-",
                         f"{rate:.0f}",
                         f"{rate / base_rate:.2f}" if base and backend == "openai" else "-"])
            print(f"  eval {backend} --workers {workers}: {wall:.2f} s", flush=True)
    ideal = a.eval_questions / a.eval_concurrency * a.latency_ms / 1000.0
    print()
    print(table(["backend", "workers", "concurrency per worker", "scored", "server answered",
                 "same answers as the first row", "wall s (whole process)", "questions/s",
                 "speed-up vs 1 worker", "questions/s once running",
                 "speed-up once running"], rows))
    print(f"\n{a.eval_questions} one-call questions, no cache, latency {a.latency_ms:g} ms; "
          f"the ideal for one process at concurrency {a.eval_concurrency} is {ideal:.2f} s "
          "plus start-up")


#: ``--eval-scoring math``: gold answers of the kinds MATH-style tasks have, each question its
#: own numbers (math-verify caches nothing across them); the server's "Answer: k" is compared
#: with each by math-verify (sympy), 1-25 ms of CPU per question on this machine
MATH_GOLDS = ("x^2+{a}x+{b}", "\\frac{{{b}\\pi}}{{{a}}}", "\\frac{{{b}}}{{{a}}}",
              "\\sqrt{{{a}}}+{b}")
#: ``--eval-scoring code``: a HumanEval-shaped item; the server's reply is not code, so each
#: question is one sandboxed Python run that fails (its cost is the sandbox's, not the test's)
CODE_PROMPT = 'def add_{i}(x: int) -> int:\n    """x plus {i}."""\n'
CODE_TEST = "def check(f):\n    assert f(1) == {j}\n"


def scoring_questions(kind: str, n: int) -> str:
    """The JSONL task of ``--eval-scoring KIND``: n questions for the ``math`` or ``code``
    scorer."""
    lines = []
    for i in range(n):
        rec: dict[str, Any] = {"id": f"q{i}"}
        if kind == "math":
            gold = MATH_GOLDS[i % len(MATH_GOLDS)].format(a=i + 2, b=i + 1)
            rec |= {"question": f"Simplify item {i}.", "answer": gold}
        else:
            rec |= {"question": f"Complete add_{i}.", "answer": f"    return x + {i}\n",
                    "prompt": CODE_PROMPT.format(i=i), "test": CODE_TEST.format(j=i + 1),
                    "entry_point": f"add_{i}"}
        lines.append(json.dumps(rec) + "\n")
    return "".join(lines)


def steady_rate(db: Path) -> float:
    """Questions a second once the run is going: from the first result's write time
    (``finished_at``) to the last, so each process's start-up before its first answer is
    left out; the whole-process figure beside it keeps it. (Not a percentile window: workers
    write their results together every ``FLUSH_S``, and a scorer that holds a worker's loop
    delays its writes, so the middle of a run comes in bursts that a window would overrate.)"""
    with sqlite3.connect(db) as conn:
        first, last, n = conn.execute(
            "SELECT MIN(finished_at), MAX(finished_at), COUNT(*) FROM results").fetchone()
    return (n - 1) / (last - first) if n > 1 and last > first else float("nan")


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


#: the machine's own ceiling, measured next to the eval rows: a pure-Python loop (~1 s here)
BURN = "s = 0\nfor i in range({n}):\n    s += i * i\n"


def cpu_ceiling(k: int, n: int) -> tuple[float, float]:
    """Wall seconds of the loop in 1 process, then in ``k`` processes at once: on free cores
    the two are equal; other work on the cores makes the second longer."""
    def run(procs: int) -> float:
        t0 = time.perf_counter()
        ps = [subprocess.Popen([sys.executable, "-c", BURN.format(n=n)]) for _ in range(procs)]
        for proc in ps:
            proc.wait()
        return time.perf_counter() - t0

    return run(1), run(k)


def scoring_part(a: argparse.Namespace, url: str) -> None:
    """``tts-graph eval --scorer math|code`` with 1, 2, 4 workers: per-question cost is
    the scorer's CPU in the workers, the server's is small. Workers forked from the parent
    after set-up (the default on Linux), and with ``--eval-start fork,spawn`` also each
    started as a fresh interpreter (``TTS_GRAPH_EVAL_START=spawn``); rounds alternate the
    rows."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    kind = a.eval_scoring
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sides = [(1, "-")] + [(w, start) for start in a.eval_start for w in a.workers if w > 1]
    rows = []
    ceiling = []
    walls: dict[tuple[int, str], list[float]] = {side: [] for side in sides}
    #: speed-up once running (``steady_rate``) over the round's one process, per row
    rates: dict[tuple[int, str], list[float]] = {side: [] for side in sides}
    base_rate = float("nan")
    with tempfile.TemporaryDirectory(prefix="tts-eval-bench-") as tmp:
        work = Path(tmp)
        (work / "q.jsonl").write_text(scoring_questions(kind, a.eval_questions))
        (work / "g.yaml").write_text(graph_text("openai", url))
        first: dict[str, tuple[Any, ...]] | None = None
        for rnd in range(1, a.eval_repeats + 1):
            one, many = cpu_ceiling(cores or 1, a.burn_loops)
            ceiling.append([rnd, f"{one:.2f}", cores, f"{many:.2f}",
                            f"{(cores or 1) * one / many:.2f}",
                            f"{one / many:.2f}"])
            base: float | None = None
            for workers, start in sides:
                out = work / f"run-{workers}-{start}-{rnd}"
                s0 = fault_stats(url, keys=False)
                c0, t0 = children_cpu(), time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "tts_graph", "eval", "g.yaml", "--task", "q.jsonl",
                     "--scorer", kind, "--accept-weak-sandbox", "--out", str(out),
                     "--no-cache", "--json", "--concurrency", str(a.eval_concurrency),
                     "--workers", str(workers)],
                    cwd=work, env={**env, "TTS_GRAPH_EVAL_START": start}, capture_output=True,
                    text=True, timeout=900, check=False)
                wall, cpu = time.perf_counter() - t0, children_cpu() - c0
                s1 = fault_stats(url, keys=False)
                if proc.returncode != 0:
                    raise SystemExit(f"eval --scorer {kind} --workers {workers} failed:\n"
                                     f"{proc.stderr}")
                summary = json.loads(proc.stdout)
                with sqlite3.connect(out / "results.sqlite") as conn:
                    answers = {r[0]: r[1:] for r in conn.execute(
                        "SELECT item_id, answer, correct, score_detail FROM results")}
                first = first or answers  # the same replies score the same in every row
                same = sum(answers.get(k) == v for k, v in first.items())
                base = base or wall
                rate = steady_rate(out / "results.sqlite")
                base_rate = base_rate if workers > 1 else rate
                walls[workers, start].append(wall)
                rates[workers, start].append(rate / base_rate)
                server_cpu = s1["process_cpu_s"] - s0["process_cpu_s"]
                rows.append([rnd, workers, start, a.eval_concurrency, summary["scored"],
                             s1["answered"] - s0["answered"], f"{same}/{len(first)}",
                             f"{wall:.2f}", f"{a.eval_questions / wall:.0f}",
                             f"{base / wall:.2f}",
                             f"{base / wall / min(workers, cores or 1):.2f}",
                             f"{rate:.0f}", f"{rate / base_rate:.2f}",
                             f"{rate / base_rate / min(workers, cores or 1):.2f}",
                             f"{cpu:.2f}", f"{cpu / wall:.2f}", f"{server_cpu:.2f}"])
                print(f"  round {rnd}: eval --scorer {kind} --workers {workers} ({start}): "
                      f"{wall:.2f} s", flush=True)
    print()
    print(table(["round", "workers", "start", "concurrency per worker", "scored",
                 "server answered", "same answers and scores as the first row",
                 "wall s (whole process)", "questions/s", "speed-up vs 1 worker",
                 "÷ linear up to the cores", "questions/s once running",
                 "speed-up once running", "÷ linear once running",
                 "eval CPU s (all processes)",
                 "cores it got (CPU s ÷ wall s)", "server CPU s"],
                rows))
    print()
    print(table(["round", "CPU loop, 1 process: wall s", "processes at once",
                 "wall s of each", "speed-up the cores gave", "÷ linear"], ceiling))
    one = walls[1, "-"]
    spread = "; ".join(
        f"{w} ({start}) {min(v):.2f}–{max(v):.2f} s"
        + (f", speed-up {min(one) / max(v):.2f}–{max(one) / min(v):.2f}, once running "
           f"{min(rates[w, start]):.2f}–{max(rates[w, start]):.2f}" if w > 1 else "")
        for (w, start), v in walls.items())
    print(f"\n{a.eval_questions} one-call questions scored by `{kind}`, no cache, latency "
          f"{a.latency_ms:g} ms, {cores} cores, {a.eval_repeats} rounds; wall range per row: "
          f"{spread}; load average before {load_before}, after "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="1,2,4,8,16,32,64,128,256",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=12, help="calls per level = c × rounds")
    p.add_argument("--min-calls", type=int, default=100)
    p.add_argument("--max-calls", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per side and level, alternating; the best is shown")
    p.add_argument("--eval-questions", type=int, default=600)
    p.add_argument("--eval-concurrency", type=int, default=64)
    p.add_argument("--workers", default="1,2,4", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-calls", action="store_true", help="only the eval part")
    p.add_argument("--skip-litellm-eval", action="store_true")
    p.add_argument("--eval-scoring", choices=("math", "code"), default=None,
                   help="instead of the tables: eval with the math or code scorer, whose "
                   "CPU is in the workers, with 1, 2, 4 workers")
    p.add_argument("--eval-repeats", type=int, default=3,
                   help="--eval-scoring: rounds of 1, 2, 4 workers, alternating")
    p.add_argument("--eval-start", default="fork,spawn", type=lambda s: s.split(","),
                   help="--eval-scoring: how workers start (TTS_GRAPH_EVAL_START), each a row")
    p.add_argument("--burn-loops", type=int, default=15_000_000,
                   help="--eval-scoring: iterations of the CPU loop that measures the cores")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: levels 1,8, 40 calls, 40 eval questions, 1-2 workers")
    p.add_argument("--profile", type=int, default=0, metavar="C",
                   help="profile the openai side at concurrency C instead of the tables")
    p.add_argument("--layers", action="store_true",
                   help="bare aiohttp vs the openai backend alone vs the binding vs the "
                   "executor (instead of the tables)")
    p.add_argument("--overhead", action="store_true",
                   help="tts-graph's own client CPU a call, in-process backend, no server "
                   "(instead of the tables)")
    p.add_argument("--reply-chars", type=int, default=0,
                   help="--overhead: the in-process backend's reply is a chain of thought of "
                        "about this many characters before its answer line (answer "
                        "extraction reads it all)")
    p.add_argument("--sides", default="floor,backend,binding,executor",
                   type=lambda s: [x for x in s.split(",") if x],
                   help="--overhead: the sides to run (one alone, with --levels C --min-calls "
                        "N --max-calls N --repeats 1, under valgrind at two N: instructions "
                        "a call)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="the garbage collector set up after set-up and warm-up as tts-graph "
                        "eval sets it: gc.freeze(), young collections every "
                        f"{YOUNG_THRESHOLD:,} allocations")
    p.add_argument("--sync", action="store_true",
                   help="blocking Graph.run, one query at a time: the shared loop vs "
                   "asyncio.run a query vs one loop (instead of the tables)")
    p.add_argument("--sync-queries", type=int, default=300)
    p.add_argument("--gc-log", action="store_true",
                   help="--layers: print each run's time in the garbage collector (gc.callbacks)")
    a = p.parse_args()
    if a.gc_log:
        import gc

        GC_LOG.on = True
        gc.callbacks.append(GC_LOG)
    if a.quick:
        a.levels, a.rounds, a.min_calls, a.max_calls, a.repeats = [1, 8], 2, 20, 40, 1
        a.eval_questions, a.eval_concurrency, a.workers = 40, 8, [1, 2]
        a.eval_repeats, a.burn_loops, a.sync_queries = 1, 100_000, 20
    if a.overhead:
        print_header(f"Client CPU a call, in-process {a.latency_ms:g} ms backend")
        asyncio.run(overhead_part(a))
        return
    print_header(f"Client throughput against a {a.latency_ms:g} ms loopback server")
    with spawn_fault_server(FaultConfig(latency_ms=a.latency_ms)) as url:
        if a.layers:
            asyncio.run(layers_part(a, url))
            return
        if a.sync:
            sync_part(a, url)
            return
        if a.eval_scoring:
            scoring_part(a, url)
            return
        if not a.skip_calls:
            asyncio.run(calls_part(a, url))
        if not a.skip_eval and not a.profile:
            print()
            eval_part(a, url)


if __name__ == "__main__":
    main()
