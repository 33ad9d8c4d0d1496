"""Executor overhead: tts-graph's executor vs LangGraph on the same graphs, zero-latency model.

Both sides run the same three graphs with a model that answers instantly, so the time of a
query is the framework's own overhead:

  (a) chain      plan -> solve -> verify          3 model calls in sequence
  (b) fan-out    5 solvers in parallel -> vote    5 model calls, then a join
  (c) self-cons. 1 solver, 16 samples -> vote     16 model calls, then a vote

tts-graph: the graph is a YAML file run by ``Executor`` with ``ScriptedBackend`` (latency 0).
LangGraph: the equivalent ``StateGraph``; each node awaits an equally trivial async function.
For (c) LangGraph's solve node fans out its 16 calls with ``asyncio.gather`` (the same shape
as ours: one step, 16 concurrent samples); ``--send`` adds a second LangGraph variant built with
the Send API (16 parallel node invocations in one superstep).

A third column runs the same graph in bare asyncio (one task per step, samples gathered, no
framework): the floor any async executor pays, including the fake model's own 16 tasks in (c).

Each query runs alone (sequentially, in one event loop); the figure is its wall time from the
call to the result, after warm-up. Blocks of queries alternate between the two frameworks so
that drift in machine speed hits both alike.

    .venv/bin/python benchmarks/executor_overhead.py [--queries 2000] [--warmup 200] [--send]
    .venv/bin/python benchmarks/executor_overhead.py --profile self_consistency
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import operator
import pstats
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from _common import median, percentile, print_header, table
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from tts_graph import Executor, compile_graph, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend

MODELS = "models:\n  m: {backend: scripted, model: zero}\ndefaults: {model: m, max_tokens: 64}\n"

OURS_YAML = {
    "chain": MODELS + """nodes:
  plan: {role: planner}
  solve: {role: solver, inputs: [plan]}
  verify: {role: verifier, inputs: [solve]}
output: verify
""",
    "fan_out_5": MODELS + """nodes:
  s1: {role: solver}
  s2: {role: solver}
  s3: {role: solver}
  s4: {role: solver}
  s5: {role: solver}
  vote: {role: vote, inputs: [s1, s2, s3, s4, s5]}
output: vote
""",
    "self_consistency_16": MODELS + """nodes:
  solve: {role: solver, samples: 16}
  vote: {role: vote, inputs: [solve]}
output: vote
""",
}


def respond(req: GenerationRequest, i: int) -> str:
    return f"Verdict: yes. Answer: {(req.seed + i) % 3}"


def make_ours(name: str) -> Callable[[str], Awaitable[Any]]:
    doc = loads_graph(f"version: 1\nname: {name}\n" + OURS_YAML[name], source=name)
    backend = ScriptedBackend(respond, latency=0.0)
    ex = Executor(compile_graph(doc, backends=["scripted"]), backends={"m": backend})

    async def run(question: str) -> Any:
        res = await ex.arun(question)
        backend.requests.clear()  # the scripted backend keeps requests for tests; not here
        assert res.status == "ok", res.error
        return res

    return run


# ------------------------------------------------------------------------------ LangGraph


async def fake_llm(prompt: str, seed: int) -> str:
    """As trivial as the scripted backend: no await on anything real."""
    return f"Verdict: yes. Answer: {seed % 3}"


def _answer(text: str) -> str:
    return text.rsplit("Answer:", 1)[-1].strip()


def _vote(texts: list[str]) -> str:
    return Counter(_answer(t) for t in texts).most_common(1)[0][0]


class ChainState(TypedDict, total=False):
    question: str
    plan: str
    solve: str
    verify: str


class FanState(TypedDict, total=False):
    question: str
    answers: Annotated[list[str], operator.add]
    final: str


class SampleState(TypedDict):
    question: str
    i: int


def make_langgraph(name: str) -> Callable[[str], Awaitable[Any]]:
    if name == "chain":
        g = StateGraph(ChainState)

        async def plan(s: ChainState) -> dict[str, str]:
            return {"plan": await fake_llm("Plan: " + s["question"], 0)}

        async def solve(s: ChainState) -> dict[str, str]:
            return {"solve": await fake_llm(s["plan"] + "\n" + s["question"], 1)}

        async def verify(s: ChainState) -> dict[str, str]:
            return {"verify": await fake_llm(s["question"] + "\n" + s["solve"], 2)}

        g.add_node("plan", plan)
        g.add_node("solve", solve)
        g.add_node("verify", verify)
        g.add_edge(START, "plan")
        g.add_edge("plan", "solve")
        g.add_edge("solve", "verify")
        g.add_edge("verify", END)
    elif name == "fan_out_5":
        g = StateGraph(FanState)

        def solver(k: int) -> Callable[[FanState], Awaitable[dict[str, list[str]]]]:
            async def node(s: FanState) -> dict[str, list[str]]:
                return {"answers": [await fake_llm(s["question"], k)]}
            return node

        names = [f"s{k}" for k in range(1, 6)]
        for k, n in enumerate(names):
            g.add_node(n, solver(k))
            g.add_edge(START, n)

        async def vote(s: FanState) -> dict[str, str]:
            return {"final": _vote(s["answers"])}

        g.add_node("vote", vote)
        g.add_edge(names, "vote")  # join: runs once all five are done
        g.add_edge("vote", END)
    elif name == "self_consistency_16":
        g = StateGraph(FanState)

        async def solve16(s: FanState) -> dict[str, list[str]]:
            texts = await asyncio.gather(*(fake_llm(s["question"], i) for i in range(16)))
            return {"answers": list(texts)}

        async def vote16(s: FanState) -> dict[str, str]:
            return {"final": _vote(s["answers"])}

        g.add_node("solve", solve16)
        g.add_node("vote", vote16)
        g.add_edge(START, "solve")
        g.add_edge("solve", "vote")
        g.add_edge("vote", END)
    elif name == "self_consistency_16_send":
        g = StateGraph(FanState)

        def fan(s: FanState) -> list[Send]:
            return [Send("sample", {"question": s["question"], "i": i}) for i in range(16)]

        async def sample(s: SampleState) -> dict[str, list[str]]:
            return {"answers": [await fake_llm(s["question"], s["i"])]}

        async def vote_send(s: FanState) -> dict[str, str]:
            return {"final": _vote(s["answers"])}

        g.add_node("sample", sample)
        g.add_node("vote", vote_send)
        g.add_conditional_edges(START, fan, ["sample"])
        g.add_edge("sample", "vote")
        g.add_edge("vote", END)
    else:
        raise ValueError(name)
    app = g.compile()

    async def run(question: str) -> Any:
        out = await app.ainvoke({"question": question})
        assert out.get("verify") or out.get("final") is not None
        return out

    return run


# ------------------------------------------------------------------------------ floor


def make_floor(name: str) -> Callable[[str], Awaitable[Any]]:
    """The same graph in bare asyncio, no framework: one task per step awaiting its inputs
    (the as-ready shape), the samples of a step gathered. What any async executor pays."""

    async def step(deps: list[asyncio.Task[Any]], fn: Callable[[list[Any]], Awaitable[Any]]
                   ) -> Any:
        return await fn([await d for d in deps])

    async def run(question: str) -> Any:
        if name == "chain":
            a = asyncio.create_task(step([], lambda _: fake_llm(question, 0)))
            b = asyncio.create_task(step([a], lambda x: fake_llm(x[0] + question, 1)))
            c = asyncio.create_task(step([b], lambda x: fake_llm(x[0] + question, 2)))
            tasks = [a, b, c]
        elif name == "fan_out_5":
            tasks = [asyncio.create_task(step([], lambda _, k=k: fake_llm(question, k)))
                     for k in range(5)]

            async def vote(xs: list[Any]) -> str:
                return _vote(xs)

            tasks.append(asyncio.create_task(step(list(tasks), vote)))
        else:
            async def sixteen(_: list[Any]) -> list[str]:
                return list(await asyncio.gather(*(fake_llm(question, i) for i in range(16))))

            async def vote16(xs: list[Any]) -> str:
                return _vote(xs[0])

            a = asyncio.create_task(step([], sixteen))
            tasks = [a, asyncio.create_task(step([a], vote16))]
        return (await asyncio.gather(*tasks))[-1]

    return run


# ------------------------------------------------------------------------------ timing


async def time_block(run: Callable[[str], Awaitable[Any]], n: int, start: int) -> list[float]:
    out: list[float] = []
    for i in range(start, start + n):
        q = f"What is {i} + {i % 7}?"
        t0 = time.perf_counter()
        await run(q)
        out.append(time.perf_counter() - t0)
    return out


async def measure(runners: dict[str, Callable[[str], Awaitable[Any]]], queries: int,
                  warmup: int, block: int) -> dict[str, list[float]]:
    for run in runners.values():
        await time_block(run, warmup, 0)
    times: dict[str, list[float]] = {k: [] for k in runners}
    done = 0
    while done < queries:
        n = min(block, queries - done)
        for k, run in runners.items():
            gc.collect()
            times[k].extend(await time_block(run, n, warmup + done))
        done += n
    return times


def us(x: float) -> str:
    return f"{x * 1e6:,.0f}"


async def profile(name: str, queries: int) -> None:
    run = make_ours(name)
    await time_block(run, 100, 0)
    prof = cProfile.Profile()
    prof.enable()
    await time_block(run, queries, 100)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    print(f"### cProfile of ours on {name}, {queries} queries, by own time\n")
    print("```")
    print(buf.getvalue())
    print("```")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    print("### by cumulative time\n\n```")
    print(buf.getvalue())
    print("```")


async def main_async(args: argparse.Namespace) -> None:
    if args.profile:
        await profile(args.profile, args.queries)
        return
    from importlib.metadata import version

    print(f"- langgraph {version('langgraph')}, tts-graph executor "
          f"(ScriptedBackend, latency 0); {args.queries} timed queries per cell after "
          f"{args.warmup} warm-up, one query at a time, blocks of {args.block} alternating\n")
    rows: list[list[str]] = []
    graphs = list(OURS_YAML)
    verdicts: list[tuple[str, float]] = []
    for name in graphs:
        runners = {"ours": make_ours(name), "langgraph": make_langgraph(name),
                   "floor": make_floor(name)}
        if args.send and name == "self_consistency_16":
            runners["langgraph_send"] = make_langgraph("self_consistency_16_send")
        t = await measure(runners, args.queries, args.warmup, args.block)
        om, o90 = median(t["ours"]), percentile(t["ours"], 90)
        fm = median(t["floor"])
        for lg in [k for k in runners if k.startswith("langgraph")]:
            lm, l90 = median(t[lg]), percentile(t[lg], 90)
            label = name + (" (LangGraph: Send API)" if lg.endswith("send") else
                            " (LangGraph: gather)" if name.startswith("self") else "")
            rows.append([label, us(om), us(o90), us(lm), us(l90),
                         f"{om / lm:.3f}", f"{o90 / l90:.3f}", us(fm),
                         f"{(om - fm) / (lm - fm):.3f}"])
            verdicts.append((label, om / lm))
        print(f"  measured {name}", flush=True)
    print()
    print(table(["graph", "ours median µs", "ours p90 µs", "LangGraph median µs",
                 "LangGraph p90 µs", "ratio median", "ratio p90", "bare asyncio median µs",
                 "ratio above bare asyncio"], rows))
    print("\n(bare asyncio: the same graph as plain tasks and gathers, no framework; the last "
          "column is (ours - bare) / (LangGraph - bare), medians)")
    print()
    for label, ratio in verdicts:
        ok = "MET" if ratio <= 0.1 else "NOT MET"
        print(f"- goal ours <= 0.1x LangGraph per-query overhead, {label}: "
              f"{ratio:.3f}x -> {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description="tts-graph executor vs LangGraph overhead")
    ap.add_argument("--queries", type=int, default=2000, help="timed queries per cell")
    ap.add_argument("--warmup", type=int, default=200, help="untimed queries first")
    ap.add_argument("--block", type=int, default=100, help="queries per alternating block")
    ap.add_argument("--send", action="store_true",
                    help="also time a LangGraph self-consistency built with the Send API")
    ap.add_argument("--profile", choices=list(OURS_YAML),
                    help="instead of comparing, cProfile our executor on one graph")
    ap.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.warmup, args.block = 20, 5, 10
    print_header("Executor overhead: tts-graph vs LangGraph (zero-latency model)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
