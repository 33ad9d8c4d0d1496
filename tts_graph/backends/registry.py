"""Backend factories by name (``backend:`` in a model entry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import TTSGraphError
from ..spec import ModelSpec
from .base import Backend

Factory = Callable[[ModelSpec, Path | None], Backend]
_FACTORIES: dict[str, Factory] = {}


def _local(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .local import create_local_backend

    return create_local_backend(spec, base_dir)


def _litellm(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .litellm_backend import create_litellm_backend

    return create_litellm_backend(spec)


def _openai(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .openai_backend import create_openai_backend

    return create_openai_backend(spec)


def _vllm(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .vllm_backend import create_vllm_backend

    return create_vllm_backend(spec, base_dir)


def _scripted(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .scripted import ScriptedBackend

    return ScriptedBackend.from_spec(spec)


def _sim(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .sim import create_sim_backend

    return create_sim_backend(spec)


_BUILTIN: dict[str, Factory] = {"local": _local, "litellm": _litellm, "openai": _openai,
                                "scripted": _scripted, "vllm": _vllm, "sim": _sim}
#: names reserved for backends that later modules provide
_PLANNED: tuple[str, ...] = ()


def register_backend(name: str, factory: Factory) -> None:
    """Make ``backend: <name>`` available in graph files."""
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    return sorted({*_BUILTIN, *_PLANNED, *_FACTORIES})


def create_backend(spec: ModelSpec, base_dir: Path | None = None) -> Backend:
    factory = _FACTORIES.get(spec.backend) or _BUILTIN.get(spec.backend)
    if factory is None:
        if spec.backend in _PLANNED:
            raise TTSGraphError(f"backend '{spec.backend}' is not available in this version")
        raise TTSGraphError(f"unknown backend '{spec.backend}'")
    return factory(spec, base_dir)
