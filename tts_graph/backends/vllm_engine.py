"""The vLLM engine of the ``vllm`` backend: one engine (and its tokenizer) per (model, engine
options) in the process, each on a thread of its own with its own event loop, so callers on
any loop share it; a call crosses over with ``run_coroutine_threadsafe``, and cancelling the
caller aborts the request in the engine. ``VllmApi`` is all this uses from vllm (tests put a
fake in its stead)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import importlib.util
import inspect
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendError


class VllmApi:
    """What this backend uses from vllm, in one place (tests put a fake in its stead)."""

    #: part of the engine registry key, so fakes never share a real engine
    key = "vllm"

    def available(self) -> bool:
        return importlib.util.find_spec("vllm") is not None

    def engine_fields(self) -> set[str] | None:
        try:
            from vllm import AsyncEngineArgs
        except ImportError:
            return None
        return {f.name for f in dataclasses.fields(AsyncEngineArgs)}

    def load_tokenizer(self, model: str, engine: Mapping[str, Any]) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            engine.get("tokenizer", model),
            revision=engine.get("tokenizer_revision", engine.get("revision")),
            trust_remote_code=bool(engine.get("trust_remote_code", False)),
            use_fast=engine.get("tokenizer_mode", "auto") != "slow",
        )

    def build_engine(self, model: str, engine: Mapping[str, Any]) -> Any:
        """The async engine (called on the engine's own thread and event loop)."""
        from vllm import AsyncEngineArgs

        try:
            from vllm.v1.engine.async_llm import AsyncLLM as engine_class
        except ImportError:  # older layouts: AsyncLLMEngine is the async engine
            from vllm import AsyncLLMEngine as engine_class
        kwargs = {"enable_prefix_caching": True, **engine, "model": model,
                  "disable_log_stats": True}
        if "disable_log_requests" in {f.name for f in dataclasses.fields(AsyncEngineArgs)}:
            kwargs.setdefault("disable_log_requests", True)  # older vLLM logs every request
        return engine_class.from_engine_args(AsyncEngineArgs(**kwargs))

    def sampling_params(self, kwargs: Mapping[str, Any]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # only the final output of each request crosses over: no per-token streaming
        return SamplingParams(**kwargs, output_kind=RequestOutputKind.FINAL_ONLY)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class EngineHost:
    """One engine (and its tokenizer) on a thread of its own with its own event loop."""

    def __init__(self, api: VllmApi, model: str, engine_options: Mapping[str, Any]) -> None:
        self.api = api
        self.model = model
        self.options = dict(engine_options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"vllm-{Path(model).name[:24]}")
        self.thread.start()
        self.requests = 0
        self.aborts = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.max_model_len = 0
        self.engine: Any = None
        self._ids = itertools.count()
        self._tokenizer = asyncio.run_coroutine_threadsafe(self._load_tokenizer(), self.loop)
        self._engine = asyncio.run_coroutine_threadsafe(self._load_engine(), self.loop)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _load_tokenizer(self) -> Any:
        return self.api.load_tokenizer(self.model, self.options)

    async def _load_engine(self) -> Any:
        engine = self.api.build_engine(self.model, self.options)
        config = getattr(engine, "model_config", None)
        if config is None and hasattr(engine, "get_model_config"):
            config = await _maybe_await(engine.get_model_config())
        self.max_model_len = int(getattr(config, "max_model_len", 0)
                                 or self.options.get("max_model_len", 0) or 2**31 - 1)
        self.engine = engine
        return engine

    @property
    def failed(self) -> bool:
        for fut in (self._tokenizer, self._engine):
            if fut.done() and (fut.cancelled() or fut.exception() is not None):
                return True
        return False

    def tokenizer(self) -> Any:
        """The tokenizer (blocks until it is loaded; that is quick beside the engine)."""
        try:
            return self._tokenizer.result()
        except Exception as exc:
            raise BackendError(f"vllm: cannot load the tokenizer of {self.model}: "
                               f"{_one_line(exc)}") from exc

    async def ready(self) -> Any:
        """The engine, once loaded. Waiting callers may be cancelled; the load goes on."""
        if self.engine is not None:
            return self.engine
        try:
            return await asyncio.shield(asyncio.wrap_future(self._engine))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise BackendError(f"vllm: cannot load {self.model}: {_one_line(exc)}") from exc

    def next_request_id(self) -> str:
        return f"tts-{next(self._ids)}"

    async def _collect(self, request_id: str, prompt: Any, params: Any,
                       on_text: Callable[[str], object] | None = None) -> Any:
        """Runs on the engine's loop: the request's final output. ``on_text`` (called on this
        loop) gets each new piece of sample 0's text as the engine's outputs grow."""
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        final = None
        sent = ""
        try:
            async for out in self.engine.generate(prompt, params, request_id):
                final = out
                if on_text is not None and out.outputs:
                    text = out.outputs[0].text  # cumulative (vLLM's default output kind)
                    if text.startswith(sent) and len(text) > len(sent):
                        on_text(text[len(sent):])
                        sent = text
        except asyncio.CancelledError:
            self.aborts += 1
            # generate() aborts it too (then this is a no-op); a failure here must not
            # replace the cancellation
            with contextlib.suppress(Exception):
                await self.engine.abort(request_id)
            raise
        finally:
            self.in_flight -= 1
        if final is None:
            raise BackendError(f"vllm: request {request_id} ended without output")
        return final

    async def submit(self, request_id: str, prompt: Any, params: Any,
                     on_text: Callable[[str], object] | None = None) -> Any:
        """Send one request from the caller's loop; cancelling the caller aborts it.
        ``on_text`` is called on the caller's loop, in order, before the result arrives."""
        forward: Callable[[str], object] | None = None
        if on_text is not None:
            caller = asyncio.get_running_loop()

            def forward(piece: str) -> None:
                caller.call_soon_threadsafe(on_text, piece)

        fut = asyncio.run_coroutine_threadsafe(
            self._collect(request_id, prompt, params, forward), self.loop)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()  # cancels _collect on the engine loop, which aborts the request
            raise

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the engine and the thread (for tests and exit)."""
        async def stop() -> None:
            engine = self.engine
            if engine is None:
                return
            stop_engine = getattr(engine, "shutdown", None) or getattr(
                engine, "shutdown_background_loop", None)
            if stop_engine is not None:
                await _maybe_await(stop_engine())

        if self.thread.is_alive():
            with contextlib.suppress(Exception):  # a failed or hung engine still goes
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        self.engine = None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


_HOSTS: dict[tuple[str, str, str], EngineHost] = {}
_HOSTS_LOCK = threading.Lock()


def shared_engine(api: VllmApi, model: str, engine_options: Mapping[str, Any]) -> EngineHost:
    """One engine per (model, engine options) in the process: every node bound to it shares
    it. A host whose load failed is replaced by a fresh one."""
    key = (api.key, model, json.dumps(dict(engine_options), sort_keys=True, default=str))
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None or host.failed:
            if host is not None:
                host.shutdown(timeout=5)
            host = _HOSTS[key] = EngineHost(api, model, engine_options)
        return host


@atexit.register
def shutdown_engines() -> None:
    """Stop every engine this process started (at exit, and for tests that need the GPU
    memory back)."""
    with _HOSTS_LOCK:
        hosts = list(_HOSTS.values())
        _HOSTS.clear()
    for host in hosts:
        host.shutdown()
