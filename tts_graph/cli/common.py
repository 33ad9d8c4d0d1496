"""What every command shares: the consoles, and bad input turned into one line per problem
and exit 2 (an infrastructure failure: exit 1)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import GraphErrors, TTSGraphError

out = Console()
err = Console(stderr=True)


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _compile(path: Path):  # type: ignore[no-untyped-def]
    from ..backends.registry import backend_names
    from ..compile import compile_graph
    from ..spec import load_graph

    try:
        return compile_graph(load_graph(path), backends=backend_names())
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None


def _open_cache(path: Path | None):  # type: ignore[no-untyped-def]
    if path is None:
        return None
    from ..cache import ResponseCache

    try:
        return ResponseCache(path)
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None


def _traced(executor, trace: Path | None, graph):  # type: ignore[no-untyped-def]
    """``executor`` traced to ``trace`` (and OpenTelemetry with TTS_GRAPH_OTEL=1)."""
    from ..tracing import Tracer

    try:
        tracer = Tracer(trace, graph=graph)
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    return tracer.wrap(executor) if tracer.active else executor
