"""``Tracer``: writes the trace lines and/or the OpenTelemetry spans of every query it sees,
appending each query's lines with one locked write; ``TracedExecutor``: an executor whose
queries are traced."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TTSGraphError
from .lines import trace_lines
from .otel import OTEL_ENV, _Otel, otel_requested
from .redaction import graph_secrets

if TYPE_CHECKING:
    from ..compile import CompiledGraph
    from ..executor import Executor, QueryResult
    from ..streaming import TextSink

try:  # advisory locks between processes appending to one file (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


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
            try:
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
            except OSError as exc:
                # a full disk mid-run: name the trace, as opening it does (os.write does not)
                raise TTSGraphError(f"{self.path}: cannot write the trace: "
                                    f"{exc.strerror or exc}") from None

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
        from ..executor import run_queries

        return await run_queries(self.arun, questions, concurrency=concurrency,
                                 on_result=on_result)

    def run(self, question: str) -> QueryResult:
        from ..blocking import run_sync

        return run_sync(lambda: self.arun(question))

    def run_many(self, questions: Sequence[str], *, concurrency: int = 8
                 ) -> list[QueryResult]:
        from ..blocking import run_sync

        return run_sync(lambda: self.arun_many(questions, concurrency=concurrency))
