"""YAML loading that remembers where each value came from, so errors can name a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import GraphError

Loc = tuple[str | int, ...]


#: values a file may hold once its aliases are expanded: a graph, a search space or an
#: imported config is a few thousand at most; aliases of aliases ("billion laughs") expand
#: exponentially, and everything that reads the data would walk every copy
MAX_VALUES = 200_000
#: nesting levels of a file (the YAML composer recurses per level)
MAX_DEPTH = 100


class _Loader(yaml.SafeLoader):
    """SafeLoader: no Python objects can be built from a graph file."""


class _Walk:
    """Counts of one file's walk (values seen with aliases expanded; nodes on the path)."""

    def __init__(self) -> None:
        self.values = 0
        self.path: set[int] = set()


def _walk(loader: _Loader, node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str,
          seen_by: _Walk) -> None:
    line = node.start_mark.line + 1
    lines.setdefault(loc, line)
    seen_by.values += 1
    if seen_by.values > MAX_VALUES:
        raise GraphError(f"more than {MAX_VALUES:,} values once aliases are expanded "
                         "(aliases of aliases?)", source=source, line=line)
    if len(loc) > MAX_DEPTH:
        raise GraphError(f"nested deeper than {MAX_DEPTH} levels", source=source, line=line)
    if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        return
    if id(node) in seen_by.path:  # `a: &x [*x]`: a value that holds itself
        raise GraphError("an alias refers to a value that holds it (a recursive alias)",
                         path=".".join(str(p) for p in loc) or None, source=source, line=line)
    seen_by.path.add(id(node))
    try:
        _walk_children(loader, node, loc, lines, source, seen_by)
    finally:
        seen_by.path.discard(id(node))


def _walk_children(loader: _Loader, node: yaml.Node, loc: Loc, lines: dict[Loc, int],
                   source: str, seen_by: _Walk) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                key: Any = str(key_node)
            elif key_node.tag == "tag:yaml.org,2002:merge":
                continue
            else:  # the key as the data will hold it: `1:` is the int 1, not the string "1"
                key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                path = ".".join(str(p) for p in (*loc, key))
                raise GraphError(f"duplicate key (first at line {seen[key]})", path=path,
                                 source=source, line=line)
            seen[key] = line
            lines[(*loc, key)] = line
            _walk(loader, value_node, (*loc, key), lines, source, seen_by)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, (*loc, i), lines, source, seen_by)


def load_yaml(text: str, source: str = "<graph>") -> tuple[Any, dict[Loc, int]]:
    """Parse ``text``; return the data and a map from location tuples to 1-based lines."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the composer recurses per level
            raise GraphError(f"nested deeper than {MAX_DEPTH} levels", source=source,
                             line=loader.get_mark().line + 1) from None
        if node is None:
            return None, {}
        lines: dict[Loc, int] = {}
        _walk(loader, node, (), lines, source, _Walk())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = f"invalid YAML: {exc.problem or exc.context}"
        where = exc.context_mark
        if exc.problem and exc.context and where is not None and where.line + 1 != line:
            msg += f" ({exc.context} at line {where.line + 1})"
        raise GraphError(msg, source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise GraphError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    return data, lines


def read_source(path: str | Path) -> str:
    """The text of a config file; a ``GraphError`` naming it (and, for a byte that is not
    UTF-8, its line) when it cannot be read as UTF-8 text."""
    name = str(path)
    if "\n" in name:  # YAML text given where a path was expected: one line, not the text
        first = name.strip().splitlines()[0] if name.strip() else ""
        raise GraphError(f"not a file path: it holds line breaks, like YAML text (starting "
                         f"{first[:40]!r}); read text with Graph.from_string or loads_graph",
                         source="<path>")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise GraphError("file not found", source=name) from None
    except IsADirectoryError:
        raise GraphError("is a directory, not a file", source=name) from None
    except OSError as exc:
        raise GraphError(f"cannot read file: {exc.strerror or exc}", source=name) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the line of the first byte that is not UTF-8, so it can be found and fixed
        raise GraphError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                         "UTF-8", source=name, line=data.count(b"\n", 0, exc.start) + 1
                         ) from None


def load_yaml_file(path: str | Path) -> tuple[Any, dict[Loc, int]]:
    return load_yaml(read_source(path), str(path))


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """Line of the longest prefix of ``loc`` that has one."""
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None
