"""Checks of what the Python API is given, so a wrong argument fails at the call with one
line naming it (``ArgumentError``), not later as an ``AttributeError`` deep inside a run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ArgumentError


def type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def question(value: Any, where: str = "question") -> str:
    if not isinstance(value, str):
        raise ArgumentError(f"{where} must be a str, not {type_name(value)}")
    return value


def questions(values: Any) -> list[str]:
    """The questions as a list, each checked before any of them runs."""
    if isinstance(values, (str, bytes)):  # a str is iterable: it would run one per character
        raise ArgumentError("questions must be a list of str, not one "
                            f"{type_name(values)}: wrap it in a list")
    if not isinstance(values, Iterable):
        hint = " (an async iterable: collect it into a list first)" \
            if hasattr(values, "__aiter__") else ""
        raise ArgumentError(f"questions must be an iterable of str, not "
                            f"{type_name(values)}{hint}")
    items = list(values)
    for i, q in enumerate(items):
        question(q, f"questions[{i}]")
    return items


def concurrency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"concurrency must be an int >= 1, not {type_name(value)}")
    if value < 1:
        raise ArgumentError(f"concurrency must be >= 1, not {value}")
    return value


def callback(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise ArgumentError(f"{name} must be callable or None, not {type_name(value)}")


def path(value: Any, what: str) -> Path:
    """A path given as ``str`` or ``os.PathLike`` (not bytes, not empty: ``Path("")`` is the
    current directory)."""
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentError(f"{what} must be a path (str or pathlib.Path), "
                            f"not {type_name(value)}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ArgumentError(f"{what} must be a path (str or pathlib.Path), not bytes")
    if not text.strip():
        raise ArgumentError(f"{what} is an empty path")
    return Path(text)


def optional_path(value: Any, what: str, *also: type) -> None:
    """``value`` is None, a path, or an instance of one of ``also``."""
    if value is None or isinstance(value, also):
        return
    if not isinstance(value, (str, os.PathLike)):
        kinds = ", ".join(["a path", *(f"a {t.__name__}" for t in also)])
        raise ArgumentError(f"{what} must be {kinds} or None, not {type_name(value)}")
    path(value, what)


def backends(value: Any, models: Iterable[str]) -> dict[str, Any]:
    """``backends=``: model names of the graph -> ``Backend`` objects (anything with a
    ``generate``, so a duck-typed backend still passes). A name the graph does not declare
    is refused: a misspelt one left the declared backend (a billed remote model, say) in
    place without a word."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(f"backends must be a dict of model name -> Backend, "
                            f"not {type_name(value)}")
    declared = list(models)
    for name, backend in value.items():
        if name not in declared:
            raise ArgumentError(f"backends[{name!r}]: the graph declares no model of that "
                                f"name (models: {', '.join(declared) or 'none'})")
        if not callable(getattr(backend, "generate", None)):
            raise ArgumentError(f"backends[{name!r}] must be a Backend, "
                                f"not {type_name(backend)}")
    return dict(value)
