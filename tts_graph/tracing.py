"""Tracing: one JSONL line per backend call, a summary of trace files, and optional
OpenTelemetry spans (a span per query, with a child span per step and per call).

    from tts_graph import Graph

    graph = Graph.from_yaml("graphs/self_consistency.yaml", trace="trace.jsonl")
    graph.run("What is 17 + 25?")          # appends one line per call to trace.jsonl

A trace line is built from the query's typed result (its ``CallRecord``s) when the query
ends, so tracing adds nothing to the hot path. Lines of one query are appended with one write
under a lock (and an advisory file lock), so queries finishing at once — in one process or
several — never interleave their lines.

No secret reaches a trace: the values of every ``api_key_env`` variable the graph names, and
anything shaped like an API key or a bearer token, are replaced with ``***`` in every error
text, in the file and in the spans.

OpenTelemetry (``pip install 'tts-graph[otel]'``): with ``otel=True`` or
``TTS_GRAPH_OTEL=1``, each query becomes a span of the global tracer provider (a child of the
span current when the query starts), with a child span per step and per call. A call span
runs from when the call's last attempt went out (``CallRecord.start_s``) for its measured
latency, and a step span covers its calls; these carry ``tts.timing = "measured"``. A step
that calls no model (a vote) is placed when its inputs end, as is any call recorded without
a start, with ``tts.timing = "reconstructed"``. The query span's times are measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TTSGraphError

if TYPE_CHECKING:
    from .compile import CompiledGraph
    from .executor import Executor, QueryResult
    from .streaming import TextSink

try:  # advisory locks between processes appending to one file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TRACE_VERSION = 1
#: set to 1 (or true/yes/on) to emit OpenTelemetry spans wherever tracing is not configured
OTEL_ENV = "TTS_GRAPH_OTEL"
REDACTED = "***"

# ------------------------------------------------------------------------------ secrets

_SECRET_PATTERNS = (
    # OpenAI/Anthropic/most providers: sk-..., sk-proj-..., sk-ant-...
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    # an Authorization header or a bearer token quoted in an error
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    # key=value / "key": "value" for the usual names
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token|auth[_-]?token|secret|"
               r"password|authorization)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]{6,})"),
    # AWS access key ids, Google API keys
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),
)


def graph_secrets(graph: CompiledGraph | None) -> list[str]:
    """The values of the environment variables that the graph's models name in
    ``api_key_env`` (set ones only)."""
    if graph is None:
        return []
    out = []
    for mspec in graph.spec.models.values():
        name = getattr(mspec, "api_key_env", None)
        value = os.environ.get(name) if name else None
        if value:
            out.append(value)
    return out


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` with every known secret value and anything shaped like a key replaced by
    ``***``."""
    if text is None:
        return None
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    for pat in _SECRET_PATTERNS:
        if pat.groups == 2:  # keep the "api_key=" / "Bearer " part, hide the value
            text = pat.sub(lambda m: m.group(1) + (" " if m.group(1).lower() in (
                "bearer", "basic") else "") + REDACTED, text)
        else:
            text = pat.sub(REDACTED, text)
    return text


def otel_requested() -> bool:
    return os.environ.get(OTEL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------- lines


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


# -------------------------------------------------------------------------------- tracer


class Tracer:
    """Writes trace lines (``path``) and/or OpenTelemetry spans (``otel``) for every query it
    sees. ``otel=None`` follows ``TTS_GRAPH_OTEL``. ``graph`` gives the model ids and the
    secrets to redact (with ``secrets``); ``run_id`` tells runs apart in a shared file.

    Use ``record(result)`` after a query, or ``wrap(executor)`` to trace every query an
    executor runs (the query span is then current while the graph runs). One tracer may
    serve several graphs: a wrapped executor's own graph is used for its queries."""

    def __init__(self, path: str | Path | None = None, *, otel: bool | None = None,
                 graph: CompiledGraph | None = None, secrets: Iterable[str] = (),
                 run_id: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.graph = graph
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._secrets = list(secrets)
        self._lock = threading.Lock()
        self._otel: _Otel | None = None
        if otel or (otel is None and otel_requested()):
            try:
                self._otel = _Otel()
            except ImportError:
                msg = ("OpenTelemetry is not installed: pip install 'tts-graph[otel]' "
                       f"(or unset {OTEL_ENV})")
                if otel:
                    raise TTSGraphError(msg) from None
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
            except OSError as exc:
                raise TTSGraphError(f"{self.path}: cannot write the trace: "
                                    f"{exc.strerror or exc}") from None

    @property
    def active(self) -> bool:
        """Whether this tracer writes anything."""
        return self.path is not None or self._otel is not None

    @property
    def otel(self) -> bool:
        return self._otel is not None

    # ----------------------------------------------------------------------- recording

    def record(self, result: QueryResult, *, graph: CompiledGraph | None = None,
               started_ns: int | None = None, span: Any = None) -> None:
        """Trace one finished query of ``graph`` (default: the tracer's); ``started_ns``: its
        wall-clock start, from ``time.time_ns()``; ``span``: its query span, if started."""
        finished_ns = time.time_ns()
        graph = graph if graph is not None else self.graph
        secrets = [*self._secrets, *graph_secrets(graph)]
        if self.path is not None and result.calls:
            lines = trace_lines(result, run_id=self.run_id, graph=graph, secrets=secrets,
                                finished=finished_ns / 1e9)
            self._append("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        if self._otel is not None:
            start = started_ns if started_ns is not None else \
                finished_ns - int(result.latency_s * 1e9)
            self._otel.emit(result, graph, secrets, start, finished_ns, span)

    def _append(self, text: str) -> None:
        assert self.path is not None
        data = text.encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                os.close(fd)  # closing releases the flock

    # ------------------------------------------------------------------------- running

    async def arun(self, executor: Executor, question: str, *, query_id: int | str = 0,
                   on_text: TextSink | None = None) -> QueryResult:
        """Run one query on ``executor`` and trace it."""
        started = time.time_ns()
        if self._otel is None:
            res = await executor.arun(question, query_id=query_id, on_text=on_text)
            self.record(res, graph=executor.graph, started_ns=started)
            return res
        span = self._otel.start_query(executor.graph.name, query_id, started)
        try:
            with self._otel.current(span):
                res = await executor.arun(question, query_id=query_id, on_text=on_text)
        except BaseException as exc:
            self._otel.fail(span, exc)
            raise
        self.record(res, graph=executor.graph, started_ns=started, span=span)
        return res

    def wrap(self, executor: Executor) -> TracedExecutor:
        """``executor`` with every query traced."""
        return TracedExecutor(executor, self)


class TracedExecutor:
    """An ``Executor`` whose queries are traced: ``arun``, ``arun_many``, ``run`` and
    ``run_many`` as on the executor; everything else is the executor's."""

    def __init__(self, executor: Executor, tracer: Tracer) -> None:
        self.executor = executor
        self.tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.executor, name)

    async def arun(self, question: str, *, query_id: int | str = 0,
                   on_text: TextSink | None = None) -> QueryResult:
        return await self.tracer.arun(self.executor, question, query_id=query_id,
                                      on_text=on_text)

    async def arun_many(self, questions: Iterable[str], *, concurrency: int = 8,
                        on_result: Callable[[QueryResult], None] | None = None
                        ) -> list[QueryResult]:
        from .executor import run_queries

        return await run_queries(self.arun, questions, concurrency=concurrency,
                                 on_result=on_result)

    def run(self, question: str) -> QueryResult:
        return asyncio.run(self.arun(question))

    def run_many(self, questions: Sequence[str], *, concurrency: int = 8
                 ) -> list[QueryResult]:
        return asyncio.run(self.arun_many(questions, concurrency=concurrency))


# ------------------------------------------------------------------------ OpenTelemetry


class _Otel:
    """Spans through the global tracer provider (``opentelemetry-api``)."""

    def __init__(self) -> None:
        from opentelemetry import trace

        from . import __version__

        self._trace = trace
        self._tracer = trace.get_tracer("tts_graph", __version__)

    def start_query(self, graph_name: str, query_id: int | str, start_ns: int) -> Any:
        return self._tracer.start_span(f"tts_graph.query {graph_name}", start_time=start_ns,
                                       attributes={"tts.graph": graph_name,
                                                   "tts.query_id": str(query_id)})

    @contextlib.contextmanager
    def current(self, span: Any) -> Iterator[None]:
        with self._trace.use_span(span, end_on_exit=False, record_exception=False,
                                  set_status_on_exception=False):
            yield

    def fail(self, span: Any, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()

    def emit(self, result: QueryResult, graph: CompiledGraph | None, secrets: list[str],
             start_ns: int, end_ns: int, span: Any = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if span is None:
            span = self.start_query(result.graph, result.id, start_ns)
        usage = result.usage
        span.set_attributes({
            "tts.status": result.status,
            "tts.calls": usage.calls,
            "tts.cached_calls": usage.cached_calls,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "tts.cost_usd": usage.cost_usd,
            "tts.billed_usd": usage.billed_usd,
            "tts.latency_s": result.latency_s,
        })
        if result.answer is not None:
            span.set_attribute("tts.answer_found", True)
        if result.error:
            span.set_attribute("tts.error", redact(result.error, secrets) or "")
        if result.status == "error":
            span.set_status(Status(StatusCode.ERROR, "infrastructure error"))
        ctx = self._trace.set_span_in_context(span)
        models = graph.spec.models if graph is not None else {}
        by_step: dict[str, list[Any]] = {}
        for c in result.calls:
            by_step.setdefault(c.step, []).append(c)
        order = list(graph.order) if graph is not None else list(result.steps)
        order += [s for s in by_step if s not in order]
        ends: dict[str, int] = {}
        for sid in order:
            out = result.steps.get(sid)
            calls = by_step.get(sid, [])
            if out is None and not calls:
                continue
            deps = graph.steps[sid].deps if graph is not None and sid in graph.steps else ()
            after_deps = min(max([ends[d] for d in deps if d in ends], default=start_ns),
                             end_ns)
            measured = bool(calls) and all(c.start_s is not None for c in calls)
            spans = [_placed(c, after_deps, start_ns, end_ns) for c in calls]
            s_start = min((a for a, _ in spans), default=after_deps)
            s_end = max((b for _, b in spans), default=after_deps)
            ends[sid] = s_end
            node = out.node if out is not None else calls[0].node
            step_span = self._tracer.start_span(
                f"tts_graph.step {sid}", context=ctx, start_time=s_start,
                attributes={"tts.step": sid, "tts.node": node, "tts.calls": len(calls),
                            "tts.timing": "measured" if measured else "reconstructed"})
            if out is not None:
                step_span.set_attribute("tts.status", out.status)
                if out.error:
                    step_span.set_attribute("tts.error", redact(out.error, secrets) or "")
                    step_span.set_status(Status(StatusCode.ERROR, "infrastructure error"))
            step_ctx = self._trace.set_span_in_context(step_span)
            for c, (c_start, c_end) in zip(calls, spans, strict=True):
                mspec = models.get(c.model)
                attrs: dict[str, Any] = {
                    "tts.step": c.step, "tts.node": c.node, "tts.model": c.model,
                    "tts.samples": c.samples,
                    "gen_ai.usage.input_tokens": c.prompt_tokens,
                    "gen_ai.usage.output_tokens": c.completion_tokens,
                    "tts.cost_usd": c.cost_usd, "tts.flops": c.flops, "tts.cached": c.cached,
                    "tts.retries": c.retries, "tts.latency_s": c.latency_s,
                    "tts.timing": "reconstructed" if c.start_s is None else "measured",
                }
                if mspec is not None:
                    attrs["gen_ai.request.model"] = mspec.model
                call_span = self._tracer.start_span(
                    f"tts_graph.call {c.model}", context=step_ctx, start_time=c_start,
                    attributes=attrs)
                if c.error:
                    call_span.set_attribute("tts.error", redact(c.error, secrets) or "")
                    call_span.set_status(Status(StatusCode.ERROR, "infrastructure error"))
                call_span.end(end_time=c_end)
            step_span.end(end_time=s_end)
        span.end(end_time=end_ns)


def _placed(call: Any, default_ns: int, start_ns: int, end_ns: int) -> tuple[int, int]:
    """A call's (start, end) in ns within the query: from its recorded start where it has
    one (else ``default_ns``), for its measured latency."""
    t = default_ns if call.start_s is None else start_ns + int(call.start_s * 1e9)
    t = min(max(t, start_ns), end_ns)
    return t, min(t + int(call.latency_s * 1e9), end_ns)


# ------------------------------------------------------------------------------ summary


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


def read_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of a trace file. A malformed line is a ``TraceFileError``
    (``FILE:LINE: ...``); an unfinished last line (a writer killed mid-line) is skipped."""
    p = Path(path)
    try:
        fh = p.open("r", encoding="utf-8")
    except OSError as exc:
        raise TraceFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                if not raw.endswith("\n"):  # the writer died mid-line: nothing after it
                    return
                raise TraceFileError(f"{p}:{no}: not a trace line: invalid JSON: "
                                     f"{exc.msg}") from None
            if not isinstance(line, dict) or "step" not in line or "model" not in line:
                raise TraceFileError(f"{p}:{no}: not a trace line (expected an object with "
                                     "step, node, model, tokens...)")
            yield line


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
