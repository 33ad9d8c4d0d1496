"""Reading trace files back: ``read_trace`` and ``summarize_trace`` (totals, latency
percentiles, cache hits and errors, per node, model and graph)."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TTSGraphError


class TraceFileError(TTSGraphError):
    """A trace file that cannot be read; ``str()`` is one ``FILE:LINE: message`` line."""


@dataclass
class _Group:
    calls: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    billed_usd: float = 0.0
    flops: float = 0.0
    cached: int = 0
    errors: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, line: dict[str, Any]) -> None:
        self.calls += 1
        self.samples += int(line.get("samples") or 0)
        self.prompt_tokens += int(line.get("prompt_tokens") or 0)
        self.completion_tokens += int(line.get("completion_tokens") or 0)
        cost = float(line.get("cost_usd") or 0.0)
        self.cost_usd += cost
        self.billed_usd += 0.0 if line.get("cached") else cost
        self.flops += float(line.get("flops") or 0.0)
        self.cached += int(bool(line.get("cached")))
        self.errors += int(line.get("error") is not None)
        self.retries += int(line.get("retries") or 0)
        if not line.get("cached"):
            self.latencies.append(float(line.get("latency_s") or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "samples": self.samples,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_usd, "billed_usd": self.billed_usd, "flops": self.flops,
            "cache_hits": self.cached,
            "cache_hit_rate": self.cached / self.calls if self.calls else 0.0,
            "errors": self.errors, "retries": self.retries,
            "latency_s": _percentiles(self.latencies),
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max (nearest rank) of the values; zeros when there are none."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    s = sorted(values)

    def rank(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": s[-1],
            "mean": sum(s) / len(s)}


#: the fields a summary adds up, and what each must hold (null counts as 0)
_INT_FIELDS = ("samples", "prompt_tokens", "completion_tokens", "retries")
_NUM_FIELDS = ("cost_usd", "flops", "latency_s", "query_latency_s")


def _bad_field(line: dict[str, Any]) -> str | None:
    """Why a trace line's numbers cannot be added up (a hand-edited or foreign file), or
    None."""
    for key in (*_INT_FIELDS, *_NUM_FIELDS):
        v = line.get(key)
        if v is None:
            continue
        whole = key in _INT_FIELDS
        ok = (isinstance(v, int) if whole else isinstance(v, (int, float))) \
            and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok:
            return (f"{key}: expected {'a whole number' if whole else 'a number'} >= 0, "
                    f"got {json.dumps(v)[:40]}")
    return None


def read_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of a trace file (``-``: standard input). A malformed line is a
    ``TraceFileError`` (``FILE:LINE: ...``); an unfinished last line (a writer killed
    mid-line) is skipped."""
    p = Path(path)
    stdin = str(path) == "-"
    try:
        fh = sys.stdin.buffer if stdin else p.open("rb")
    except OSError as exc:
        raise TraceFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    name = "<stdin>" if stdin else str(p)
    with contextlib.nullcontext(fh) if stdin else fh:
        for no, data in _numbered(fh, name):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError:
                if not data.endswith(b"\n"):  # cut mid-character by a killed writer
                    return
                raise TraceFileError(f"{name}:{no}: not a trace line: not UTF-8 text (a "
                                     "binary file?)") from None
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                if not raw.endswith("\n"):  # the writer died mid-line: nothing after it
                    return
                raise TraceFileError(f"{name}:{no}: not a trace line: invalid JSON: "
                                     f"{exc.msg}") from None
            except RecursionError:
                raise TraceFileError(f"{name}:{no}: not a trace line: JSON nested too deeply"
                                     ) from None
            if not isinstance(line, dict) or "step" not in line or "model" not in line:
                raise TraceFileError(f"{name}:{no}: not a trace line (expected an object with "
                                     "step, node, model, tokens...)")
            bad = _bad_field(line)
            if bad:
                raise TraceFileError(f"{name}:{no}: not a trace line: {bad}")
            yield line


def _numbered(fh: Any, name: str) -> Iterator[tuple[int, bytes]]:
    try:
        yield from enumerate(fh, start=1)
    except OSError as exc:  # a directory opens on some systems, then fails to read
        raise TraceFileError(f"{name}: cannot read: {exc.strerror or exc}") from None


def summarize_trace(paths: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """Totals, latency percentiles, cache hits and errors of trace file(s), overall, per node,
    per model and per graph. Call latency percentiles leave cached calls out (they take no
    time); query latencies are per distinct (run, query)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    total = _Group()
    per_node: dict[tuple[str, str], _Group] = {}
    per_model: dict[str, _Group] = {}
    per_graph: dict[str, _Group] = {}
    queries: dict[tuple[Any, ...], tuple[str, float]] = {}
    runs: set[str] = set()
    first: str | None = None
    last: str | None = None
    for path in paths:
        for line in read_trace(path):
            total.add(line)
            graph = str(line.get("graph", ""))
            per_graph.setdefault(graph, _Group()).add(line)
            per_node.setdefault((graph, str(line.get("node"))), _Group()).add(line)
            per_model.setdefault(str(line.get("model")), _Group()).add(line)
            run = str(line.get("run", ""))
            runs.add(run)
            queries[(run, graph, str(line.get("query")))] = (
                str(line.get("query_status", "")), float(line.get("query_latency_s") or 0.0))
            ts = line.get("ts")
            if isinstance(ts, str):
                first = ts if first is None or ts < first else first
                last = ts if last is None or ts > last else last
    statuses: dict[str, int] = {}
    for status, _ in queries.values():
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "files": [str(p) for p in paths],
        "runs": len(runs),
        "queries": len(queries),
        "query_status": statuses,
        "query_latency_s": _percentiles([lat for _, lat in queries.values()]),
        "first": first,
        "last": last,
        "total": total.to_dict(),
        # node names alone when the trace holds one graph, GRAPH:NODE when several
        "by_node": {(node if len(per_graph) <= 1 else f"{graph}:{node}"): g.to_dict()
                    for (graph, node), g in sorted(per_node.items())},
        "by_model": {k: g.to_dict() for k, g in sorted(per_model.items())},
        "by_graph": {k: g.to_dict() for k, g in sorted(per_graph.items())},
    }
