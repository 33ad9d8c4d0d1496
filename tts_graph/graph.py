"""``Graph``: the Python face of a collaboration graph.

    from tts_graph import Graph

    graph = Graph.from_yaml("graphs/self_consistency.yaml")
    result = graph.run("What is 17 + 25?")
    print(result.answer, result.usage.tokens)

Graphs built in Python (``Graph.from_dict``) are validated exactly like YAML files, and any
graph can be written back with ``to_yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import arguments
from .backends.base import Backend
from .backends.registry import backend_names
from .blocking import run_sync
from .cache import ResponseCache
from .compile import CompiledGraph, compile_graph
from .errors import ArgumentError, ClosedError
from .executor import Executor, QueryResult
from .spec import GraphDoc, GraphSpec, load_graph, parse_graph
from .streaming import AnswerStream, TextSink
from .tracing import TracedExecutor, Tracer


class Graph:
    """A validated, compiled graph, ready to run.

    ``backends`` maps model names of the graph to ``Backend`` objects to use instead of the
    ones the graph file declares (for tests, or to share a client); ``cache`` is a response
    cache (a path or a ``ResponseCache``).

    ``close()`` / ``aclose()`` (or ``with`` / ``async with``) release the backends the graph
    created; a closed graph refuses to run (``ClosedError``). A graph pickles (for
    ``multiprocessing``): the copy is built again from the same document.
    """

    def __init__(self, doc: GraphDoc, *, backends: dict[str, Backend] | None = None,
                 cache: ResponseCache | str | Path | None = None,
                 trace: str | Path | Tracer | None = None, otel: bool | None = None) -> None:
        if not isinstance(doc, GraphDoc):  # else an AttributeError from deep in compile
            raise ArgumentError(f"Graph() takes a GraphDoc, not {arguments.type_name(doc)}: "
                                "build one with Graph.from_yaml(path), from_dict or "
                                "from_string")
        arguments.optional_path(trace, "trace", Tracer)
        if otel is not None and not isinstance(otel, bool):
            raise ArgumentError(f"otel must be True, False or None, not "
                                f"{arguments.type_name(otel)}")
        given = arguments.backends(backends, doc.spec.models)
        self._doc = doc
        self._compiled = compile_graph(doc, backends=[*backend_names(), *given])
        self._executor = Executor(self._compiled, backends=given, cache=cache)
        # what a pickled copy is built again from, in another process
        self._rebuild = (given, cache.path if isinstance(cache, ResponseCache) else cache,
                         trace.path if isinstance(trace, Tracer) else trace,
                         trace.otel if isinstance(trace, Tracer) else otel)
        self._closed = False
        if not isinstance(trace, Tracer):
            trace = Tracer(trace, otel=otel, graph=self._compiled)
        self._tracer: Tracer | None = trace if trace.active else None
        self._runner: Executor | TracedExecutor = (
            trace.wrap(self._executor) if self._tracer is not None else self._executor)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Graph:
        """Load a graph file. Errors are ``GraphErrors`` whose lines read
        ``FILE:LINE: path: message``."""
        return cls(load_graph(path), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>",
                  base_dir: str | Path | None = None, **kwargs: Any) -> Graph:
        """Build a graph from a mapping with the same shape as the YAML file."""
        if base_dir is not None:
            base_dir = arguments.path(base_dir, "base_dir")
        return cls(parse_graph(data, source=source, base_dir=base_dir), **kwargs)

    @classmethod
    def from_string(cls, text: str, *, source: str = "<string>", **kwargs: Any) -> Graph:
        from .spec import loads_graph

        return cls(loads_graph(text, source=source), **kwargs)

    # ---------------------------------------------------------------------- inspection

    @property
    def name(self) -> str:
        return self._compiled.name

    @property
    def spec(self) -> GraphSpec:
        """The validated graph (pydantic model)."""
        return self._doc.spec

    @property
    def compiled(self) -> CompiledGraph:
        """The DAG of concrete steps (debate and refine rounds unrolled)."""
        return self._compiled

    @property
    def executor(self) -> Executor:
        return self._executor

    @property
    def tracer(self) -> Tracer | None:
        """The tracer that records this graph's queries (None when tracing is off)."""
        return self._tracer

    def to_dict(self) -> dict[str, Any]:
        """The graph as plain data, without defaults that were not written."""
        return self._doc.spec.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The graph as YAML text (also written to ``path`` when given)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------------- running

    def run(self, question: str) -> QueryResult:
        """Run one question (blocking; from inside a running event loop, in a worker thread:
        ``await arun`` there to keep that loop free)."""
        return self._open().run(question)

    async def arun(self, question: str, *, on_text: TextSink | None = None) -> QueryResult:
        """Run one question. ``on_text`` gets the answer's text as it is produced: token by
        token when the output node streams (one sample of a solver, fuser or refiner),
        otherwise whole at the end."""
        return await self._open().arun(question, on_text=on_text)

    def astream(self, question: str) -> AnswerStream:
        """Run one question, giving its answer text as it is produced (see ``arun``)::

            async with graph.astream(question) as stream:
                async for piece in stream:
                    print(piece, end="")
            stream.result  # the QueryResult

        Leave early with ``async with`` (or ``await stream.aclose()``): that cancels the run
        at once. A stream dropped unclosed cancels its run when it is collected."""
        runner = self._open()
        arguments.question(question)  # at the call, not at the first piece
        return AnswerStream(lambda sink: runner.arun(question, on_text=sink))

    def run_many(self, questions: Sequence[str], *, concurrency: int = 8) -> list[QueryResult]:
        """Run many questions, at most ``concurrency`` at once; results in input order."""
        return self._open().run_many(questions, concurrency=concurrency)

    async def arun_many(self, questions: Iterable[str], *, concurrency: int = 8,
                        on_result: Callable[[QueryResult], None] | None = None
                        ) -> list[QueryResult]:
        """``run_many`` for async code; ``on_result`` gets each result as it finishes."""
        return await self._open().arun_many(questions, concurrency=concurrency,
                                            on_result=on_result)

    def _open(self) -> Executor | TracedExecutor:
        if self._closed:
            raise ClosedError(f"graph {self.name!r} is closed: build a new Graph to run it "
                              "again")
        return self._runner

    # ------------------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Release the backends this graph created; the graph then refuses to run. Closing
        again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._executor.aclose()

    def close(self) -> None:
        """``aclose`` for synchronous code."""
        if not self._closed:
            run_sync(self.aclose)

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Graph:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __reduce__(self) -> tuple[Any, ...]:
        # ``pool.map(graph.run, questions)`` pickles the graph: the child builds it again
        # from its document (backends given in Python must pickle themselves)
        return (_rebuild, (self._doc, *self._rebuild))

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, nodes={list(self.spec.nodes)}, "
                f"output={self.spec.output!r}{', closed' if self._closed else ''})")


def _rebuild(doc: GraphDoc, backends: dict[str, Backend], cache: str | Path | None,
             trace: str | Path | None, otel: bool | None) -> Graph:
    return Graph(doc, backends=backends, cache=cache, trace=trace, otel=otel)
