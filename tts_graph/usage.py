"""Accounting: one record per backend call, and sums per node, per model and per query."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields


@dataclass(slots=True)
class CallRecord:
    step: str
    node: str
    model: str
    samples: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    flops: float = 0.0
    cached: bool = False
    retries: int = 0
    error: str | None = None
    #: seconds after the query started when the call's (last) attempt went out; None where
    #: unknown (a record made elsewhere). With ``latency_s`` it places the call in time.
    start_s: float | None = None

    def to_dict(self) -> dict[str, object]:
        # every field is a number, a string or None: a flat copy (``asdict`` deep-copies
        # each value, several times the cost, once per call record written)
        return {f: getattr(self, f) for f in _RECORD_FIELDS}


@dataclass(slots=True)
class Usage:
    calls: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    flops: float = 0.0
    cached_calls: int = 0
    billed_usd: float = 0.0
    retries: int = 0
    errors: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, rec: CallRecord) -> None:
        self.calls += 1
        self.samples += rec.samples
        self.prompt_tokens += rec.prompt_tokens
        self.completion_tokens += rec.completion_tokens
        self.latency_s += rec.latency_s
        self.cost_usd += rec.cost_usd
        self.flops += rec.flops
        self.cached_calls += int(rec.cached)
        self.billed_usd += 0.0 if rec.cached else rec.cost_usd
        self.retries += rec.retries
        self.errors += int(rec.error is not None)

    def to_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = {f: getattr(self, f) for f in _USAGE_FIELDS}
        d["tokens"] = self.tokens
        return d


_RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


def total(records: Iterable[CallRecord]) -> Usage:
    u = Usage()
    for r in records:
        u.add(r)
    return u


def by(records: Iterable[CallRecord], key: str) -> dict[str, Usage]:
    out: dict[str, Usage] = {}
    for r in records:
        out.setdefault(str(getattr(r, key)), Usage()).add(r)
    return out
