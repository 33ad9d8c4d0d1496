"""OpenTelemetry export: a span per query, with a child span per step and per call (see the
package docstring for how they are placed in time)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .redaction import redact

if TYPE_CHECKING:
    from ..compile import CompiledGraph
    from ..executor import QueryResult

#: set to 1 (or true/yes/on) to emit OpenTelemetry spans wherever tracing is not configured
OTEL_ENV = "TTS_GRAPH_OTEL"


def otel_requested() -> bool:
    return os.environ.get(OTEL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _Otel:
    """Spans through the global tracer provider (``opentelemetry-api``)."""

    def __init__(self) -> None:
        from opentelemetry import trace

        from .. import __version__

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
