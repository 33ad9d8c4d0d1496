"""tts-graph: test-time scaling of LLM answers as collaboration graphs across many models."""

from __future__ import annotations

from ._version import __version__ as __version__

# not ``typing.TYPE_CHECKING``: importing typing takes the first Ctrl-C window of the CLI
# (below) longer; type checkers read this spelling the same way
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .compile import CompiledGraph, compile_graph
    from .errors import ArgumentError, ClosedError, GraphError, GraphErrors, TTSGraphError
    from .executor import Executor, QueryResult
    from .graph import Graph
    from .spec import GraphSpec, load_graph, loads_graph, parse_graph

#: public name -> the module that defines it. Loaded on first use (PEP 562): importing the
#: package (which ``tts-graph`` and every submodule import does) costs nothing, so the CLI
#: holds Ctrl-C from its first moment instead of after most of a second of imports
_LAZY = {
    "CompiledGraph": "compile",
    "compile_graph": "compile",
    "ArgumentError": "errors",
    "ClosedError": "errors",
    "GraphError": "errors",
    "GraphErrors": "errors",
    "TTSGraphError": "errors",
    "Executor": "executor",
    "QueryResult": "executor",
    "Graph": "graph",
    "GraphSpec": "spec",
    "load_graph": "spec",
    "loads_graph": "spec",
    "parse_graph": "spec",
}

__all__ = [
    "ArgumentError",
    "ClosedError",
    "CompiledGraph",
    "Executor",
    "Graph",
    "GraphError",
    "GraphErrors",
    "GraphSpec",
    "QueryResult",
    "TTSGraphError",
    "compile_graph",
    "load_graph",
    "loads_graph",
    "parse_graph",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
