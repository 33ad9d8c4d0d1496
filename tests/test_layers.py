"""The layers of ``tts_graph`` stay as drawn: no import cycle among its modules, and no module
importing from a layer above its own.

The import graph is read from the source with ``ast``: module-level and lazy (inside a
function) imports alike, since a lazy import is still a dependency; imports under
``if TYPE_CHECKING:`` are left out (they never run). An import names the module it reads
(``from .roles import registry`` is an edge to ``tts_graph.roles.registry``); the packages above
it, which Python runs first for every importer alike, are not counted. Names looked up as
strings (``plugins``' ``"module:attr"`` table, entry points) are not imports either: that is how
a lower layer finds something above it without depending on it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tts_graph"

#: top → bottom. A module belongs to the row of the longest name that is it or a package above
#: it (``tts_graph.cli`` covers ``tts_graph.cli.run``); the root package is matched exactly. A
#: module may import from its own row and the rows below it, never from a row above.
LAYERS: list[tuple[str, list[str]]] = [
    ("cli", ["tts_graph.cli", "tts_graph.__main__"]),
    ("server", ["tts_graph.server"]),
    # the Python API and what only the commands use
    ("api", ["tts_graph", "tts_graph.graph", "tts_graph.archon", "tts_graph.render",
             "tts_graph.model_checks", "tts_graph.vote_summary", "tts_graph.compact",
             "tts_graph.testing"]),
    ("search", ["tts_graph.search"]),
    # the simulated models and task: a backend and a task, found by name from below
    ("sim", ["tts_graph.sim"]),
    ("evaluate", ["tts_graph.evaluate"]),
    # tracing wraps the executor, and evaluate's workers trace their runs
    ("execute", ["tts_graph.executor", "tts_graph.budget_plan", "tts_graph.prompt_estimate",
                 "tts_graph.bindings", "tts_graph.tracing"]),
    ("compile", ["tts_graph.compile"]),
    ("roles · accounting", ["tts_graph.roles", "tts_graph.budget", "tts_graph.usage"]),
    # runs a role's (unit_test_evaluator's) or a scorer's code in a subprocess
    ("sandbox", ["tts_graph.sandbox"]),
    ("backends", ["tts_graph.backends", "tts_graph.cache"]),
    ("spec", ["tts_graph.spec", "tts_graph.custom_roles"]),
    ("foundation", ["tts_graph.answers", "tts_graph.arguments", "tts_graph.errors",
                    "tts_graph.types", "tts_graph.files", "tts_graph.tokens", "tts_graph.plugins",
                    "tts_graph._version", "tts_graph.streaming", "tts_graph.yamlpos",
                    "tts_graph.prompts", "tts_graph.deadlines", "tts_graph.blocking",
                    "tts_graph.limits", "tts_graph.collector"]),
]


# ------------------------------------------------------------------------------ the graph
def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package`` under ``root``: dotted name → (file, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _run_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                yield other
                yield from _run_time_nodes(other)
            continue
        yield child
        yield from _run_time_nodes(child)


def import_graph(root: Path, package: str) -> nx.DiGraph:
    """Modules of ``package`` as nodes, an edge from each module to each one it imports."""
    mods = modules(root, package)

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    for name, (path, is_package) in mods.items():
        graph.add_node(name)
        here = name if is_package else name.rpartition(".")[0]
        for node in _run_time_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                # ``from pkg import sub`` reads the submodule; ``from mod import name``, mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                imported = owner(target)
                if imported is not None and imported != name:
                    graph.add_edge(name, imported)
    return graph


def layer_of(module: str, layers: list[tuple[str, list[str]]] = LAYERS,
             package: str = PACKAGE) -> int | None:
    """The row of ``module`` in ``layers`` (0 = top), or ``None`` when no row holds it."""
    best: tuple[int, int] | None = None  # (length of the matching name, row)
    for row, (_, names) in enumerate(layers):
        for prefix in names:
            exact = module == prefix
            below = prefix != package and module.startswith(prefix + ".")
            if (exact or below) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), row)
    return None if best is None else best[1]


def upward_imports(graph: nx.DiGraph, layers: list[tuple[str, list[str]]] = LAYERS,
                   package: str = PACKAGE) -> list[str]:
    found = []
    for src, dst in sorted(graph.edges):
        a, b = layer_of(src, layers, package), layer_of(dst, layers, package)
        if a is not None and b is not None and b < a:
            found.append(f"{src} ({layers[a][0]}) imports {dst} ({layers[b][0]})")
    return found


def describe_cycles(graph: nx.DiGraph, limit: int = 40) -> list[str]:
    # each cycle starts at its first module by name, so the report reads the same every run
    rotated = [c[c.index(min(c)):] + c[:c.index(min(c))] for c in nx.simple_cycles(graph)]
    cycles = sorted(rotated, key=lambda c: (len(c), c))
    lines = [" -> ".join([*c, c[0]]) for c in cycles[:limit]]
    if len(cycles) > limit:
        lines.append(f"... and {len(cycles) - limit} more")
    return lines


# ------------------------------------------------------------------------------ tts_graph
@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph(ROOT, PACKAGE)


def test_every_module_has_a_layer(graph: nx.DiGraph) -> None:
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, (
        "place these modules in LAYERS (tests/test_layers.py), in the row of what they are "
        "for: " + ", ".join(unplaced))


def test_no_import_cycles(graph: nx.DiGraph) -> None:
    cycles = describe_cycles(graph)
    assert not cycles, "import cycles among tts_graph modules:\n" + "\n".join(cycles)


def test_no_upward_imports(graph: nx.DiGraph) -> None:
    upward = upward_imports(graph)
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_graph_sees_the_package() -> None:
    g = import_graph(ROOT, PACKAGE)
    assert g.has_edge("tts_graph.compile", "tts_graph.spec")  # module level
    assert g.has_edge("tts_graph.roles.registry", "tts_graph.roles.solver")  # lazy
    assert len(g) > 50


# ------------------------------------------------------------------------------ the checker
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_lazy_and_relative_imports_and_skips_type_checking(
        tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "from ._version import v\n",
        "pkg/_version.py": "v = 1\n",
        "pkg/low.py": ("from typing import TYPE_CHECKING\n"
                       "if TYPE_CHECKING:\n    from .high import H\n"
                       "else:\n    import pkg.mid\n"
                       "def f():\n    from pkg import high\n"),
        "pkg/mid.py": "import json\nfrom . import low\n",
        "pkg/high.py": "H = 1\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from ..low import f\nfrom .. import _version\n",
    })
    g = import_graph(tmp_path, "pkg")
    assert set(g.edges) == {
        ("pkg", "pkg._version"),
        ("pkg.low", "pkg.mid"),  # the else branch of TYPE_CHECKING runs
        ("pkg.low", "pkg.high"),  # lazy, inside a function
        ("pkg.mid", "pkg.low"),
        ("pkg.sub.leaf", "pkg.low"),
        ("pkg.sub.leaf", "pkg._version"),
    }
    assert describe_cycles(g) == ["pkg.low -> pkg.mid -> pkg.low"]


def test_the_checker_places_modules_by_prefix_and_finds_upward_imports(
        tmp_path: Path) -> None:
    layers = [("top", ["pkg", "pkg.cli"]), ("low", ["pkg.core", "pkg.core.fast"])]
    assert layer_of("pkg", layers, "pkg") == 0
    assert layer_of("pkg.cli", layers, "pkg") == 0
    assert layer_of("pkg.cli.run", layers, "pkg") == 0
    assert layer_of("pkg.core.fast.x", layers, "pkg") == 1
    assert layer_of("pkg.client", layers, "pkg") is None  # a prefix is a whole name
    assert layer_of("pkg.other", layers, "pkg") is None  # the root package is matched exactly
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/cli.py": "from . import core\n",
                      "pkg/core.py": "def f():\n    from .cli import main\n"})
    g = import_graph(tmp_path, "pkg")
    assert upward_imports(g, layers, "pkg") == ["pkg.core (low) imports pkg.cli (top)"]
