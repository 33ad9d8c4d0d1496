"""The trace file's format: one JSON line per backend call of a query."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .redaction import redact

if TYPE_CHECKING:
    from ..compile import CompiledGraph
    from ..executor import QueryResult

TRACE_VERSION = 1


def trace_lines(result: QueryResult, *, run_id: str = "", graph: CompiledGraph | None = None,
                secrets: Iterable[str] = (), finished: float | None = None
                ) -> list[dict[str, Any]]:
    """The trace lines of one query: one per call, secrets removed."""
    secrets = list(secrets)
    ts = datetime.fromtimestamp(finished if finished is not None else time.time(), UTC)
    stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    models = graph.spec.models if graph is not None else {}
    lines = []
    for c in result.calls:
        mspec = models.get(c.model)
        lines.append({
            "v": TRACE_VERSION,
            "ts": stamp,
            "run": run_id,
            "graph": result.graph,
            "query": result.id,
            "query_status": result.status,
            "query_latency_s": round(result.latency_s, 6),
            "step": c.step,
            "node": c.node,
            "model": c.model,
            "model_id": getattr(mspec, "model", None),
            "samples": c.samples,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "latency_s": round(c.latency_s, 6),
            "start_s": None if c.start_s is None else round(c.start_s, 6),
            "cost_usd": c.cost_usd,
            "flops": c.flops,
            "cached": c.cached,
            "retries": c.retries,
            "error": redact(c.error, secrets),
        })
    return lines
