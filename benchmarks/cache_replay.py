"""Re-running a cached graph over 1,000 questions (goal: < 2 s).

A graph (solver with 4 samples -> vote, ``backend: litellm``) is run once over 1,000
questions against the fault-free loopback server (tts_graph.testing, its own process), with
the response cache on: that fills the cache. Then it is re-run with the cache:

- in-process: a fresh ``Executor`` and cache connection, ``arun_many``; the time includes
  building the executor (compile, bindings, opening the cache);
- from the shell: ``tts-graph run GRAPH --input questions.jsonl --cache FILE --out FILE``,
  timed from process start to exit (Python start-up and imports included).

Every replay must send no request (checked on the server's counters) and give the same
answers and sample texts as the filling run.

    .venv/bin/python benchmarks/cache_replay.py [--questions 1000] [--samples 4] [--concurrency 64]
    .venv/bin/python benchmarks/cache_replay.py --profile     # where the replay's time goes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import ROOT, print_header, table

from tts_graph import Executor, loads_graph
from tts_graph.cache import ResponseCache
from tts_graph.testing import FaultConfig, fault_stats, spawn_fault_server

GRAPH = """version: 1
name: cache-replay
models:
  m: {{backend: litellm, model: openai/fault, api_base: "{url}/v1", timeout_s: 30}}
defaults: {{max_tokens: 64, temperature: 0.7}}
nodes:
  solve: {{role: solver, model: m, samples: {samples}}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""


def outcome(r: Any) -> tuple[Any, ...]:
    return r.answer, tuple(c.text for c in r.steps["solve"].candidates)


async def run(text: str, cache_path: Path, qs: list[str], c: int) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    ex = Executor(loads_graph(text), cache=ResponseCache(cache_path))
    results = await ex.arun_many(qs, concurrency=c)
    wall = time.perf_counter() - t0
    await ex.aclose()
    return results, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="replays of each kind (best and all)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    a = p.parse_args()
    if a.quick:
        a.questions, a.repeats = 40, 1
    print_header(f"Cache replay: {a.questions} questions, solver×{a.samples} → vote")
    qs = [f"What is {i} times {i % 17 + 2}, plus {3 * i + 1}?" for i in range(a.questions)]
    with tempfile.TemporaryDirectory() as tmp, \
            spawn_fault_server(FaultConfig(latency_ms=5)) as url:
        d = Path(tmp)
        text = GRAPH.format(url=url, samples=a.samples)
        graph_file, q_file, cache_file = d / "graph.yaml", d / "q.jsonl", d / "cache.sqlite"
        graph_file.write_text(text)
        q_file.write_text("".join(json.dumps({"question": q}) + "\n" for q in qs))

        filled, fill_wall = asyncio.run(run(text, cache_file, qs, a.concurrency))
        assert all(r.status == "ok" for r in filled)
        sent = fault_stats(url, keys=False)["answered"]
        print(f"fill: {len(qs)} queries, {sent} requests, {len(ResponseCache(cache_file))} "
              f"cached samples, {fill_wall:.2f} s "
              f"({cache_file.stat().st_size / 1e6:.1f} MB cache)", flush=True)

        if a.profile:
            pr = cProfile.Profile()
            pr.enable()
            asyncio.run(run(text, cache_file, qs, a.concurrency))
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
            return

        in_proc: list[float] = []
        for _ in range(a.repeats):
            replay, wall = asyncio.run(run(text, cache_file, qs, a.concurrency))
            assert [outcome(r) for r in replay] == [outcome(r) for r in filled]
            assert all(c.cached for r in replay for c in r.calls)
            assert sum(r.usage.billed_usd for r in replay) == 0
            in_proc.append(wall)
        cli: list[float] = []
        exe = Path(sys.executable).with_name("tts-graph")
        cmd = [str(exe) if exe.exists() else sys.executable,
               *([] if exe.exists() else ["-m", "tts_graph"]),
               "run", str(graph_file), "--input", str(q_file), "--cache", str(cache_file),
               "--concurrency", str(a.concurrency), "--out", str(d / "out.jsonl")]
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t0)
            rows = [json.loads(line) for line in (d / "out.jsonl").read_text().splitlines()]
            assert [r["answer"] for r in rows] == [r.answer for r in filled]
            assert all(c["cached"] for r in rows for c in r["calls"])
        assert fault_stats(url, keys=False)["answered"] == sent, "a replay reached the server"

    calls = sum(len(r.calls) for r in filled)
    samples = sum(c.samples for r in filled for c in r.calls)
    print()
    print(table(["replay", "best s", "all runs s", "queries/s", "goal < 2 s"], [
        ["in-process (Executor + arun_many)", f"{min(in_proc):.2f}",
         " / ".join(f"{x:.2f}" for x in in_proc), f"{len(qs) / min(in_proc):.0f}",
         "met" if min(in_proc) < 2 else "missed"],
        ["shell (`tts-graph run --cache`, whole process)", f"{min(cli):.2f}",
         " / ".join(f"{x:.2f}" for x in cli), f"{len(qs) / min(cli):.0f}",
         "met" if min(cli) < 2 else "missed"],
    ]))
    print(f"\n{len(qs)} queries, {calls} calls, {samples} samples, all replayed from the cache; "
          f"concurrency {a.concurrency}; 0 requests reached the server during "
          f"the replays; fill (live, 5 ms server latency) took {fill_wall:.2f} s")


if __name__ == "__main__":
    main()
