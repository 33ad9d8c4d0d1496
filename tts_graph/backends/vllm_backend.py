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

The options are checked in ``vllm_options``, the engine lives in ``vllm_engine``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion, Message
from .base import Backend, GenerationRequest, ModelInfo
from .vllm_engine import VllmApi, _one_line, shared_engine
from .vllm_options import _RESOURCE_ONLY, split_options

MISSING_EXTRA = ("backend 'vllm' needs the vllm extra: pip install 'tts-graph[vllm]' "
                 "(CUDA GPU required)")


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
