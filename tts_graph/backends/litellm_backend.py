"""The litellm backend (``backend: litellm``): any model string litellm knows —
``openai/gpt-4o-mini``, ``anthropic/...``, ``ollama/...``, ``hosted_vllm/...``, or
``openai/<name>`` with ``api_base`` for any OpenAI-compatible server.

- The API key comes from the environment variable named by ``api_key_env``; it never appears
  in the graph file, the cache key, results or error messages.
- ``n`` is sent natively when litellm says the provider supports it (never ``drop_params``,
  which would silently return one sample); otherwise, or when a server returns fewer choices
  than asked, the samples are fanned out as separate calls with distinct seeds.
- Retries are the model binding's (bounded, with Retry-After): this backend sets litellm's and
  the OpenAI client's own retries to 0 and maps failures to ``TransientBackendError`` (429,
  5xx, timeouts, dropped connections, malformed responses) or ``BackendError`` (the rest).
- litellm is imported lazily, in a worker thread (it takes seconds), with its cost map read
  from the package (``LITELLM_LOCAL_MODEL_COST_MAP``) so nothing reaches for the network.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import threading
import time
from typing import Any

from ..errors import BackendError, TransientBackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion
from .base import Backend, GenerationRequest, ModelInfo, client_timeout_s
from .pricing import mapped_price

_LOCK = threading.Lock()
_LITELLM: Any = None
#: request fields this backend sets itself; ``options`` may not override them
RESERVED = {"model", "messages", "n", "seed", "max_tokens", "temperature", "top_p", "stop",
            "api_key", "api_base", "timeout", "num_retries", "max_retries", "stream"}
#: stream closes under way after a cancellation (a reference, so they are not collected)
_CLOSING: set[asyncio.Future[Any]] = set()
TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def import_litellm() -> Any:
    """Import litellm once, offline (its bundled cost map), quietly."""
    global _LITELLM
    with _LOCK:
        if _LITELLM is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_TELEMETRY", "False")
            import litellm

            litellm.suppress_debug_info = True
            litellm.drop_params = False
            if hasattr(litellm, "telemetry"):
                litellm.telemetry = False
            _LITELLM = litellm
        return _LITELLM


def _retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header on the error's response."""
    headers: Any = None
    for attr in ("litellm_response_headers", "headers"):
        headers = getattr(exc, attr, None)
        if headers:
            break
    if not headers:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000.0
        value = headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(str(value))
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def classify(exc: BaseException, litellm: Any, redact: str | None = None) -> BackendError:
    """Map a litellm/httpx/openai failure to a transient or a permanent backend error."""
    text = f"{type(exc).__name__}: {exc}"
    if redact:
        text = text.replace(redact, "***")
    text = " ".join(text.split())[:500]
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (litellm.Timeout, TimeoutError)):
        return TransientBackendError(text, kind="timeout")
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return TransientBackendError(text, kind="rate_limit", retry_after=_retry_after(exc))
    if isinstance(exc, (litellm.InternalServerError, litellm.ServiceUnavailableError,
                        litellm.BadGatewayError)) or status in TRANSIENT_STATUS:
        return TransientBackendError(text, kind="server", retry_after=_retry_after(exc))
    if isinstance(exc, litellm.APIConnectionError):
        return TransientBackendError(text, kind="connection")
    if isinstance(exc, (json.JSONDecodeError, litellm.APIResponseValidationError)):
        return TransientBackendError(text, kind="malformed")
    if isinstance(exc, (ConnectionError, OSError)):
        return TransientBackendError(text, kind="connection")
    return BackendError(text)


class LitellmBackend(Backend):
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model = spec.model
        self.api_base = spec.api_base
        self.api_key_env = spec.api_key_env
        self.options = dict(spec.options)
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise TTSGraphError(f"model {spec.model!r}: environment variable "
                                f"{self.api_key_env} (api_key_env) is not set")
        bad = sorted(set(self.options) & RESERVED)
        if bad:
            raise TTSGraphError(f"model {spec.model!r}: options may not set {bad}; use the "
                                "model entry's fields (api_base, api_key_env, timeout_s...)")
        digest = hashlib.sha256(json.dumps(self.options, sort_keys=True, default=str)
                                .encode()).hexdigest()[:12] if self.options else "-"
        # the price now, not at the first call: the binding fixes its costing when it is made
        price = None if spec.price is not None else mapped_price(self.model)
        self._info = ModelInfo(identity=f"litellm:{self.model}@{self.api_base or ''}#{digest}",
                               params=spec.params, price=price)
        self._native_n: bool | None = None
        self._provider = ""
        self._seed_ok = True
        self._stream_usage = False

    @property
    def info(self) -> ModelInfo:
        return self._info

    def splits_samples(self) -> bool:
        # known once the first call has prepared the backend; until then generate() itself
        # draws the samples one by one under its single permit when n is not native
        return self._native_n is False

    def _prepare(self, litellm: Any) -> None:
        """Capabilities, from litellm's tables (once)."""
        if self._native_n is not None:
            return
        try:
            _, provider, _, _ = litellm.get_llm_provider(self.model, api_base=self.api_base)
        except Exception as exc:
            raise BackendError(f"litellm does not know the model {self.model!r}: {exc}"
                               ) from None
        supported = litellm.get_supported_openai_params(model=self.model,
                                                        custom_llm_provider=provider) or []
        self._native_n = "n" in supported
        self._seed_ok = "seed" in supported
        self._stream_usage = "stream_options" in supported
        self._provider = provider

    def _api_key(self) -> str | None:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise BackendError(f"environment variable {self.api_key_env} (api_key_env of "
                                   f"model {self.model!r}) is not set")
            return key
        if self.api_base and self._provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
            return "no-key"  # the OpenAI client insists on one; local servers ignore it
        return None

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        litellm = _LITELLM or await asyncio.to_thread(import_litellm)
        self._prepare(litellm)
        key = self._api_key()
        if request.n > 1 and self._native_n:
            got = await self._call(litellm, request, request.n, request.seed, key)
        else:
            got = []
        if len(got) < request.n:  # no native n, or the server returned fewer choices
            if request.n > 1 and self._native_n:
                self._native_n = False  # this server ignores n: split from now on
            # one after another: this call holds one concurrency permit of the binding
            for i in range(len(got), request.n):
                got.extend((await self._call(litellm, request, 1, request.seed + i, key))[:1])
        return got[: request.n]

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> list[Completion]:
        if request.n != 1:
            return await super().stream(request, on_text)
        litellm = _LITELLM or await asyncio.to_thread(import_litellm)
        self._prepare(litellm)
        key = self._api_key()
        kwargs = self._kwargs(request, 1, request.seed, key)
        kwargs["stream"] = True
        if self._stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        pieces: list[str] = []
        usage: Any = None
        reason = "stop"
        resp: Any = None
        try:
            resp = await litellm.acompletion(**kwargs)
            async for chunk in resp:
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    delta = getattr(getattr(choice, "delta", None), "content", None)
                    if delta:
                        pieces.append(delta)
                        on_text(delta)
                    if getattr(choice, "finish_reason", None):
                        reason = str(choice.finish_reason)
        except asyncio.CancelledError:
            _close_later(resp)
            raise
        except (BackendError, TransientBackendError):
            _close_later(resp)
            raise
        except Exception as exc:
            _close_later(resp)
            raise classify(exc, litellm, key) from None
        text = "".join(pieces)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        if usage is None:  # the server sent no usage: count with litellm's tokenizers
            try:
                prompt = int(litellm.token_counter(model=self.model, messages=kwargs["messages"]))
                completion = int(litellm.token_counter(model=self.model, text=text))
            except Exception:
                prompt, completion = 0, 0
        return [Completion(text=text, prompt_tokens=prompt, completion_tokens=completion,
                           finish_reason=reason)]

    def _kwargs(self, request: GenerationRequest, n: int, seed: int, key: str | None
                ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "num_retries": 0,
            "max_retries": 0,
            **self.options,
        }
        if n > 1:
            kwargs["n"] = n
        if self._seed_ok:
            kwargs["seed"] = seed
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if key is not None:
            kwargs["api_key"] = key
        if self.spec.timeout_s is not None:  # the binding's timeout_s fires first
            kwargs["timeout"] = client_timeout_s(self.spec.timeout_s)
        return kwargs

    async def _call(self, litellm: Any, request: GenerationRequest, n: int, seed: int,
                    key: str | None) -> list[Completion]:
        kwargs = self._kwargs(request, n, seed, key)
        try:
            resp = await litellm.acompletion(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify(exc, litellm, key) from None
        try:
            choices = list(resp.choices)
            usage = getattr(resp, "usage", None)
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
            texts = [(c.message.content or "") for c in choices]
            reasons = [str(c.finish_reason or "stop") for c in choices]
        except (AttributeError, TypeError, ValueError) as exc:
            raise TransientBackendError(f"malformed response: {exc}", kind="malformed"
                                        ) from None
        if not choices:
            raise TransientBackendError("response without choices", kind="malformed")
        return _split_usage(texts, reasons, prompt, completion)


def _close_later(resp: Any) -> None:
    """Release a stream's connection after a failure or a cancellation, without awaiting
    (a cancelled task must not wait on the network)."""
    if resp is not None and hasattr(resp, "aclose"):
        closing = asyncio.ensure_future(resp.aclose())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)


def _split_usage(texts: list[str], reasons: list[str], prompt: int, completion: int
                 ) -> list[Completion]:
    """One call's usage shared out over its choices (prompt evenly, completion by length),
    so per-sample records and cache entries add up to what the provider reported."""
    k = len(texts)
    p_share = [prompt // k + (1 if i < prompt % k else 0) for i in range(k)]
    lengths = [max(1, len(t)) for t in texts]
    total = sum(lengths)
    c_share = [completion * n // total for n in lengths]
    c_share[0] += completion - sum(c_share)
    return [Completion(text=t, prompt_tokens=p, completion_tokens=c, finish_reason=r)
            for t, r, p, c in zip(texts, reasons, p_share, c_share, strict=True)]


def create_litellm_backend(spec: ModelSpec) -> LitellmBackend:
    return LitellmBackend(spec)
