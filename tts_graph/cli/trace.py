"""``tts-graph trace``: summarise trace files written with --trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import _fail, out


def trace_(
    files: Annotated[list[Path], typer.Argument(help="trace file(s) written with --trace")],
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Summarise trace file(s): calls, tokens, cost, latency percentiles, cache hits and
    errors, per node and per model."""
    from ..tracing import TraceFileError, summarize_trace

    try:
        s = summarize_trace(files)
    except TraceFileError as exc:
        raise _fail([str(exc)]) from None
    if as_json:
        print(json.dumps(s, indent=2))
        return
    t, ql = s["total"], s["query_latency_s"]
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(s["query_status"].items()))
    out.print(f"{s['queries']} queries ({statuses or 'none'}) in {s['runs']} run(s)"
              + (f", {s['first']} to {s['last']}" if s["first"] else ""),
              markup=False, soft_wrap=True)
    out.print(f"{t['calls']} calls ({t['cache_hits']} from the cache, {t['errors']} errors, "
              f"{t['retries']} retries), {t['samples']} samples, tokens "
              f"{t['prompt_tokens']}+{t['completion_tokens']}, cost ${t['cost_usd']:.6f} "
              f"(billed ${t['billed_usd']:.6f}), FLOPs {t['flops']:.3g}",
              markup=False, soft_wrap=True)
    cl = t["latency_s"]
    out.print(f"latency p50/p90/p99: calls {cl['p50']:.3f}/{cl['p90']:.3f}/{cl['p99']:.3f} s "
              f"(live calls), queries {ql['p50']:.3f}/{ql['p90']:.3f}/{ql['p99']:.3f} s",
              markup=False, soft_wrap=True)
    for title, table in (("node", s["by_node"]), ("model", s["by_model"])):
        tab = Table(title=f"by {title}", title_justify="left")
        for col in (title, "calls", "cached", "errors", "tokens", "cost $", "p50/p90/p99 s"):
            tab.add_column(col, justify="left" if col == title else "right")
        for name, g in table.items():
            lat = g["latency_s"]
            tab.add_row(name, str(g["calls"]), str(g["cache_hits"]), str(g["errors"]),
                        f"{g['prompt_tokens']}+{g['completion_tokens']}",
                        f"{g['cost_usd']:.6f}",
                        f"{lat['p50']:.2f}/{lat['p90']:.2f}/{lat['p99']:.2f}")
        out.print(tab)
