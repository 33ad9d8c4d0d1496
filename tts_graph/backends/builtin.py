"""Factories of the built-in backends, ``(spec, base_dir) -> Backend`` as ``tts_graph.plugins``
expects. Each imports its backend only when called: litellm takes about 2 s to import, and
vllm needs CUDA."""

from __future__ import annotations

from pathlib import Path

from ..spec import ModelSpec
from .base import Backend


def local(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .local import create_local_backend

    return create_local_backend(spec, base_dir)


def litellm(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .litellm_backend import create_litellm_backend

    return create_litellm_backend(spec)


def openai(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .openai_backend import create_openai_backend

    return create_openai_backend(spec)


def vllm(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .vllm_backend import create_vllm_backend

    return create_vllm_backend(spec, base_dir)


def scripted(spec: ModelSpec, base_dir: Path | None) -> Backend:
    from .scripted import ScriptedBackend

    return ScriptedBackend.from_spec(spec)
