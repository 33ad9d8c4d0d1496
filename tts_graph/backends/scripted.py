"""A scripted backend: answers come from a Python function or a list, with optional latency.

For tests of graph logic and for measuring the executor's own overhead (zero latency). It never
pretends to be a model: its identity says ``scripted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..spec import ModelSpec
from ..types import Completion
from .base import Backend, GenerationRequest, ModelInfo

Responder = Callable[[GenerationRequest, int], str]
Latency = float | Callable[[GenerationRequest, int], float]


class ScriptedBackend(Backend):
    """``respond(request, sample_index)`` gives each sample's text; ``latency`` (seconds, or a
    function of the same arguments) is awaited per sample. Every request is kept in
    ``requests`` for assertions."""

    def __init__(self, respond: Responder | None = None, *, latency: Latency = 0.0,
                 name: str = "scripted", params: float | None = None,
                 price: tuple[float, float] | None = None) -> None:
        self.respond = respond or (lambda req, i: f"Answer: {req.seed + i}")
        self.latency = latency
        self.requests: list[GenerationRequest] = []
        self.cancelled = 0
        self._info = ModelInfo(identity=f"scripted:{name}", params=params, price=price)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ScriptedBackend:
        opts: dict[str, Any] = spec.options
        answers = list(opts.get("answers", []))
        latency = float(opts.get("latency_s", 0.0))

        def respond(req: GenerationRequest, i: int) -> str:
            if not answers:
                return f"Answer: {req.seed + i}"
            return str(answers[(req.seed + i) % len(answers)])

        return cls(respond, latency=latency, name=spec.model, params=spec.params)

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def _one(self, req: GenerationRequest, i: int) -> Completion:
        delay = self.latency(req, i) if callable(self.latency) else self.latency
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        text = self.respond(req, i)
        prompt = sum(len(m.content.split()) for m in req.messages)
        return Completion(text=text, prompt_tokens=prompt,
                          completion_tokens=max(1, len(text.split())))

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.requests.append(request)
        if request.n == 1:
            return [await self._one(request, 0)]
        return list(await asyncio.gather(*(self._one(request, i) for i in range(request.n))))
