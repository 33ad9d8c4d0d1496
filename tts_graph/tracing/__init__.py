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

The package, one module per idea: ``tracer`` (the ``Tracer`` and a traced executor),
``lines`` (the trace line format), ``redaction`` (secrets removed), ``otel`` (the spans) and
``summary`` (reading and summarizing trace files).
"""

from __future__ import annotations

from .lines import TRACE_VERSION, trace_lines
from .otel import OTEL_ENV, otel_requested
from .redaction import REDACTED, graph_secrets, redact
from .summary import TraceFileError, read_trace, summarize_trace
from .tracer import TracedExecutor, Tracer

__all__ = [
    "OTEL_ENV",
    "REDACTED",
    "TRACE_VERSION",
    "TraceFileError",
    "TracedExecutor",
    "Tracer",
    "graph_secrets",
    "otel_requested",
    "read_trace",
    "redact",
    "summarize_trace",
    "trace_lines",
]
