"""Throughput of the litellm backend against a loopback server with a fixed 50 ms latency.

For concurrency c = 1, 2, 4, ..., 256: calls per second against the ideal (c / latency),
for (a) a bare ``litellm.acompletion`` loop (c calls in flight, a semaphore) and (b) tts-graph:
a one-node graph (``solver``, one sample, ``backend: litellm``) over many questions through
``Executor.arun_many(concurrency=c)``, which is the same shape (one task per query, a
semaphore). The difference in client CPU per call is the overhead of our layer (executor,
role, binding, backend wrapper) on top of litellm.

The server is the fault server (tts_graph.testing) with no faults, in its own process, so it
does not share the client's core or GIL. Client CPU is the benchmark process's CPU time
(every thread) per wall second; 100% is one core saturated. Server CPU comes from its /stats.

    .venv/bin/python benchmarks/throughput.py [--levels 1,2,4,...] [--rounds 12] [--repeats 2]
    .venv/bin/python benchmarks/throughput.py --raw   # plus a bare aiohttp client, for reference
    .venv/bin/python benchmarks/throughput.py --profile 32   # where our layer's time goes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.metadata
import io
import os
import pstats
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import print_header, table

from tts_graph import Executor, loads_graph
from tts_graph.backends.litellm_backend import import_litellm
from tts_graph.roles.solver import Solver
from tts_graph.testing import FaultConfig, fault_stats, spawn_fault_server

MAX_TOKENS = 64
TIMEOUT_S = 60.0
GRAPH = """
version: 1
name: throughput
models:
  m: {{backend: litellm, model: openai/fault, api_base: "{url}/v1", timeout_s: {timeout}}}
defaults: {{max_tokens: {max_tokens}, temperature: 0.7}}
nodes:
  solve: {{role: solver, model: m}}
output: solve
"""


def questions(tag: str, n: int) -> list[str]:
    return [f"[{tag}] What is {i} plus {2 * i + 7}?" for i in range(n)]


async def bare(litellm: Any, url: str, qs: list[str], c: int) -> None:
    """The reference: litellm.acompletion, c in flight, the same request as the solver's."""
    sem = asyncio.Semaphore(c)
    system = Solver.system_prompt["main"]

    async def one(q: str) -> None:
        async with sem:
            resp = await litellm.acompletion(
                model="openai/fault", api_base=f"{url}/v1", api_key="no-key",
                messages=[{"role": "system", "content": system}, {"role": "user", "content": q}],
                max_tokens=MAX_TOKENS, temperature=0.7, top_p=1.0, seed=0,
                num_retries=0, max_retries=0, timeout=TIMEOUT_S)
            assert resp.choices[0].message.content

    await asyncio.gather(*(one(q) for q in qs))


async def raw(session: Any, url: str, qs: list[str], c: int) -> None:
    """A floor for a client's cost: the same request with a bare aiohttp session (the
    transport litellm itself uses)."""
    sem = asyncio.Semaphore(c)
    system = Solver.system_prompt["main"]

    async def one(q: str) -> None:
        async with sem, session.post(f"{url}/v1/chat/completions", json={
                "model": "fault", "max_tokens": MAX_TOKENS, "temperature": 0.7, "top_p": 1.0,
                "seed": 0, "messages": [{"role": "system", "content": system},
                                        {"role": "user", "content": q}]}) as r:
            assert (await r.json())["choices"][0]["message"]["content"]

    await asyncio.gather(*(one(q) for q in qs))


async def ours(ex: Executor, qs: list[str], c: int) -> None:
    results = await ex.arun_many(qs, concurrency=c)
    bad = [r for r in results if r.status != "ok"]
    assert not bad, bad[0].error


async def timed(url: str, run: Any) -> dict[str, float]:
    s0 = fault_stats(url, keys=False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    await run
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    s1 = fault_stats(url, keys=False)
    return {"wall": wall, "cpu": cpu, "calls": s1["answered"] - s0["answered"],
            "server_cpu": s1["process_cpu_s"] - s0["process_cpu_s"],
            "peak": s1["peak_in_flight"]}


async def main_async(a: argparse.Namespace) -> None:
    litellm = await asyncio.to_thread(import_litellm)
    latency = a.latency_ms / 1000.0
    with spawn_fault_server(FaultConfig(latency_ms=a.latency_ms)) as url:
        ex = Executor(loads_graph(GRAPH.format(url=url, timeout=TIMEOUT_S,
                                                max_tokens=MAX_TOKENS)))
        # warm-up: litellm's first call imports the OpenAI client's resources (~0.5 s)
        await bare(litellm, url, questions("warm-bare", 64), 16)
        await ours(ex, questions("warm-ours", 64), 16)
        if a.profile:
            c = a.profile
            n = min(max(c * a.rounds, a.min_calls), a.max_calls)
            pr = cProfile.Profile()
            pr.enable()
            await ours(ex, questions("profile", n), c)
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(30)
            print(out.getvalue())
            return
        rows = []
        for c in a.levels:
            n = min(max(c * a.rounds, a.min_calls), a.max_calls)
            ideal = c / latency
            runs: dict[str, list[dict[str, float]]] = {"bare": [], "ours": []}
            for rep in range(a.repeats):  # alternate, keep each side's best run
                runs["bare"].append(await timed(
                    url, bare(litellm, url, questions(f"bare{c}.{rep}", n), c)))
                runs["ours"].append(await timed(
                    url, ours(ex, questions(f"ours{c}.{rep}", n), c)))
            if a.raw:
                import aiohttp

                conn = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=conn) as session:
                    w = min([await timed(url, raw(session, url, questions(f"raw{c}.{rep}", n), c))
                             for rep in range(a.repeats)], key=lambda r: r["wall"])
                extra = [f"{n / w['wall']:.0f} ({n / w['wall'] / ideal:.2f})",
                         f"{w['cpu'] / n * 1e3:.2f}"]
            else:
                extra = []
            b = min(runs["bare"], key=lambda r: r["wall"])
            o = min(runs["ours"], key=lambda r: r["wall"])
            assert b["calls"] == n and o["calls"] == n, (b, o, n)
            rb, ro = n / b["wall"], n / o["wall"]
            cb, co = b["cpu"] / n * 1e3, o["cpu"] / n * 1e3
            rows.append([
                c, n, f"{ideal:.0f}",
                f"{rb:.0f} ({rb / ideal:.2f})", f"{ro:.0f} ({ro / ideal:.2f})",
                f"{cb:.2f}", f"{co:.2f}", f"{co - cb:+.2f}",
                f"{b['cpu'] / b['wall']:.0%}", f"{o['cpu'] / o['wall']:.0%}",
                f"{o['server_cpu'] / o['wall']:.0%}", *extra,
            ])
            print(f"  c={c}: bare {rb:.0f}/s, ours {ro:.0f}/s (ideal {ideal:.0f})",
                  flush=True)
    print()
    print(table(["c", "calls", "ideal/s", "bare litellm/s (×ideal)", "tts-graph/s (×ideal)",
                 "bare CPU ms/call", "ours CPU ms/call", "overhead ms/call",
                 "client CPU bare", "client CPU ours", "server CPU",
                 *(["raw aiohttp/s (×ideal)", "raw CPU ms/call"] if a.raw else [])], rows))
    print(f"\nlitellm {importlib.metadata.version('litellm')}; "
          f"latency {a.latency_ms:g} ms; calls per level = min(max(c × {a.rounds}, "
          f"{a.min_calls}), {a.max_calls}); best of {a.repeats} alternating runs per side")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="1,2,4,8,16,32,64,128,256",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--rounds", type=int, default=12, help="calls per level = c × rounds")
    p.add_argument("--min-calls", type=int, default=100)
    p.add_argument("--max-calls", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per side and level, alternating; the best is shown")
    p.add_argument("--raw", action="store_true",
                   help="add a bare aiohttp column: the floor of a client's cost")
    p.add_argument("--profile", type=int, default=0, metavar="C",
                   help="profile tts-graph at concurrency C instead of the table")
    a = p.parse_args()
    print_header("Throughput against a 50 ms loopback server (litellm backend)")
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
