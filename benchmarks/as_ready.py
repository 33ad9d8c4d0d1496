"""As-ready scheduling: does a step start the moment its own inputs are done?

Two branches joined: branch A is a chain of three 10 ms model steps, branch B one 100 ms model
step; a join step takes both. The critical path is B + join (100 ms + the join's own time:
``--join-ms``, 0 by default, where the join is a vote with no model call). An executor that
starts each step as soon as its inputs are ready finishes in about the critical path; one that
runs in supersteps (all steps of a round wait for the slowest) takes 100 + 10 + 10 + join.

tts-graph: the YAML graph run by ``Executor`` with ``ScriptedBackend``s whose latency is the
step time (asyncio.sleep). LangGraph: the equivalent ``StateGraph``, each node awaiting
asyncio.sleep of the same time. Queries run one at a time, alternating between frameworks.

    .venv/bin/python benchmarks/as_ready.py [--queries 40] [--slow-ms 100] [--fast-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from _common import median, percentile, print_header, table
from langgraph.graph import END, START, StateGraph

from tts_graph import Executor, compile_graph, loads_graph
from tts_graph.backends.scripted import ScriptedBackend


def ours(fast_s: float, slow_s: float, join_s: float) -> Callable[[str], Awaitable[Any]]:
    join = ("  join: {role: vote, inputs: [a3, b]}\n" if join_s == 0 else
            "  join: {role: fuser, model: joiner, inputs: [a3, b]}\n")
    text = f"""version: 1
name: as_ready
models:
  fast: {{backend: scripted, model: fast}}
  slow: {{backend: scripted, model: slow}}
  joiner: {{backend: scripted, model: joiner}}
defaults: {{max_tokens: 32}}
nodes:
  a1: {{role: planner, model: fast}}
  a2: {{role: planner, model: fast, inputs: [a1]}}
  a3: {{role: solver, model: fast, inputs: [a2]}}
  b: {{role: solver, model: slow}}
{join}output: join
"""
    backends = {
        "fast": ScriptedBackend(lambda r, i: "Answer: 3", latency=fast_s),
        "slow": ScriptedBackend(lambda r, i: "Answer: 3", latency=slow_s),
        "joiner": ScriptedBackend(lambda r, i: "Answer: 3", latency=join_s),
    }
    if join_s == 0:
        del backends["joiner"]
        text = text.replace("  joiner: {backend: scripted, model: joiner}\n", "")
    ex = Executor(compile_graph(loads_graph(text), backends=["scripted"]), backends=backends)

    async def run(q: str) -> Any:
        res = await ex.arun(q)
        for b in backends.values():
            b.requests.clear()
        assert res.status == "ok" and res.answer == "3", (res.status, res.error, res.answer)
        return res

    return run


class State(TypedDict, total=False):
    question: str
    a: str
    answers: Annotated[list[str], operator.add]
    final: str


def langgraph(fast_s: float, slow_s: float, join_s: float) -> Callable[[str], Awaitable[Any]]:
    async def llm(prompt: str, latency: float) -> str:
        if latency > 0:
            await asyncio.sleep(latency)
        return "Answer: 3"

    async def a1(s: State) -> dict[str, Any]:
        return {"a": await llm(s["question"], fast_s)}

    async def a2(s: State) -> dict[str, Any]:
        return {"a": await llm(s["a"], fast_s)}

    async def a3(s: State) -> dict[str, Any]:
        return {"answers": [await llm(s["a"], fast_s)]}

    async def b(s: State) -> dict[str, Any]:
        return {"answers": [await llm(s["question"], slow_s)]}

    async def join(s: State) -> dict[str, Any]:
        if join_s > 0:
            return {"final": await llm("\n".join(s["answers"]), join_s)}
        return {"final": max(s["answers"], key=s["answers"].count)}

    g = StateGraph(State)
    for name, fn in (("a1", a1), ("a2", a2), ("a3", a3), ("b", b), ("join", join)):
        g.add_node(name, fn)
    g.add_edge(START, "a1")
    g.add_edge(START, "b")
    g.add_edge("a1", "a2")
    g.add_edge("a2", "a3")
    g.add_edge(["a3", "b"], "join")
    g.add_edge("join", END)
    app = g.compile()

    async def run(q: str) -> Any:
        out = await app.ainvoke({"question": q})
        assert out["final"] == "Answer: 3" or out["final"].endswith("3"), out
        return out

    return run


async def main_async(args: argparse.Namespace) -> None:
    fast, slow, join = args.fast_ms / 1e3, args.slow_ms / 1e3, args.join_ms / 1e3
    critical = slow + join
    superstep = slow + 2 * fast + join
    runners = {"tts-graph": ours(fast, slow, join), "LangGraph": langgraph(fast, slow, join)}
    for run in runners.values():
        for i in range(args.warmup):
            await run(f"warm {i}")
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(args.queries):
        for k, run in runners.items():
            t0 = time.perf_counter()
            await run(f"q {i}")
            times[k].append(time.perf_counter() - t0)
    print(f"- branch A: 3 x {args.fast_ms:g} ms chained; branch B: 1 x {args.slow_ms:g} ms; "
          f"join: {args.join_ms:g} ms ({'vote, no model call' if join == 0 else 'model call'})")
    print(f"- critical path {critical * 1e3:.1f} ms; a superstep schedule would take "
          f"{superstep * 1e3:.1f} ms; {args.queries} queries each after {args.warmup} warm-up\n")
    rows = []
    for k, xs in times.items():
        m, p90 = median(xs), percentile(xs, 90)
        rows.append([k, f"{m * 1e3:.1f}", f"{p90 * 1e3:.1f}", f"{min(xs) * 1e3:.1f}",
                     f"{m / critical:.3f}", f"{p90 / critical:.3f}"])
    print(table(["executor", "median ms", "p90 ms", "min ms", "median / critical path",
                 "p90 / critical path"], rows))
    r = median(times["tts-graph"]) / critical
    print(f"\n- goal tts-graph <= 1.05x critical path: {r:.3f}x -> "
          f"{'MET' if r <= 1.05 else 'NOT MET'}")


def main() -> None:
    ap = argparse.ArgumentParser(description="as-ready scheduling vs the critical path")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--fast-ms", type=float, default=10.0, help="each step of branch A")
    ap.add_argument("--slow-ms", type=float, default=100.0, help="the one step of branch B")
    ap.add_argument("--join-ms", type=float, default=0.0,
                    help="join step time (0: a vote without a model call)")
    ap.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.warmup = 5, 1
    print_header("As-ready scheduling: wall time vs critical path")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
