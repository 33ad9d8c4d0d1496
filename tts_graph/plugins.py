"""Backends and tasks by name, found the way entry points are found.

A name resolves to a ``"module:attr"`` reference: a built-in one from the table below, else one
that an installed distribution declares under the entry point group (``tts_graph.backends``,
``tts_graph.tasks``). The module is imported only when the name is used, so the registry and
the task loader depend on no backend or task module (the simulation in ``tts_graph.sim`` sits
above both), and a slow import (litellm) is paid only by the graphs that use it.

What a name resolves to:

- ``tts_graph.backends``: a factory ``(spec: ModelSpec, base_dir: Path | None) -> Backend``;
- ``tts_graph.tasks``: a loader ``(spec: str) -> Task``, given the whole task name
  (``NAME`` or ``NAME:ARGS``, e.g. ``sim:200:3``).

A plugin cannot replace a built-in name: the built-in wins, as for roles.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import TTSGraphError

BACKENDS = "tts_graph.backends"
TASKS = "tts_graph.tasks"

BUILTIN: dict[str, dict[str, str]] = {
    BACKENDS: {
        "local": "tts_graph.backends.builtin:local",
        "litellm": "tts_graph.backends.builtin:litellm",
        "openai": "tts_graph.backends.builtin:openai",
        "scripted": "tts_graph.backends.builtin:scripted",
        "vllm": "tts_graph.backends.builtin:vllm",
        "sim": "tts_graph.sim.backend:create_sim_backend",
    },
    TASKS: {
        "gsm8k": "tts_graph.evaluate.tasks:gsm8k",
        "aime2025": "tts_graph.evaluate.tasks:aime2025",
        "gpqa_diamond": "tts_graph.evaluate.tasks:gpqa_diamond",
        "humaneval": "tts_graph.evaluate.tasks:humaneval",
        "easy": "tts_graph.evaluate.tasks:easy",
        "sim": "tts_graph.sim.task:sim_task_from_name",
    },
}


@cache
def _installed(group: str) -> dict[str, EntryPoint]:
    """The entry points installed distributions declare under ``group``, by name."""
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """Every name of ``group``: the built-ins in table order, then installed plugins, sorted."""
    builtin = BUILTIN.get(group, {})
    return [*builtin, *sorted(set(_installed(group)) - set(builtin))]


def load(group: str, name: str) -> Any | None:
    """The object ``name`` resolves to in ``group``, or None when nothing provides the name.

    A reference that cannot be loaded is a one-line ``TTSGraphError`` naming the plugin."""
    builtin = BUILTIN.get(group, {}).get(name)
    if builtin is not None:
        return _loaded(group, name, builtin, lambda: _resolve(builtin))
    ep = _installed(group).get(name)
    return None if ep is None else _loaded(group, name, ep.value, ep.load)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _loaded(group: str, name: str, ref: str, get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception as exc:  # a broken plugin must say which one, in one line
        raise TTSGraphError(f"{group} plugin {name!r} ({ref}) failed to load: "
                            f"{type(exc).__name__}: {exc}") from exc


def refresh() -> None:
    """Read the installed entry points again (after installing a plugin in a running process)."""
    _installed.cache_clear()
