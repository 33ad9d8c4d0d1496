"""Adaptive width vs fixed width self-consistency on the easy set, real embedded SmolLM2.

Three graphs, identical except for the solver's width, each followed by a majority vote:

  fixed       samples: 16
  settled     samples: {min: 2, max: 16, stop: settled}     (stop once the leader cannot be
                                                               overtaken by the samples left)
  confidence  samples: {min: 2, max: 16, stop: confidence}  (stop once P(leader ahead) >= 0.95)

Sample i of a query uses seed seed+i in every graph, so an adaptive run draws a prefix of the
fixed run's samples: the comparison is paired. The table shows samples drawn, accuracy with a
95% Wilson interval, tokens and wall time. Goal: adaptive draws <= 0.4x the samples of fixed
for an accuracy drop within the interval.

    .venv/bin/python benchmarks/adaptive_width.py [--limit 24] [--max-tokens 96] [--replay]
    .venv/bin/python benchmarks/adaptive_width.py --variants fixed --replay   # quick
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from _common import fmt_acc, is_correct, load_easy, print_header, run_on_set, table, wilson

from tts_graph import Executor, compile_graph, loads_graph
from tts_graph.roles.adaptive import should_stop
from tts_graph.spec import AdaptiveSamples

#: rules replayed on the fixed run's samples (--replay): (label, AdaptiveSamples fields)
REPLAY_RULES: list[tuple[str, dict[str, Any]]] = [
    ("settled, min 2", {"min": 2, "stop": "settled"}),
    ("settled, min 4", {"min": 4, "stop": "settled"}),
    ("confidence 0.95, min 2", {"min": 2, "stop": "confidence", "confidence": 0.95}),
    ("confidence 0.90, min 2", {"min": 2, "stop": "confidence", "confidence": 0.90}),
    ("confidence 0.80, min 2", {"min": 2, "stop": "confidence", "confidence": 0.80}),
    ("confidence 0.80, min 4", {"min": 4, "stop": "confidence", "confidence": 0.80}),
]

WIDTHS = {
    "fixed": "16",
    "settled": "{{min: 2, max: 16, stop: settled, batch: {batch}}}",
    "confidence": "{{min: 2, max: 16, stop: confidence, confidence: {conf}, batch: {batch}}}",
}


def graph_text(name: str, args: argparse.Namespace) -> str:
    samples = WIDTHS[name].format(batch=args.batch, conf=args.confidence)
    layout = ""
    if args.instances or args.threads:
        opts = [f"{k}: {v}" for k, v in (("instances", args.instances),
                                           ("threads", args.threads)) if v]
        layout = ", options: {" + ", ".join(opts) + "}"
    return f"""version: 1
name: width_{name}
models:
  small: {{backend: local, model: smollm2-135m{layout}}}
defaults: {{max_tokens: {args.max_tokens}, temperature: {args.temperature}, seed: {args.seed}}}
nodes:
  solve: {{role: solver, model: small, samples: {samples}}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""


async def main_async(args: argparse.Namespace) -> None:
    rows = load_easy(args.limit)
    variants = [v for v in args.variants.split(",") if v]
    out: dict[str, dict[str, Any]] = {}
    for name in variants:
        ex = Executor(compile_graph(loads_graph(graph_text(name, args), source=name)))
        if name == variants[0]:  # load the model outside the timed runs
            await ex.arun("What is 1 + 1?")
        results, wall = await run_on_set(ex, rows, args.concurrency, progress=name)
        correct = [is_correct(r.answer, row["answer"]) for r, row in zip(results, rows,
                                                                           strict=True)]
        samples = [r.usage.samples for r in results]
        out[name] = {
            "correct": correct, "samples": samples, "wall": wall,
            "answers": [r.answer for r in results],
            "samples_answers": [[c.answer for c in r.steps["solve"].candidates]
                                if "solve" in r.steps else [] for r in results],
            "tokens": sum(r.usage.tokens for r in results),
            "completion": sum(r.usage.completion_tokens for r in results),
            "status": [r.status for r in results],
        }
        await ex.aclose()
    n = len(rows)
    base = out.get("fixed")
    table_rows = []
    for name, o in out.items():
        k = sum(o["correct"])
        s = sum(o["samples"])
        agree = (sum(a == b for a, b in zip(o["answers"], base["answers"], strict=True))
                 if base else None)
        table_rows.append([
            name, f"{s} ({s / n:.1f}/q)",
            f"{s / sum(base['samples']):.2f}" if base else "-",
            fmt_acc(k, n), f"{o['tokens'] / n:,.0f} ({o['completion'] / n:,.0f} compl.)",
            f"{o['wall']:.0f} s ({o['wall'] / n:.2f} s/q)",
            f"{agree}/{n}" if agree is not None else "-",
            ", ".join(f"{st}:{o['status'].count(st)}" for st in sorted(set(o["status"]))),
        ])
    print(f"- model smollm2-135m (embedded), {n} questions of the easy set, max_tokens "
          f"{args.max_tokens}, temperature {args.temperature}, seed {args.seed}, "
          f"batch {args.batch}, confidence {args.confidence}, {args.concurrency} "
          "question(s) at a time\n")
    print(table(["width", "samples drawn", "samples vs fixed", "accuracy [95% Wilson]",
                 "tokens per q", "wall time", "same answer as fixed", "status"], table_rows))
    if base:
        lo, hi = wilson(sum(base["correct"]), n)
        print()
        for name, o in out.items():
            if name == "fixed":
                continue
            ratio = sum(o["samples"]) / sum(base["samples"])
            acc, bacc = sum(o["correct"]) / n, sum(base["correct"]) / n
            within = acc >= lo
            ok = ratio <= 0.4 and within
            print(f"- goal {name}: samples {ratio:.2f}x fixed (<= 0.4x: "
                  f"{'yes' if ratio <= 0.4 else 'no'}); accuracy {acc:.1%} vs fixed "
                  f"{bacc:.1%}, fixed's 95% CI [{lo:.1%}, {hi:.1%}] "
                  f"({'within' if within else 'below'}) -> {'MET' if ok else 'NOT MET'}")
        print()
        print(leader_histogram(base["samples_answers"]))
        if args.replay:
            print()
            print(replay(base["samples_answers"], rows, args))


def majority(answers: list[str | None]) -> str | None:
    """The vote node's rule: most votes, ties to the first seen."""
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return max(counts, key=lambda a: counts[a]) if counts else None


def leader_histogram(per_q: list[list[str | None]]) -> str:
    """How concentrated the fixed run's 16 answers are: the leader's share per question."""
    shares = []
    for answers in per_q:
        valid = [a for a in answers if a is not None]
        top = max((valid.count(a) for a in set(valid)), default=0)
        shares.append(top)
    buckets = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 12), (13, 16)]
    cells = [f"{lo}-{hi}: {sum(lo <= s <= hi for s in shares)}" for lo, hi in buckets]
    return ("- votes for the leading answer among the fixed run's 16 samples, questions per "
            "bucket: " + ", ".join(cells))


def replay(per_q: list[list[str | None]], rows: list[dict[str, str]],
           args: argparse.Namespace) -> str:
    """Stopping rules applied to prefixes of the fixed run's samples. Sample i has the same
    seed in every graph, so this is what an adaptive run with that rule draws and answers
    (up to floating-point reproducibility of the backend)."""
    n = len(rows)
    full = sum(len(a) for a in per_q)
    out_rows = []
    for label, fields in REPLAY_RULES:
        rule = AdaptiveSamples(max=16, batch=args.batch, **fields)
        drawn, correct = 0, 0
        for answers, row in zip(per_q, rows, strict=True):
            k = 0
            while k < len(answers) and not should_stop(answers[:k], rule):
                want = rule.min - k if k < rule.min else rule.batch
                k = min(len(answers), k + max(1, min(want, rule.max - k)))
            drawn += k
            correct += is_correct(majority(answers[:k]), row["answer"])
        out_rows.append([label, f"{drawn} ({drawn / n:.1f}/q)", f"{drawn / full:.2f}",
                         fmt_acc(correct, n)])
    return ("Replay of stopping rules on the fixed run's samples (batch "
            f"{args.batch}, max 16):\n\n" + table(["rule", "samples drawn", "vs fixed",
                                                    "accuracy [95% Wilson]"], out_rows))


def main() -> None:
    ap = argparse.ArgumentParser(description="adaptive vs fixed width on the easy set")
    ap.add_argument("--limit", type=int, default=24,
                    help="first N questions (default 24: about 15 min for all 3 graphs)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2, help="adaptive: samples between checks")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--concurrency", type=int, default=1, help="questions at a time")
    ap.add_argument("--variants", default="fixed,settled,confidence",
                    help="graphs to run; 'fixed' alone with --replay is the quick way")
    ap.add_argument("--replay", action="store_true",
                    help="also replay more stopping rules on the fixed run's samples")
    ap.add_argument("--instances", type=int, default=0, help="model option (0: default)")
    ap.add_argument("--threads", type=int, default=0, help="model option (0: default)")
    ap.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    args = ap.parse_args()
    if args.quick:  # the fixed graph and the replay: every table, a few seconds
        args.limit, args.max_tokens, args.variants, args.replay = 2, 16, "fixed", True
    print_header("Adaptive width vs fixed 16 samples (easy set, SmolLM2-135M)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
