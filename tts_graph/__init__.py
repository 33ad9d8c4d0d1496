"""tts-graph: test-time scaling of LLM answers as collaboration graphs across many models."""

from ._version import __version__ as __version__
from .compile import CompiledGraph, compile_graph
from .errors import ArgumentError, ClosedError, GraphError, GraphErrors, TTSGraphError
from .executor import Executor, QueryResult
from .graph import Graph
from .spec import GraphSpec, load_graph, loads_graph, parse_graph

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
