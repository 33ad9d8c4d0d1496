"""Backend factories by name (``backend:`` in a model entry): registered in this process with
``register_backend``, else found by name through ``tts_graph.plugins`` (the built-ins, the
simulation, and ``tts_graph.backends`` entry points)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import plugins
from ..errors import TTSGraphError
from ..spec import ModelSpec
from .base import Backend

Factory = Callable[[ModelSpec, Path | None], Backend]
_FACTORIES: dict[str, Factory] = {}


def register_backend(name: str, factory: Factory) -> None:
    """Make ``backend: <name>`` available in graph files."""
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    return sorted({*plugins.names(plugins.BACKENDS), *_FACTORIES})


def create_backend(spec: ModelSpec, base_dir: Path | None = None) -> Backend:
    factory = _FACTORIES.get(spec.backend) or plugins.load(plugins.BACKENDS, spec.backend)
    if factory is None:
        raise TTSGraphError(f"unknown backend '{spec.backend}'")
    backend: Backend = factory(spec, base_dir)
    return backend
