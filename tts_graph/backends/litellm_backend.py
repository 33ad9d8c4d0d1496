"""The litellm backend (``backend: litellm``): any model string litellm knows —
``openai/gpt-4o-mini``, ``anthropic/...``, ``ollama/...``, ``hosted_vllm/...``, or
``openai/<name>`` with ``api_base`` for any OpenAI-compatible server.

- The API key comes from the environment variable named by ``api_key_env`` (its ends
  trimmed); it never appears in the graph file, the cache key, results or error messages.
- ``n`` is sent natively when litellm says the provider supports it (never ``drop_params``,
  which would silently return one sample); otherwise, or when a server returns fewer choices
  than asked, the samples are fanned out as separate calls with distinct seeds.
- Retries are the model binding's (bounded, with Retry-After): this backend sets litellm's and
  the OpenAI client's own retries to 0 and maps failures to ``TransientBackendError`` (429,
  5xx, timeouts, dropped connections, malformed responses) or ``BackendError`` (the rest).
- A call without ``timeout_s`` ends after ``DEFAULT_TIMEOUT_S`` (litellm's own 6000 s bounds
  each read, not the call); a stream must carry the server's own finish_reason (litellm
  adds "stop" to one that stopped short); usage that is no token count is counted again.
- litellm is imported lazily, in a worker thread (it takes seconds), with its cost map read
  from the package (``LITELLM_LOCAL_MODEL_COST_MAP``) so nothing reaches for the network.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import os
import threading
import time
from typing import Any

from ..errors import BackendError, TransientBackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion
from .base import Backend, GenerationRequest, ModelInfo, client_timeout_s
from .keys import env_key, key_forms, key_problem
from .pricing import mapped_price

_LOCK = threading.Lock()
_LITELLM: Any = None
#: request fields this backend sets itself; ``options`` may not override them
RESERVED = {"model", "messages", "n", "seed", "max_tokens", "temperature", "top_p", "stop",
            "api_key", "api_base", "timeout", "num_retries", "max_retries", "stream"}
#: stream closes under way after a cancellation (a reference, so they are not collected)
_CLOSING: set[asyncio.Future[Any]] = set()
TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
#: a call never waits longer than this when the model entry sets no timeout_s (as with
#: ``backend: openai``); litellm's own default is 6000 s, and its httpx timeout bounds each
#: read, not the call: a stream of keep-alives would never end
DEFAULT_TIMEOUT_S = 600.0
#: finish reasons that say the server failed mid-answer (OpenRouter's "error", vLLM's
#: "abort"): the text is cut short, not an answer
FAILED_FINISH = frozenset({"error", "abort"})


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
        value = headers.get("retry-after")
    except AttributeError:
        return None
    # a server's garbage ("soon", a bad date) means no hint, not a crash of the call
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except (TypeError, ValueError):
            pass
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def classify(exc: BaseException, litellm: Any, redact: str | None = None) -> BackendError:
    """Map a litellm/httpx/openai failure to a transient or a permanent backend error: one
    line, without the traceback litellm puts in some messages."""
    text = f"{type(exc).__name__}: {exc}".split("Traceback (most recent call last)")[0].rstrip()
    if redact:
        for form in key_forms(redact):
            text = text.replace(form, "***")
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
        if self.api_key_env:
            problem = key_problem(self.api_key_env, env_key(self.api_key_env))
            if problem is not None:
                raise TTSGraphError(f"model {spec.model!r}: {problem}")
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
        # the binding times a call out at timeout_s; this one is a backstop, set later
        self._backstop = (DEFAULT_TIMEOUT_S if spec.timeout_s is None
                          else client_timeout_s(spec.timeout_s))
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
        if self.api_key_env:  # read at each call, as litellm does: it may have changed
            key = env_key(self.api_key_env)
            problem = key_problem(self.api_key_env, key)
            if problem is not None:
                raise BackendError(f"model {self.model!r}: {problem}")
            return key
        if self.api_base and self._provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
            return "no-key"  # the OpenAI client insists on one; local servers ignore it
        return None

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        litellm = _LITELLM or await asyncio.to_thread(import_litellm)
        self._prepare(litellm)
        key = self._api_key()
        if not (request.n > 1 and self._native_n):  # one sample asked, or n not native
            return await self._call(litellm, request, 1, request.seed, key)
        got = await self._call(litellm, request, request.n, request.seed, key)
        if len(got) < request.n:
            # this server ignores n (or caps it): the binding asks for the rest, a request
            # each under the model's limits, and splits the samples from now on
            self._native_n = False
        return got

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
            async with asyncio.timeout(self._backstop):
                resp = await litellm.acompletion(**kwargs)
                async for chunk in resp:
                    usage = getattr(chunk, "usage", None) or usage
                    for choice in getattr(chunk, "choices", None) or []:
                        if getattr(choice, "index", 0) not in (0, None):
                            continue  # one sample asked: another choice is not part of it
                        delta = getattr(getattr(choice, "delta", None), "content", None)
                        if delta:
                            pieces.append(delta)
                            on_text(delta)
                        if getattr(choice, "finish_reason", None):
                            reason = str(choice.finish_reason)
        except TimeoutError:
            _close_later(resp)
            raise self._timed_out() from None
        except asyncio.CancelledError:
            _close_later(resp)
            raise
        except (BackendError, TransientBackendError):
            _close_later(resp)
            raise
        except Exception as exc:
            _close_later(resp)
            raise self._failure(exc, litellm, key) from None
        # litellm ends every stream with finish_reason "stop", whether the server sent one or
        # its stream stopped short (a clean close, an HTML page, [DONE] first): what the server
        # sent is on the stream wrapper, and a stream without it is not a whole answer
        if (getattr(resp, "received_finish_reason", "") is None
                and getattr(resp, "intermittent_finish_reason", None) is None):
            raise TransientBackendError(f"model {self.model!r}: stream ended before its "
                                        "finish_reason", kind="malformed")
        sent = getattr(resp, "received_finish_reason", None)
        if sent in FAILED_FINISH:  # litellm passes "abort" on as if it were an answer's end
            raise TransientBackendError(f"model {self.model!r}: the server ended the stream "
                                        f"with finish_reason {sent!r}")
        text = "".join(pieces)
        prompt, completion = self._counts(litellm, kwargs, usage, [text])
        return [Completion(text=text, prompt_tokens=prompt, completion_tokens=completion,
                           finish_reason=reason)]

    def _counts(self, litellm: Any, kwargs: dict[str, Any], usage: Any, texts: list[str]
                ) -> tuple[int, int]:
        """The server's (prompt, completion) tokens; where a count is missing or no count
        (negative, huge, not a number), litellm's tokenizers', else an estimate."""
        prompt, completion = _usage_counts(usage, texts)
        if prompt is None:
            try:
                prompt = int(litellm.token_counter(model=self.model,
                                                   messages=kwargs["messages"]))
            except Exception:
                prompt = sum(len(str(m.get("content") or "")) // 3 + 8
                             for m in kwargs["messages"]) + 4
        if completion is None:
            try:
                completion = sum(int(litellm.token_counter(model=self.model, text=t))
                                 for t in texts)
            except Exception:
                completion = sum(estimate_text_tokens(t) for t in texts)
        return prompt, completion

    def _timed_out(self) -> TransientBackendError:
        return TransientBackendError(f"model {self.model!r}: no answer within "
                                     f"{self._backstop:g} s", kind="timeout")

    def _failure(self, exc: BaseException, litellm: Any, key: str | None) -> BackendError:
        """``classify``'s error, naming the model."""
        err = classify(exc, litellm, key)
        text = f"model {self.model!r}: {err}"
        if isinstance(err, TransientBackendError):
            return TransientBackendError(text, kind=err.kind, retry_after=err.retry_after)
        return BackendError(text)

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
        kwargs["timeout"] = self._backstop
        return kwargs

    async def _call(self, litellm: Any, request: GenerationRequest, n: int, seed: int,
                    key: str | None) -> list[Completion]:
        kwargs = self._kwargs(request, n, seed, key)
        try:
            async with asyncio.timeout(self._backstop):
                resp = await litellm.acompletion(**kwargs)
        except TimeoutError:
            raise self._timed_out() from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._failure(exc, litellm, key) from None
        try:
            choices = list(resp.choices)
            indices = [getattr(c, "index", None) for c in choices]
            if all(type(i) is int for i in indices) and len(set(indices)) == len(indices):
                choices.sort(key=lambda c: int(c.index))
            # else: missing, repeated or odd indices say nothing of order: the order received
            choices = choices[:n]  # more than asked: the extra ones were billed to these
            texts = [(c.message.content or "") for c in choices]
            reasons = [str(c.finish_reason or "stop") for c in choices]
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("a message's content is not text")
        except (AttributeError, TypeError, ValueError) as exc:
            raise TransientBackendError(f"model {self.model!r}: malformed response: {exc}",
                                        kind="malformed") from None
        if not choices:
            raise TransientBackendError(f"model {self.model!r}: response without choices",
                                        kind="malformed")
        prompt, completion = self._counts(litellm, kwargs, getattr(resp, "usage", None), texts)
        return _split_usage(texts, reasons, prompt, completion)


def _close_later(resp: Any) -> None:
    """Release a stream's connection after a failure or a cancellation, without awaiting
    (a cancelled task must not wait on the network)."""
    if resp is not None and hasattr(resp, "aclose"):
        closing = asyncio.ensure_future(resp.aclose())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)


#: no call reports a billion tokens: a count past it is a broken server, not a bill
MAX_REPORTED_TOKENS = 10**9


def _token_count(value: Any) -> int | None:
    """A usage field as a token count, or None where it is none: missing, negative, not a
    finite whole number (``"abc"``, ``1e999``, NaN, ``true``) or past ``MAX_REPORTED_TOKENS``.
    A server's bad count must neither crash the call nor reach the budget."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_REPORTED_TOKENS:
        return None
    return value


def _usage_counts(usage: Any, texts: list[str]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of a usage object or dict, each None when unusable. A
    zero is unusable too where it cannot be true (no prompt is empty; ``texts`` were not
    free): a server that does not count fills its usage with zeros (litellm does, without
    one)."""
    get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
    prompt = _token_count(get("prompt_tokens")) or None
    completion = _token_count(get("completion_tokens"))
    if completion == 0 and any(texts):
        completion = None
    return prompt, completion


def estimate_text_tokens(text: str) -> int:
    """Tokens of a generated text when the server gives no usable count: about three
    characters a token, like ``Backend.count_tokens`` (it errs high)."""
    return (len(text) + 2) // 3


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
