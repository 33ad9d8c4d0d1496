"""Calibration of the SIMULATED backend (``backend: sim``) against published reference points.

Reference (Agent-REINFORCE, Wang et al. 2025, "Generalizing Test-time Compute-optimal Scaling as
an Optimizable Graph", MATH): single Llama 1B / 3B / 8B / 70B = 31 / 40 / 49 / 68%; 9 × 1B with
majority voting = 39%; 3 × 3B = 54%. "3 × 3B" is read as three 3B samples aggregated by a 3B
fuser (plain voting of three 3B samples cannot reach 54%: it is shown too, for comparison, with
a 3B judge choosing among the three).

Each configuration is a graph run through the real executor on the simulated task
(``sim_task``): simulated models, simulated questions, real graph execution and accounting.

    .venv/bin/python benchmarks/sim_calibration.py [--questions 2000] [--seed 0] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from typing import Any

from _common import print_header, table, wilson

from tts_graph import Executor, loads_graph
from tts_graph.evaluate.tasks import Task
from tts_graph.sim import PROFILES, sim_task

MODELS = "\n".join(f"  m{name.split('-')[1]}: {{backend: sim, model: {name}}}" for name in PROFILES)
HEAD = f"""version: 1
name: NAME
models:
{MODELS}
defaults: {{max_tokens: 2048, temperature: 0.7}}
nodes:
"""

#: (label, published accuracy or None, nodes, output node)
CONFIGS: list[tuple[str, float | None, str, str]] = [
    ("Llama 1B, one sample", 0.31, "  solve: {role: solver, model: m1b}", "solve"),
    ("Llama 3B, one sample", 0.40, "  solve: {role: solver, model: m3b}", "solve"),
    ("Llama 8B, one sample", 0.49, "  solve: {role: solver, model: m8b}", "solve"),
    ("Llama 70B, one sample", 0.68, "  solve: {role: solver, model: m70b}", "solve"),
    ("9 × 1B, majority vote", 0.39,
     "  solve: {role: solver, model: m1b, samples: 9}\n  vote: {role: vote, inputs: [solve]}",
     "vote"),
    ("3 × 3B → 3B fuser", 0.54,
     "  solve: {role: solver, model: m3b, samples: 3}\n"
     "  fuse: {role: fuser, model: m3b, inputs: [solve]}", "fuse"),
    ("3 × 3B, majority vote (not the reading)", None,
     "  solve: {role: solver, model: m3b, samples: 3}\n  vote: {role: vote, inputs: [solve]}",
     "vote"),
    ("3 × 3B → 3B judge (not the reading)", None,
     "  solve: {role: solver, model: m3b, samples: 3}\n"
     "  judge: {role: judge, model: m3b, inputs: [solve]}", "judge"),
]


def graph_text(label: str, nodes: str, output: str) -> str:
    name = "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())
    return HEAD.replace("NAME", "sim-" + name[:40]) + nodes + f"\noutput: {output}\n"


async def run_config(text: str, task: Task, concurrency: int) -> dict[str, Any]:
    ex = Executor(loads_graph(text))
    t0 = time.perf_counter()
    results = await ex.arun_many([it.question for it in task.items], concurrency=concurrency)
    wall = time.perf_counter() - t0
    await ex.aclose()
    by_level: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    correct = 0
    calls = tokens = 0
    cost = 0.0
    for item, res in zip(task.items, results, strict=True):
        ok = task.scorer.score(item, res.answer, res.text).correct
        correct += ok
        by_level[item.meta["level"]][0] += ok
        by_level[item.meta["level"]][1] += 1
        u = res.usage
        calls += u.calls
        tokens += u.tokens
        cost += u.cost_usd
    n = len(results)
    return {"correct": correct, "n": n, "calls": calls / n, "tokens": tokens / n,
            "cost": cost / n, "wall": wall, "levels": dict(sorted(by_level.items()))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="task seed (difficulties)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a calibrated point is off by more than --tolerance")
    p.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    a = p.parse_args()
    if a.quick:
        a.questions = 100
    print_header(f"Simulated backend calibration: {a.questions} simulated questions "
                 f"(task seed {a.seed}), SIMULATED models")
    task = sim_task(a.questions, a.seed)
    rows, level_rows, off = [], [], []
    for label, published, nodes, output in CONFIGS:
        r = asyncio.run(run_config(graph_text(label, nodes, output), task, a.concurrency))
        acc = r["correct"] / r["n"]
        lo, hi = wilson(r["correct"], r["n"])
        diff = "" if published is None else f"{(acc - published) * 100:+.1f}"
        if published is not None and abs(acc - published) > a.tolerance:
            off.append(label)
        rows.append([label, f"{acc:.1%} [{lo:.1%}, {hi:.1%}]",
                     "—" if published is None else f"{published:.0%}", diff or "—",
                     f"{r['calls']:.1f}", f"{r['tokens']:,.0f}", f"{r['cost'] * 1e6:,.0f}",
                     f"{r['wall']:.2f}"])
        if "one sample" in label:
            level_rows.append([label.split(",")[0]] + [f"{c / t:.0%}" for c, t in
                                                       r["levels"].values()])
    print(table(["configuration (simulated)", "simulated accuracy [95% CI]", "published",
                 "diff (points)", "calls/q", "tokens/q", "µ$/q", "wall s"], rows))
    print("\nSimulated accuracy by MATH-like level (one sample):\n")
    print(table(["model", "L1", "L2", "L3", "L4", "L5"], level_rows))
    if off:
        print(f"\nOFF by more than {a.tolerance:.0%}: {', '.join(off)}")
    return 1 if a.check and off else 0


if __name__ == "__main__":
    sys.exit(main())
