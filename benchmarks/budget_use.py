"""How per-query budgets are used: planned whole, spent in waves, output always reached.

For each budget B and graph shape, every query runs with ``budget: {max_tokens_per_query: B}``
and the table reports, per (backend, graph, B): how many queries had a plan of the whole graph
that fits when they started (and, "late", how many found one once their first replies came
back with the server's usage, by the counter's estimate none had fitted), how many of those
reached their output (the output step made its call), the share of B spent (mean and min;
and over the queries where a step stopped short of the samples it wanted — the goal there is
>= 80%), samples drawn of those wanted, the most committed at once (spent plus reserved) as a
share of B, and overruns (spent > B; the goal is 0). "left out": samples drawn, then left out
of the prompts that would quote them (their replies ran longer than the plan reserved for
them there, ``QUOTE_MARGIN``), over all the row's queries.

Shapes: ``solve_judge`` (solver × 16, 40 tokens → judge; the case of issue 15),
``best_of_n_judge`` and ``mixture_of_agents`` (graphs/). Backends:

- loopback: ``backend: litellm`` against the fault server (tts_graph.testing, no faults, its
  own process): replies are about 9 tokens, answers random, so no accuracy;
- SIMULATED: ``backend: sim`` on the simulated task, with accuracy. Its completions run to
  hundreds of tokens, so its graphs allow more tokens and its budgets go up to 30,000.

Before that table, what budgeting costs in the executor: ``solve_judge`` on the scripted
backend (no I/O, replies of about 9 words), per query: planning alone (the ledger a budgeted
query builds when it starts: dry runs of the graph to choose widths), and the whole query
unbudgeted and budgeted (planning, and the dry runs each wave's grants make). Best of 3.

    .venv/bin/python benchmarks/budget_use.py [--questions 30] [--sim-questions 200]
    .venv/bin/python benchmarks/budget_use.py --quick     # a few questions: it runs, no figures
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import print_header, table, wilson

from tts_graph import Executor, QueryResult, loads_graph

BUDGETS = (300, 1000, 3000, 10000)
SIM_BUDGETS = (*BUDGETS, 30000)

#: graph shapes: name → nodes (with {a}/{b} for the two models and {s}/{j}/{f} token caps)
SHAPES: dict[str, tuple[str, str]] = {
    "solve_judge": ("""
  solve: {{role: solver, model: a, samples: 16, max_tokens: {s}}}
  judge: {{role: judge, model: a, inputs: [solve], mode: select, max_tokens: {j}}}
""", "judge"),
    "best_of_n_judge": ("""
  solve: {{role: solver, model: a, samples: 4, max_tokens: {f}}}
  judge: {{role: judge, model: a, inputs: [solve], mode: select, temperature: 0.0,
          max_tokens: {j2}}}
""", "judge"),
    "mixture_of_agents": ("""
  propose_small: {{role: solver, model: a, samples: 2, max_tokens: {f}}}
  propose_base: {{role: solver, model: b, samples: 2, max_tokens: {f}}}
  fuse: {{role: fuser, model: a, inputs: [propose_small, propose_base], samples: 2,
         max_tokens: {f}}}
  final: {{role: fuser, model: a, inputs: [fuse], temperature: 0.2, max_tokens: {f}}}
""", "final"),
}

#: token caps per backend: the loopback graphs are the issue's and graphs/' own; the simulated
#: ones give its long completions room to finish (a cut simulated completion loses its answer)
CAPS = {"loopback": {"s": 40, "j": 40, "j2": 16, "f": 128},
        "sim": {"s": 512, "j": 160, "j2": 160, "f": 640}}


def graph_text(shape: str, backend: str, budget: int, url: str | None) -> str:
    nodes, output = SHAPES[shape]
    if backend == "sim":
        models = ("  a: {backend: sim, model: llama-3b}\n"
                  "  b: {backend: sim, model: llama-1b}\n")
    else:
        entry = f'{{backend: litellm, model: openai/fault, api_base: "{url}/v1", timeout_s: 30}}'
        models = f"  a: {entry}\n  b: {entry}\n"
    return (f"version: 1\nname: {shape}\nmodels:\n{models}"
            "defaults: {temperature: 0.7}\nnodes:" + nodes.format(**CAPS[backend])
            + f"output: {output}\nbudget: {{max_tokens_per_query: {budget}}}\n")


@dataclass
class Tally:
    queries: int = 0
    fits: int = 0
    late: int = 0
    reached: int = 0
    reached_all: int = 0
    overruns: int = 0
    correct: int = 0
    shares: list[float] = field(default_factory=list)
    short_shares: list[float] = field(default_factory=list)
    peak: float = 0.0
    wanted: int = 0
    drawn: int = 0
    dropped: int = 0

    def add(self, res: QueryResult, output: str, budget: int, correct: bool) -> None:
        report = res.budget
        assert report is not None
        self.queries += 1
        self.correct += int(correct)
        spent = res.usage.tokens
        self.overruns += int(spent > budget)
        self.shares.append(spent / budget)
        self.peak = max(self.peak, report.reserved_peak.tokens / budget)
        self.fits += int(report.plan_fits)
        self.late += int(report.planned_late)
        reached = any(c.step == output and c.error is None for c in res.calls)
        self.reached_all += int(reached)
        if report.plan_fits:
            self.reached += int(reached)
        if any(s["drawn"] < s["wanted"] for s in report.steps.values()):
            self.short_shares.append(spent / budget)
        for s in report.steps.values():
            self.wanted += s["wanted"]
            self.drawn += s["drawn"]
            self.dropped += s.get("dropped", 0)

    def row(self, scored: bool) -> list[str]:
        def share(xs: list[float]) -> str:
            return f"{sum(xs) / len(xs):.0%} (min {min(xs):.0%})" if xs else "—"

        acc = "—"
        if scored:
            lo, hi = wilson(self.correct, self.queries)
            acc = f"{self.correct / self.queries:.0%} [{lo:.0%}, {hi:.0%}]"
        late = f" (+{self.late} late)" if self.late else ""
        return [f"{self.fits}/{self.queries}{late}", f"{self.reached}/{self.fits}",
                f"{self.reached_all}/{self.queries}",
                share(self.shares), share(self.short_shares),
                f"{self.drawn / self.queries:.1f}/{self.wanted / self.queries:.1f}",
                str(self.dropped),
                f"{self.peak:.0%}", str(self.overruns), acc]


def planning_cost(n: int) -> list[list[str]]:
    """Per-query milliseconds: planning alone, and whole queries unbudgeted and budgeted."""
    from tts_graph.backends.base import Backend
    from tts_graph.backends.scripted import ScriptedBackend
    from tts_graph.budget import QueryBudget
    from tts_graph.budget_plan import BudgetLedger, costing_of
    from tts_graph.compile import compile_graph
    from tts_graph.types import Message

    def reply(req: Any, i: int) -> str:
        v = (req.seed + i) % 7
        return f"Working {req.seed + i} out, the result is {v}.\nAnswer: {v}"

    def count(_m: str, msgs: tuple[Message, ...]) -> int:
        return Backend.count_tokens(ScriptedBackend(reply), msgs)

    def best(f: Any) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            times.append((time.perf_counter() - t) / n * 1e3)
        return min(times)

    qs = [f"What is {i} times {i % 17 + 2}, plus {3 * i + 1}?" for i in range(n)]

    async def queries(ex: Executor) -> None:
        for q in qs:
            await ex.arun(q)

    rows = []
    for budget in (None, *BUDGETS):
        text = graph_text("solve_judge", "loopback", budget or 0, None).replace(
            'backend: litellm, model: openai/fault, api_base: "None/v1", timeout_s: 30',
            "backend: scripted, model: m")
        if budget is None:
            text = text[: text.index("budget:")]
        doc = loads_graph(text)
        ex = Executor(doc, backends={"a": ScriptedBackend(reply), "b": ScriptedBackend(reply)})
        asyncio.run(ex.arun(qs[0]))  # warm up
        run_ms = best(lambda ex=ex: asyncio.run(queries(ex)))
        plan_ms = "—"
        if budget is not None:
            graph = compile_graph(doc, backends=["scripted"])
            cost = costing_of(graph.spec.models["a"])

            def plan(g: Any = graph, c: Any = cost) -> None:
                for q in qs:
                    BudgetLedger(g, q, QueryBudget(g.spec.budget), count, lambda _m: c, {})

            plan_ms = f"{best(plan):.2f}"
        rows.append(["solve_judge", f"{budget:,}" if budget else "none", plan_ms,
                     f"{run_ms:.2f}"])
    return rows


HEADERS = ["backend", "graph", "B", "plan fits", "output reached where it fits",
           "output reached, all", "spent / B",
           "spent / B, more wanted", "samples drawn/wanted", "left out", "peak committed",
           "overruns",
           "accuracy [95% CI]"]


async def run_rows(backend: str, questions: list[str], golds: list[str] | None,
                   scorer: Any, budgets: tuple[int, ...], url: str | None,
                   concurrency: int) -> list[list[str]]:
    rows = []
    for shape, (_, output) in SHAPES.items():
        for budget in budgets:
            ex = Executor(loads_graph(graph_text(shape, backend, budget, url)))
            results = await ex.arun_many(questions, concurrency=concurrency)
            await ex.aclose()
            tally = Tally()
            for i, res in enumerate(results):
                ok = False
                if golds is not None:
                    ok = bool(scorer.score(golds[i], res.answer, res.text).correct)
                tally.add(res, output, budget, ok)
            label = "SIMULATED" if backend == "sim" else "loopback"
            rows.append([label, shape, f"{budget:,}", *tally.row(golds is not None)])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=30, help="loopback questions")
    p.add_argument("--sim-questions", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--no-loopback", action="store_true")
    p.add_argument("--quick", action="store_true", help="3 questions each: it runs")
    p.add_argument("--planning-only", action="store_true",
                   help="only the table of what budgeting costs in the executor")
    a = p.parse_args()
    if a.quick:
        a.questions, a.sim_questions = 3, 3
    print_header(f"Budget use: B in {', '.join(f'{b:,}' for b in BUDGETS)} tokens a query, "
                 f"{a.questions} loopback and {a.sim_questions} SIMULATED questions")
    print(table(["graph (scripted backend)", "B", "planning ms/query", "query ms"],
                planning_cost(20 if a.quick else 300)))
    print()
    if a.planning_only:
        return 0
    rows: list[list[str]] = []
    if not a.no_loopback:
        from tts_graph.testing import FaultConfig, spawn_fault_server

        qs = [f"What is {i} times {i % 17 + 2}, plus {3 * i + 1}?" for i in range(a.questions)]
        with spawn_fault_server(FaultConfig()) as url:
            rows += asyncio.run(run_rows("loopback", qs, None, None, BUDGETS, url,
                                         a.concurrency))
    from tts_graph.sim import sim_task

    task = sim_task(a.sim_questions)
    rows += asyncio.run(run_rows("sim", [it.question for it in task.items], task.items,
                                 task.scorer, SIM_BUDGETS, None, a.concurrency))
    print(table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
