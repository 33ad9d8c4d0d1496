"""The vLLM backend (``backend: vllm``, optional extra ``tts-graph[vllm]``, CUDA GPU required):
an in-process vLLM engine.

- One request per call: ``SamplingParams(n=N, seed=seed)`` draws the N samples of a call from
  one prefill (prefix caching is on by default), and vLLM gives sample ``i`` the seed
  ``seed + i`` (the same rule as every tts-graph backend), so a request split by the cache
  still draws the same seeds. ``max_tokens`` is always set (vLLM's offline default is 16),
  clamped to the room the model's context leaves after the prompt.
- Continuous batching across queries: calls are submitted to vLLM's async engine as they
  come; nothing here serializes them.
- One engine per (model, engine options) in the process, shared by every node and executor
  bound to it. The engine lives on its own thread with its own event loop, so callers on any
  loop (``Executor.run`` starts a new one each time) can share it; a call crosses over with
  ``run_coroutine_threadsafe``. Loading starts in the background when the backend is
  created, and the first call waits for it.
- Chat formatting uses the model tokenizer's chat template (the same Hugging Face
  ``apply_chat_template`` that vLLM's own chat endpoint renders with); the prompt goes to the
  engine as token ids, so ``count_tokens`` and the engine agree. ``options: {chat: false}``
  prompts a base model few-shot as plain completion, like the local backend.
- Token counts come from the engine's outputs (``prompt_token_ids``, each sample's
  ``token_ids``). Each sample is billed the prompt's tokens, as with the other backends,
  although vLLM prefills the prompt once for all N.
- Cancelling the awaiting task aborts the request in the engine (``engine.abort``).
- ``options:`` pass engine settings through to ``AsyncEngineArgs`` (``gpu_memory_utilization``,
  ``max_model_len``, ``tensor_parallel_size``, ``dtype``, ``enforce_eager``, ...) beside this
  backend's own sampling settings (``top_k``, ``min_p``, ...); unknown keys are an error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion, Message
from .base import Backend, GenerationRequest, ModelInfo

MISSING_EXTRA = ("backend 'vllm' needs the vllm extra: pip install 'tts-graph[vllm]' "
                 "(CUDA GPU required)")

#: this backend's own settings: name -> (accepted types, description of the value)
BACKEND_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "chat": ((bool,), "true or false"),
    "preamble": ((str,), "a string"),
    "top_k": ((int,), "an integer (0 or -1: off)"),
    "min_p": ((int, float), "a number in [0, 1]"),
    "repetition_penalty": ((int, float), "a number > 0"),
    "presence_penalty": ((int, float), "a number"),
    "frequency_penalty": ((int, float), "a number"),
    "ignore_eos": ((bool,), "true or false"),
}

#: engine settings checked here (type and range) and passed to ``AsyncEngineArgs``; with vllm
#: installed, any other field of ``AsyncEngineArgs`` is passed through as well
ENGINE_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "gpu_memory_utilization": ((int, float), "a fraction in (0, 1]"),
    "max_model_len": ((int,), "an integer >= 1"),
    "tensor_parallel_size": ((int,), "an integer >= 1"),
    "pipeline_parallel_size": ((int,), "an integer >= 1"),
    "dtype": ((str,), "auto, float16, bfloat16 or float32"),
    "enforce_eager": ((bool,), "true or false"),
    "enable_prefix_caching": ((bool,), "true or false"),
    "enable_chunked_prefill": ((bool,), "true or false"),
    "max_num_seqs": ((int,), "an integer >= 1"),
    "max_num_batched_tokens": ((int,), "an integer >= 1"),
    "quantization": ((str,), "a quantization method, e.g. awq, gptq, fp8"),
    "kv_cache_dtype": ((str,), "auto, fp8, ..."),
    "seed": ((int,), "an integer"),
    "trust_remote_code": ((bool,), "true or false"),
    "revision": ((str,), "a model revision"),
    "tokenizer": ((str,), "a tokenizer name or path"),
    "tokenizer_revision": ((str,), "a tokenizer revision"),
    "tokenizer_mode": ((str,), "auto or slow"),
    "download_dir": ((str,), "a directory"),
    "load_format": ((str,), "auto, safetensors, ..."),
    "cpu_offload_gb": ((int, float), "a number >= 0"),
    "swap_space": ((int, float), "a number >= 0"),
    "block_size": ((int,), "an integer"),
    "max_logprobs": ((int,), "an integer"),
}
_POSITIVE_INT = {"max_model_len", "tensor_parallel_size", "pipeline_parallel_size",
                 "max_num_seqs", "max_num_batched_tokens"}
#: engine options that change speed or memory, not what the model answers: left out of the
#: model identity (cache keys)
_RESOURCE_ONLY = {"gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
                  "enforce_eager", "enable_prefix_caching", "enable_chunked_prefill",
                  "max_num_seqs", "max_num_batched_tokens", "download_dir", "cpu_offload_gb",
                  "swap_space", "block_size", "max_logprobs", "load_format"}
#: set by this backend; ``options`` may not override them
_RESERVED = {"model", "n", "max_tokens", "temperature", "top_p", "stop", "output_kind",
             "disable_log_stats"}


def _check_value(model: str, key: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if ok and key == "gpu_memory_utilization":
        ok = 0 < value <= 1
    elif ok and key in _POSITIVE_INT:
        ok = value >= 1
    elif ok and key == "min_p":
        ok = 0 <= value <= 1
    elif ok and key == "repetition_penalty":
        ok = value > 0
    elif ok and key in ("cpu_offload_gb", "swap_space"):
        ok = value >= 0
    if not ok:
        raise TTSGraphError(f"model {model!r}: vllm option {key}: must be {what}, "
                            f"got {value!r}")


def split_options(model: str, options: Mapping[str, Any],
                  engine_fields: Callable[[], set[str] | None] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check ``options`` and split them into (this backend's, the engine's).

    ``engine_fields`` gives every field ``AsyncEngineArgs`` has (None when vllm is not
    installed); options outside both lists and outside those fields are an error.
    """
    own: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in options.items():
        if key in _RESERVED:
            raise TTSGraphError(f"model {model!r}: vllm option {key} is set by tts-graph "
                                "(from the model entry and the node's sampling settings)")
        if key in BACKEND_OPTIONS:
            _check_value(model, key, value, *BACKEND_OPTIONS[key])
            own[key] = value
        elif key in ENGINE_OPTIONS:
            _check_value(model, key, value, *ENGINE_OPTIONS[key])
            engine[key] = value
        else:
            unknown.append(key)
    if unknown:
        fields = engine_fields() if engine_fields is not None else None
        rest = sorted(k for k in unknown if not fields or k not in fields)
        if rest:
            known = sorted({*BACKEND_OPTIONS, *ENGINE_OPTIONS})
            raise TTSGraphError(
                f"model {model!r}: unknown vllm options {rest}; known: {', '.join(known)}"
                + (" (or any field of vllm's AsyncEngineArgs)" if fields else ""))
        engine.update((k, options[k]) for k in unknown)
    return own, engine


def fit_max_tokens(model: str, requested: int, prompt_tokens: int, max_model_len: int) -> int:
    """``requested`` clamped to the context the prompt leaves; an error when none is left."""
    room = max_model_len - prompt_tokens
    if room < 1:
        raise BackendError(f"{model}: prompt of {prompt_tokens} tokens does not fit the context "
                           f"of {max_model_len} (options: {{max_model_len: ...}})")
    return max(1, min(requested, room))


def sampling_kwargs(request: GenerationRequest, *, max_tokens: int,
                    own: Mapping[str, Any] | None = None,
                    extra_stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``SamplingParams`` keyword arguments for ``request``: all ``n`` samples in one
    request, sample ``i`` seeded ``seed + i`` by vLLM, ``max_tokens`` always explicit."""
    own = own or {}
    kw: dict[str, Any] = {
        "n": request.n,
        "seed": request.seed,
        "max_tokens": max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": [*extra_stop, *request.stop],
    }
    for key in ("top_k", "min_p", "repetition_penalty", "presence_penalty",
                "frequency_penalty", "ignore_eos"):
        if key in own:
            kw[key] = own[key]
    return kw


def completions(output: Any, n: int) -> list[Completion]:
    """A finished ``RequestOutput`` as ``n`` completions in sample order, with the engine's
    token counts."""
    samples = sorted(output.outputs, key=lambda o: o.index)
    if len(samples) != n:
        raise BackendError(f"vLLM returned {len(samples)} samples for n={n}")
    prompt = len(output.prompt_token_ids or ())
    return [Completion(text=o.text, prompt_tokens=prompt, completion_tokens=len(o.token_ids),
                       finish_reason=str(o.finish_reason or "stop")) for o in samples]


def completion_prompt(messages: tuple[Message, ...], preamble: str) -> str:
    """Plain-completion prompt for base models (the local backend's few-shot format)."""
    parts: list[str] = [preamble] if preamble else []
    for m in messages:
        if m.role == "system":
            parts.insert(0, m.content.strip() + "\n\n")
        elif m.role == "user":
            parts.append(f"Question: {m.content.strip()}\nResponse:")
        else:
            parts.append(f" {m.content.strip()}\n\n")
    return "".join(parts)


# --------------------------------------------------------------------------- vllm itself


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


# --------------------------------------------------------------------------------- backend


class VllmBackend(Backend):
    """vLLM in-process; see the module docstring."""

    def __init__(self, model: str, *, options: Mapping[str, Any] | None = None,
                 params: float | None = None, api: VllmApi | None = None) -> None:
        self.api = api or VllmApi()
        self.model = model
        own, engine = split_options(model, options or {}, self.api.engine_fields)
        if not self.api.available():
            raise TTSGraphError(MISSING_EXTRA)
        self.own = own
        self.engine_options = engine
        self.chat = bool(own.get("chat", True))
        if self.chat:
            self.preamble = ""
            self.stop: tuple[str, ...] = ()
        else:
            from .local import COMPLETION_PREAMBLE, COMPLETION_STOP

            self.preamble = str(own.get("preamble", COMPLETION_PREAMBLE))
            self.stop = COMPLETION_STOP
        self.host = shared_engine(self.api, model, engine)
        semantic = {k: v for k, v in {**own, **engine}.items() if k not in _RESOURCE_ONLY}
        digest = hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()
                                ).hexdigest()[:12] if semantic else "-"
        self._info = ModelInfo(identity=f"vllm:{model}#{digest}", params=params)
        self._prompts: OrderedDict[tuple[Message, ...], list[int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._info

    # ------------------------------------------------------------------ prompt formatting

    def prompt_ids(self, messages: tuple[Message, ...]) -> list[int]:
        """The prompt as token ids (the chat template applied; remembered per messages)."""
        with self._lock:
            ids = self._prompts.get(messages)
            if ids is not None:
                self._prompts.move_to_end(messages)
                return ids
            tok = self.host.tokenizer()
            if self.chat:
                if not getattr(tok, "chat_template", None):
                    raise BackendError(f"{self.model}: the tokenizer has no chat template; set "
                                       "options: {chat: false} to prompt it as completion")
                text = tok.apply_chat_template([m.to_dict() for m in messages], tokenize=False,
                                               add_generation_prompt=True)
                ids = list(tok.encode(text, add_special_tokens=False))
            else:
                ids = list(tok.encode(completion_prompt(messages, self.preamble),
                                      add_special_tokens=True))
            self._prompts[messages] = ids
            if len(self._prompts) > 1024:
                self._prompts.popitem(last=False)
            return ids

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        return len(self.prompt_ids(messages))

    # ------------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await self._generate(request, None)

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> list[Completion]:
        if request.n != 1:
            return await super().stream(request, on_text)
        return await self._generate(request, on_text)

    async def _generate(self, request: GenerationRequest, on_text: TextSink | None
                        ) -> list[Completion]:
        host = self.host
        await host.ready()
        ids = self.prompt_ids(request.messages)
        max_tokens = fit_max_tokens(self.model, request.max_tokens, len(ids), host.max_model_len)
        kwargs = sampling_kwargs(request, max_tokens=max_tokens, own=self.own,
                                 extra_stop=self.stop)
        request_id = host.next_request_id()
        try:
            params = self.api.sampling_params(kwargs)
            output = await host.submit(request_id, {"prompt_token_ids": ids}, params, on_text)
        except (asyncio.CancelledError, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"{self.model}: vLLM failed: {_one_line(exc)}") from exc
        return completions(output, request.n)


def create_vllm_backend(spec: ModelSpec, base_dir: Path | None = None) -> VllmBackend:
    model = spec.model
    if base_dir is not None and model.startswith((".", "~")):  # a local model directory
        path = Path(model).expanduser()
        model = str(path if path.is_absolute() else (base_dir / path).resolve())
    return VllmBackend(model, options=spec.options, params=spec.params)
