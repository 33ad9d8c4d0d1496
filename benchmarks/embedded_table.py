"""Preset graphs on the easy set with the embedded models: accuracy, tokens, wall time.

Runs each graph file (default: graphs/single.yaml and graphs/self_consistency.yaml, which use
SmolLM2-135M through the embedded llama.cpp backend) on the first ``--limit`` questions of the
packaged easy set and prints accuracy with a 95% Wilson interval, tokens per question and wall
time per question (questions run ``--concurrency`` at a time, 1 by default, so the wall time
per question is one query's latency).

    .venv/bin/python benchmarks/embedded_table.py [--limit 60] [graphs/a.yaml graphs/b.yaml ...]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from _common import ROOT, fmt_acc, is_correct, load_easy, print_header, run_on_set, table

from tts_graph import Executor

DEFAULT_GRAPHS = [ROOT / "graphs" / "single.yaml", ROOT / "graphs" / "self_consistency.yaml"]


async def main_async(args: argparse.Namespace) -> None:
    rows = load_easy(args.limit)
    n = len(rows)
    out = []
    warmed = False
    for path in args.graphs:
        ex = Executor(path)
        if not warmed:  # load the model weights outside the timed run
            await ex.arun("What is 1 + 1?")
            warmed = True
        results, wall = await run_on_set(ex, rows, args.concurrency, progress=path.stem)
        k = sum(is_correct(r.answer, row["answer"]) for r, row in zip(results, rows,
                                                                        strict=True))
        usage = [r.usage for r in results]
        statuses = [r.status for r in results]
        out.append([
            ex.graph.name,
            str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            fmt_acc(k, n),
            f"{sum(u.tokens for u in usage) / n:,.0f}",
            f"{sum(u.completion_tokens for u in usage) / n:,.0f}",
            f"{sum(u.samples for u in usage) / n:.1f}",
            f"{wall / n:.2f}",
            ", ".join(f"{s}:{statuses.count(s)}" for s in sorted(set(statuses))),
        ])
        await ex.aclose()
    print(f"- {n} questions of the easy set (tts_graph/data/easy_math.jsonl), "
          f"{args.concurrency} at a time; sampling settings as in each graph file\n")
    print(table(["graph", "file", "accuracy [95% Wilson]", "tokens / q", "completion tok / q",
                 "samples / q", "wall s / q", "status"], out))


def main() -> None:
    ap = argparse.ArgumentParser(description="graph files on the easy set, embedded models")
    ap.add_argument("graphs", nargs="*", type=Path, default=DEFAULT_GRAPHS,
                    help="graph files (default: graphs/single.yaml graphs/self_consistency.yaml)")
    ap.add_argument("--limit", type=int, default=60, help="first N questions (default 60)")
    ap.add_argument("--concurrency", type=int, default=1, help="questions at a time")
    ap.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    args = ap.parse_args()
    if args.quick:
        args.limit = 1
    args.graphs = [p.resolve() for p in args.graphs]
    print_header("Embedded presets on the easy set")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
