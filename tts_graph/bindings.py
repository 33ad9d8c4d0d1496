"""A model binding: a backend plus the limits declared on its model entry (concurrency cap,
request rate, token rate). Every call to a model goes through its binding, so limits hold
across all nodes and all concurrent queries."""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import AsyncExitStack

from asyncio_throttle import Throttler

from .backends.base import Backend, GenerationRequest
from .budget import Costing
from .spec import ModelSpec
from .types import Completion


class _TokenRate:
    """Tokens per minute: a call waits until the last minute's tokens leave room for it."""

    def __init__(self, tpm: int) -> None:
        self.tpm = tpm
        self.window: list[tuple[float, int]] = []
        self.lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        tokens = min(tokens, self.tpm)
        async with self.lock:
            while True:
                now = time.monotonic()
                self.window = [(t, k) for t, k in self.window if now - t < 60.0]
                if sum(k for _, k in self.window) + tokens <= self.tpm:
                    self.window.append((now, tokens))
                    return
                await asyncio.sleep(max(0.01, 60.0 - (now - self.window[0][0])))


class _Limits:
    def __init__(self, spec: ModelSpec) -> None:
        self.sem = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
        self.rpm = (Throttler(rate_limit=max(1, round(spec.rpm)), period=60.0)
                    if spec.rpm else None)
        self.tpm = _TokenRate(spec.tpm) if spec.tpm else None


class ModelBinding:
    def __init__(self, name: str, spec: ModelSpec, backend: Backend) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend
        info = backend.info
        declared = spec.price
        price = (declared.input_per_mtok, declared.output_per_mtok) if declared else info.price
        self.costing = Costing(
            price_in=(price[0] / 1e6) if price else 0.0,
            price_out=(price[1] / 1e6) if price else 0.0,
            params=spec.params or info.params,
        )
        # asyncio primitives belong to one event loop; keep one set per loop
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Limits] = (
            weakref.WeakKeyDictionary()
        )
        self.in_flight = 0
        self.peak_in_flight = 0

    def _loop_limits(self) -> _Limits:
        loop = asyncio.get_running_loop()
        lim = self._limits.get(loop)
        if lim is None:
            lim = self._limits[loop] = _Limits(self.spec)
        return lim

    async def generate(self, request: GenerationRequest, est_tokens: int) -> list[Completion]:
        lim = self._loop_limits()
        async with AsyncExitStack() as stack:
            if lim.sem is not None:
                await stack.enter_async_context(lim.sem)
            if lim.rpm is not None:
                await stack.enter_async_context(lim.rpm)
            if lim.tpm is not None:
                await lim.tpm.acquire(est_tokens)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await self.backend.generate(request)
            finally:
                self.in_flight -= 1
