"""Which graph serves which model name: graph files and directories loaded, validated and
keyed by graph name (the model id)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GraphError, GraphErrors, TTSGraphError

if TYPE_CHECKING:
    from ..cache import ResponseCache
    from ..graph import Graph


def graph_files(sources: Iterable[str | Path]) -> list[Path]:
    """Graph files named by ``sources``: files as given, directories as their ``*.yaml`` and
    ``*.yml`` files (sorted). A missing path or an empty directory is a ``GraphError``."""
    files: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise GraphError("no graph files (*.yaml) in this directory", source=str(p))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise GraphError("no such file or directory", source=str(p))
    return files


def load_graphs(sources: Iterable[str | Path], *,
                cache: ResponseCache | str | Path | None = None) -> dict[str, Graph]:
    """Load and validate graph files (directories: every ``*.yaml``), keyed by graph name.

    Every problem is collected: a ``GraphErrors`` lists them all, one line each (file:line:
    field: message). Two graphs with the same name are an error. Backends are bound now, so a
    missing API key or model file is reported here, not at the first request."""
    from ..graph import Graph
    from ..model_checks import check_models

    problems: list[GraphError] = []
    graphs: dict[str, Graph] = {}
    where: dict[str, Path] = {}
    for path in graph_files(sources):
        try:
            g = Graph.from_yaml(path, cache=cache)
            checked = check_models(g.compiled.doc)
            if checked.errors or checked.warnings:  # with file:line, before binding
                problems.extend([*checked.errors, *checked.warnings])
                continue
            g.executor.bindings()
        except GraphErrors as exc:
            problems.extend(exc.errors)
            continue
        except GraphError as exc:
            problems.append(exc)
            continue
        except TTSGraphError as exc:
            problems.append(GraphError(str(exc), source=str(path)))
            continue
        if g.name in graphs:
            problems.append(GraphError(
                f"graph name '{g.name}' is also the name of {where[g.name]} (names are the "
                "model ids: they must differ)", source=str(path)))
            continue
        graphs[g.name] = g
        where[g.name] = path
    if problems:
        raise GraphErrors(problems)
    return graphs
