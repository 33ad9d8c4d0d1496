"""Backends: one module per backend; ``base.Backend`` is the protocol."""

from .base import Backend, GenerationRequest, ModelInfo
from .registry import backend_names, create_backend, register_backend

__all__ = ["Backend", "GenerationRequest", "ModelInfo", "backend_names", "create_backend",
           "register_backend"]
