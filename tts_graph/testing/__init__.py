"""Test helpers that ship with tts-graph: a loopback OpenAI-compatible fault server
(``tts_graph.testing.fault_server``; imported lazily, so ``python -m`` runs it cleanly)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ALL_KINDS",
    "FAULT_KINDS",
    "FaultApp",
    "FaultConfig",
    "fault_stats",
    "sample_text",
    "serve_fault_server",
    "spawn_fault_server",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import fault_server

        return getattr(fault_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
