"""The OpenAI-compatible backend (``backend: openai``): a lean client for any server that
speaks OpenAI's ``/v1/chat/completions`` (vLLM, SGLang, llama.cpp's server, hosted APIs), or
``/v1/completions`` for base models (``options: {chat: false}``).

Why not litellm for these: litellm spends 4–8 ms of client CPU per call, which caps one
process at ~200 calls/s whatever the server does. This module is one aiohttp request per
call over one pooled connection set per model (and event loop), with stdlib JSON.

- ``api_base`` is the server's base URL (``http://127.0.0.1:8000/v1``; default OpenAI's),
  an http(s) URL with a host (else a configuration error), a query it carries kept after
  the route; redirects are reported with where they point, not followed. The key comes
  from the environment variable named by ``api_key_env`` (its ends trimmed) and never
  appears in the identity (cache keys), results, traces, logs or error messages (neither
  raw, JSON-escaped nor URL-encoded, as a server may echo it).
- ``n`` is sent natively. A server that answers with fewer choices than asked (llama.cpp's
  ignores ``n``) has the choices it gave returned; the binding asks for the missing samples
  as further calls with seeds ``seed + i`` (each under the model's limits), and from then on
  splits samples itself (``splits_samples``), as with litellm.
- Usage (prompt and completion tokens) is the server's; a stream asks for it with
  ``stream_options.include_usage`` (unless the server refused that field: then not again).
  A count that is missing or no count (negative, huge, not a number) is estimated, never
  trusted.
- Streams are read as SSE says (CRLF, LF or CR line ends; an event's data over several
  lines); an error event, or a finish_reason "error"/"abort", fails the call rather than
  passing the text so far. A request that did not ask for a stream and gets one anyway (a
  proxy's doing) is read the same way. A body or a stream is held to ``MAX_RESPONSE_BYTES``.
- The node's ``max_tokens`` goes in ``max_tokens``; a model that refuses that field with a
  400 naming ``max_completion_tokens`` (OpenAI's reasoning models, Azure deployments of
  them) is asked again with that field, and from then on only with it. A refused
  temperature is the user's to change (the error line says to what), never dropped.
- Retries, timeouts, limits and the cache are the model binding's (the aiohttp timeout is a
  backstop set a little after ``timeout_s``, so a hang is reported once, by the binding):
  failures map to
  ``TransientBackendError`` (429, 5xx, timeouts, dropped connections, unreachable server,
  non-JSON or truncated bodies, a 200 without choices or with an error object, a choice
  without a message or text) or ``BackendError`` (a refused key, a spent quota, a redirect,
  other 4xx), each one line naming the model and the cause.
- Cost: a ``price`` declared on the model entry, else litellm's bundled cost map, read from
  its JSON file once per process (``pricing``; litellm itself is not imported).
- ``options``: ``chat`` (false: ``/v1/completions`` with a few-shot prompt), ``preamble``
  (that prompt's examples), ``max_tokens_field`` (``max_completion_tokens``: that field from
  the first call); anything else is sent as an extra field of the request body
  (``top_k``, ``min_p``, ``repetition_penalty``, ...).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import yarl

from ..errors import BackendError, TransientBackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion
from .base import Backend, GenerationRequest, ModelInfo, client_timeout_s
from .keys import env_key, key_forms, key_problem
from .litellm_backend import (  # plain functions: litellm is not imported
    FAILED_FINISH,
    _split_usage,
    _usage_counts,
    estimate_text_tokens,
)
from .pricing import cost_map, mapped_price

__all__ = ["OpenAIBackend", "cost_map", "mapped_price"]

DEFAULT_API_BASE = "https://api.openai.com/v1"
#: request fields this backend sets itself; ``options`` may not override them
RESERVED = {"model", "messages", "prompt", "n", "seed", "max_tokens", "max_completion_tokens",
            "temperature", "top_p", "stop", "stream", "stream_options", "api_key", "api_base",
            "timeout"}
OWN_OPTIONS = {"chat", "preamble", "max_tokens_field"}
#: the request fields that may carry the node's max_tokens: OpenAI's reasoning models (o1,
#: o3, o4-mini, gpt-5, and Azure deployments of them under any name) refuse the first
TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
#: a call never waits longer than this when the model entry sets no timeout_s
DEFAULT_TIMEOUT_S = 600.0
#: the most a response (or a stream, all of it) may hold: a server that sends without end
#: fills this process's memory within its timeout at loopback speed
MAX_RESPONSE_BYTES = 128 << 20
#: the start of an error response that is read: its message is cut far shorter
ERROR_BODY_BYTES = 64 << 10
#: the most an event whose data spans lines may hold before it parses
PENDING_EVENT_BYTES = 1 << 20
#: the line ends of an event stream: CRLF, LF or a lone CR
_LINE_END = re.compile(rb"\r\n|\r|\n")
#: the value in a refusal's "Only the default (1) value is supported"
_DEFAULT_VALUE = re.compile(r"default \((-?[0-9.]+)\)")


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def config_problem(spec: ModelSpec) -> tuple[str, str] | None:
    """(field, message) of what makes a model entry unusable, found without a call (the
    backend raises it; ``validate`` reports it with its file:line): an ``api_base`` that is
    no http(s) URL with a host ("127.0.0.1:8000/v1" reads as scheme "127.0.0.1": every call
    failed), an ``options.chat`` that is no boolean ("false" quoted is truthy)."""
    if spec.api_base is not None:
        try:
            url = yarl.URL(spec.api_base)
            ok = url.scheme in ("http", "https") and bool(url.host)
        except ValueError:
            ok = False
        if not ok:
            return "api_base", (f"{spec.api_base!r} is not an http:// or https:// URL with a "
                                "host (e.g. http://127.0.0.1:8000/v1)")
    chat = spec.options.get("chat", True)
    if not isinstance(chat, bool):
        return "options.chat", f"must be true or false, not {chat!r}"
    field = spec.options.get("max_tokens_field", TOKENS_FIELDS[0])
    if field not in TOKENS_FIELDS:
        return "options.max_tokens_field", (f"must be {TOKENS_FIELDS[0]} or {TOKENS_FIELDS[1]}, "
                                            f"not {field!r}")
    return None


def _error_object(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an OpenAI-style error body ({} if none)."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        return {}
    return err if isinstance(err, dict) else {}


def _error_code(body: bytes) -> str:
    """``error.code`` and ``error.type`` of an OpenAI-style error body, joined ("" if none)."""
    err = _error_object(body)
    return " ".join(str(err[k]) for k in ("code", "type") if isinstance(err.get(k), str))


def _refuses_max_tokens(body: bytes) -> bool:
    """A 400 of a model that takes ``max_completion_tokens`` only (OpenAI's reasoning models):
    ``error.param`` "max_tokens", or a message that names the field to use instead."""
    err = _error_object(body)
    message = str(err.get("message") or body[:1000].decode("utf-8", "replace"))
    if "max_completion_tokens" in message:
        return True
    # "max_tokens is too large" names the same param: the value is refused, not the field
    return err.get("param") == "max_tokens" and (
        err.get("code") == "unsupported_parameter" or "supported with" in message)


def _refusal_hint(body: bytes) -> str:
    """What to change in the graph for a 400 about a sampling field the model does not take
    (reasoning models take only their default temperature): "" when there is nothing to say.
    The field is not dropped or changed here: that would run another experiment."""
    err = _error_object(body)
    if err.get("param") != "temperature":
        return ""
    message = str(err.get("message"))
    if "default" in message:  # OpenAI's: "Only the default (1) value is supported."
        default = _DEFAULT_VALUE.search(message)
        return (" (the model accepts only its default temperature: set temperature: "
                f"{default[1] if default else 1} on the node, or in the graph's defaults)")
    return " (set a temperature the model accepts on the node, or in the graph's defaults)"


def _server_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else (err or data.get("detail"))
        if msg:
            return str(msg)
    except (ValueError, AttributeError, RecursionError):
        pass
    return body[:200].decode("utf-8", "replace")


class _Refused(BackendError):
    """A request the server refused as such (an HTTP status that retrying cannot help);
    ``max_tokens``: refused for that field (ask again with ``max_completion_tokens``)."""

    def __init__(self, error: BackendError, status: int, *, max_tokens: bool = False) -> None:
        super().__init__(str(error))
        self.status = status
        self.max_tokens = max_tokens


class _NotJSON(TransientBackendError):
    """A 200 whose body is no JSON (an event stream, perhaps: see ``_post``)."""


async def _once(data: bytes) -> AsyncIterator[bytes]:
    """A body already read, as the chunks of one (for the event stream reader)."""
    yield data


class OpenAIBackend(Backend):
    """See the module docstring."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model = spec.model
        self.api_base = (spec.api_base or DEFAULT_API_BASE).rstrip("/")
        problem = config_problem(spec)
        if problem is not None:
            raise TTSGraphError(f"model {spec.model!r}: {problem[0]} {problem[1]}")
        options = dict(spec.options)
        bad = sorted(set(options) & RESERVED)
        if bad:
            raise TTSGraphError(f"model {spec.model!r}: options may not set {bad}; use the "
                                "model entry's fields (api_base, api_key_env, timeout_s...)")
        self.chat = bool(options.get("chat", True))  # a boolean (config_problem)
        self.preamble = ""
        self.extra_stop: tuple[str, ...] = ()
        if not self.chat:  # a base model: the few-shot completion format of the local backend
            from .local import COMPLETION_PREAMBLE, COMPLETION_STOP
            from .vllm_backend import completion_prompt

            self.preamble = str(options.get("preamble", COMPLETION_PREAMBLE))
            self.extra_stop = COMPLETION_STOP
            self._prompt = completion_prompt
        self.extra_body = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
        # the route goes before a query the api_base carries (``?api-version=...``)
        base, sep, query = self.api_base.partition("?")
        route = "chat/completions" if self.chat else "completions"
        self.url = f"{base.rstrip('/')}/{route}{sep}{query}"
        self._key: str | None = None
        if spec.api_key_env:
            # ends trimmed: a key kept in a file or a secret mount often ends in a line break,
            # which no header may carry (aiohttp raised ValueError on every call)
            self._key = env_key(spec.api_key_env)
            problem = key_problem(spec.api_key_env, self._key)
            if problem is not None:
                raise TTSGraphError(f"model {spec.model!r}: {problem}")
        #: the forms of the key a server's bytes may hold, each redacted (``_scrub``)
        self._key_forms = key_forms(self._key) if self._key else ()
        self._headers = {"Content-Type": "application/json"}
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key}"
        digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str)
                                .encode()).hexdigest()[:12] if options else "-"
        price = None if spec.price is not None else mapped_price(self.model)
        self._info = ModelInfo(identity=f"openai:{self.model}@{self.api_base}#{digest}",
                               params=spec.params, price=price)
        # the binding times a call out at timeout_s; this client's timeout is a backstop
        self._timeout = aiohttp.ClientTimeout(
            total=DEFAULT_TIMEOUT_S if spec.timeout_s is None else client_timeout_s(spec.timeout_s))
        self._native_n = True
        #: the field the node's max_tokens goes in: ``max_completion_tokens`` when chosen, or
        #: once the server refused ``max_tokens`` (then the only field it is asked with)
        self._tokens_field = str(options.get("max_tokens_field", TOKENS_FIELDS[0]))
        #: ask a stream for its usage (``stream_options``); false once a server refused it
        self._stream_usage = True
        # one pooled session per event loop (aiohttp's connections belong to one loop);
        # each lives until its loop shuts down (see _session)
        self._sessions: dict[asyncio.AbstractEventLoop,
                             tuple[aiohttp.ClientSession, AsyncIterator[None]]] = {}

    @property
    def info(self) -> ModelInfo:
        return self._info

    def splits_samples(self) -> bool:
        return not self._native_n

    # ------------------------------------------------------------------------ session

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        held = self._sessions.get(loop)
        if held is not None and not held[0].closed:
            return held[0]
        for old in [lp for lp in self._sessions if lp.is_closed()]:
            # a loop closed without shutting down its async generators: its sockets are gone
            self._sessions.pop(old)[0].detach()
        # no connection cap here: the binding's max_concurrency is the cap
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=self._timeout, raise_for_status=False)
        keeper = self._keeper(loop, session)
        # the first step registers the generator with the loop, whose shutdown (asyncio.run
        # does it) then closes the session on that loop: no "unclosed session" at exit
        await keeper.__anext__()
        self._sessions[loop] = (session, keeper)
        return session

    async def _keeper(self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
                      ) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._sessions.get(loop, (None,))[0] is session:
                del self._sessions[loop]
            await session.close()

    async def aclose(self) -> None:
        held = self._sessions.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[0].close()

    # ---------------------------------------------------------------------- requests

    def _body(self, request: GenerationRequest, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if self.chat:
            body["messages"] = [m.to_dict() for m in request.messages]
        else:
            body["prompt"] = self._prompt(request.messages, self.preamble)
        body[self._tokens_field] = request.max_tokens
        body.update(temperature=request.temperature, top_p=request.top_p, seed=seed)
        if n > 1:
            body["n"] = n
        stop = [*self.extra_stop, *request.stop]
        if stop:
            body["stop"] = stop
        body.update(self.extra_body)
        return body

    def _redact(self, data: bytes) -> bytes:
        """A server's bytes without the key in any of its forms (one that echoes the
        request's headers), before they are cut for a message."""
        for form in self._key_forms:
            data = data.replace(form.encode(), b"***")
        return data

    def _scrub(self, text: str) -> str:
        """``text`` without the key in any of its forms."""
        for form in self._key_forms:
            text = text.replace(form, "***")
        return text

    def _fail(self, cause: str, *, kind: str | None = "server",
              retry_after: float | None = None) -> BackendError:
        """One line naming the model and the cause; the key never in it (redacted before
        the line is cut, so no part of it is left at the cut, and before its spaces are
        joined, and after, in case the joining made one)."""
        text = self._scrub(f"model {self.model!r} at {self.api_base}: {cause}")
        text = self._scrub(" ".join(text.split()))[:500]
        if kind is None:
            return BackendError(text)
        return TransientBackendError(text, kind=kind, retry_after=retry_after)

    def _status_error(self, status: int, headers: Any, body: bytes) -> BackendError:
        message = _server_message(self._redact(body))
        if status == 429 and "insufficient_quota" in _error_code(body):
            # OpenAI's spent quota (or billing limit): no retry helps, each waits a backoff
            return self._fail(f"HTTP 429 insufficient_quota (the account's quota is spent): "
                              f"{message}", kind=None)
        if status == 429:
            return self._fail(f"HTTP 429 rate limited: {message}", kind="rate_limit",
                              retry_after=_retry_after(headers))
        if status in TRANSIENT_STATUS:
            return self._fail(f"HTTP {status}: {message}", retry_after=_retry_after(headers))
        if status in (401, 403):
            return self._fail(f"HTTP {status} authentication failed (check api_key_env): "
                              f"{message}", kind=None)
        if 300 <= status < 400:
            # not followed: a 301/302 turns the POST into a GET without its body, and a
            # redirect to another origin (http to https too) goes without the key
            where = headers.get("Location") or "nowhere (no Location)"
            return self._fail(f"HTTP {status}: POST {self.url} redirects to {where}; set "
                              "api_base to the address it points to", kind=None)
        if status in (404, 405):
            message = f"{message} (POST {self.url}: is api_base the server's /v1 address?)"
        if status == 400:
            refused = _refuses_max_tokens(body)
            if not refused:
                message += _refusal_hint(body)
            return _Refused(self._fail(f"HTTP {status}: {message}", kind=None), status,
                            max_tokens=refused)
        return _Refused(self._fail(f"HTTP {status}: {message}", kind=None), status)

    def _transport_error(self, exc: BaseException) -> BackendError:
        what = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TimeoutError):
            return self._fail(f"no answer within {self._timeout.total:g} s", kind="timeout")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return self._fail(f"cannot connect ({what})", kind="connection")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self._fail(f"truncated response ({what})", kind="malformed")
        if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
            return self._fail(f"connection lost ({what})", kind="connection")
        if isinstance(exc, aiohttp.InvalidURL):
            return self._fail(f"invalid api_base ({what})", kind=None)
        return self._fail(what, kind="connection")

    async def _read(self, resp: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
        """A response's body, up to ``MAX_RESPONSE_BYTES`` (past it: malformed); with
        ``limit``, its first ``limit`` bytes, the rest left unread."""
        cap = MAX_RESPONSE_BYTES if limit is None else limit
        if (resp.content_length is not None and resp.content_length <= cap
                and "Content-Encoding" not in resp.headers):  # (a small gzip may be huge)
            return await resp.read()  # the usual case, as fast as ever: its length is known
        raw = bytearray()
        async for data in resp.content.iter_any():
            raw += data
            if len(raw) > cap:
                if limit is not None:
                    return bytes(raw[:limit])
                raise self._fail(f"response over {MAX_RESPONSE_BYTES >> 20} MiB",
                                 kind="malformed")
        return bytes(raw)

    async def _lines(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The lines of an event stream, ended by CRLF, LF or CR (all three are SSE's), the
        whole stream held to ``MAX_RESPONSE_BYTES``."""
        buf = b""
        total = 0
        cr = False  # the last piece ended with CR: an LF starting the next one ends nothing
        async for data in chunks:
            total += len(data)
            if total > MAX_RESPONSE_BYTES:
                raise self._fail(f"stream over {MAX_RESPONSE_BYTES >> 20} MiB",
                                 kind="malformed")
            if cr and data.startswith(b"\n"):
                data = data[1:]
            cr = data.endswith(b"\r")
            *lines, buf = _LINE_END.split(buf + data)
            for line in lines:
                yield line
        if buf:
            yield buf

    def _adapt(self, body: dict[str, Any], error: BaseException) -> bool:
        """Whether ``body`` now is what the server's refusal asks for, to be sent again:
        ``max_tokens`` as ``max_completion_tokens``, the field of this model's requests from
        now on (no refused round trip per call)."""
        if isinstance(error, _Refused) and error.max_tokens and "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
            self._tokens_field = "max_completion_tokens"
            return True
        return False

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        session = await self._session()
        while True:
            data = json.dumps(body).encode()
            try:
                async with session.post(self.url, data=data, headers=self._headers,
                                        allow_redirects=False) as resp:
                    status, headers = resp.status, resp.headers
                    raw = await self._read(resp, None if status == 200 else ERROR_BODY_BYTES)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise self._transport_error(exc) from None
            if status == 200:
                break
            error = self._status_error(status, headers, raw)
            if not self._adapt(body, error):
                raise error
        try:
            return self._parse(raw)
        except _NotJSON:
            if not (headers.get("Content-Type", "").startswith("text/event-stream")
                    or raw.lstrip().startswith((b"data:", b"event:"))):
                raise
        # a server (or a proxy) that streams whether asked or not: read as a stream is
        return self._whole(await self._events(_once(raw), body.get("n", 1), None))

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """The JSON object of a 200 response's body."""
        try:
            out = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON; nested past the parser's depth
            error = self._fail(f"response is not JSON ({len(raw)} bytes: "
                               f"{self._redact(raw)[:80].decode('utf-8', 'replace')!r})")
            raise _NotJSON(str(error), kind="malformed") from None
        if not isinstance(out, dict):
            raise self._fail("response is not a JSON object", kind="malformed")
        return out

    def _error_in(self, out: dict[str, Any]) -> BackendError | None:
        """A 200 whose body (or stream event) is an error object: a server failure, retried,
        with the server's own message."""
        err = out.get("error")
        if not err or out.get("choices"):
            return None
        message = self._scrub(str((err.get("message") if isinstance(err, dict) else err) or err))
        return self._fail(f"error in a 200 response: {message[:200]}")

    def _content(self, value: Any) -> str:
        """The text of a message's (or delta's) content: a string, null (none: a tool call,
        or a reasoning model that spent its tokens), or a list of text parts."""
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) for p in value):
            return "".join(p["text"] for p in value
                           if p.get("type", "text") == "text" and isinstance(p.get("text"), str))
        raise self._fail(f"content is a {type(value).__name__}, not text", kind="malformed")

    def _completions(self, out: dict[str, Any], request: GenerationRequest, keep: int
                     ) -> list[Completion]:
        """The first ``keep`` choices of one response, in index order, with the response's
        usage shared out over them (a server that sent more choices than asked billed them
        too). A usage field that is missing or no token count is estimated, never trusted."""
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._error_in(out) or self._fail("response without choices",
                                                    kind="malformed")
        if not all(isinstance(c, dict) for c in choices):
            raise self._fail("response with a choice that is not an object", kind="malformed")
        indices = [c.get("index") for c in choices]
        if all(type(i) is int for i in indices) and len(set(indices)) == len(indices):
            choices = sorted(choices, key=lambda c: int(c["index"]))
        # else: missing, repeated or odd indices say nothing of order: the order received
        choices = choices[:keep]
        if self.chat:
            messages = [m for c in choices if isinstance(m := c.get("message"), dict)]
            if len(messages) < len(choices):  # a null message is no answer, not an empty one
                raise self._fail("response with a choice without a message", kind="malformed")
            texts = [self._content(m.get("content")) for m in messages]
        else:
            if any(c.get("text") is None for c in choices):  # (a chat-shaped choice, say)
                raise self._fail("response with a choice without text", kind="malformed")
            texts = [self._content(c["text"]) for c in choices]
        reasons = [str(c.get("finish_reason") or "stop") for c in choices]
        failed = [r for r in reasons if r in FAILED_FINISH]
        if failed:
            raise self._fail(f"the server ended an answer with finish_reason {failed[0]!r}")
        prompt, completion = _usage_counts(out.get("usage"), texts)
        if prompt is None:
            prompt = self.count_tokens(request.messages)
        if completion is None:
            completion = sum(estimate_text_tokens(t) for t in texts)
        if len(texts) == 1:  # what _split_usage gives for one choice, without the shares
            return [Completion(text=texts[0], prompt_tokens=prompt, completion_tokens=completion,
                               finish_reason=reasons[0])]
        return _split_usage(texts, reasons, prompt, completion)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        got: list[Completion] = []
        if request.n > 1 and self._native_n:
            try:
                got = self._completions(await self._post(self._body(request, request.n,
                                                                    request.seed)),
                                        request, request.n)
            except _Refused as exc:
                if exc.status not in (400, 422):
                    raise
                # some servers refuse n > 1 outright (Groq, `tts-graph serve`): when the same
                # request for one sample is answered, this server is asked one at a time
                got = self._completions(await self._post(self._body(request, 1, request.seed)),
                                        request, 1)
                self._native_n = False
        if not got:  # one sample asked, or n not native
            return self._completions(await self._post(self._body(request, 1, request.seed)),
                                     request, 1)
        if len(got) < request.n:
            # this server ignores n (or caps it): the binding asks for the rest, a request
            # each under the model's limits, and splits the samples from now on
            self._native_n = False
        return got

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> list[Completion]:
        if request.n != 1:
            return await super().stream(request, on_text)
        body = self._body(request, 1, request.seed)
        body["stream"] = True
        if self._stream_usage:
            body["stream_options"] = {"include_usage": True}
        while True:  # each pass that asks again has taken a field out: at most three
            try:
                out = await self._stream(body, request, on_text)
            except _Refused as exc:
                if self._adapt(body, exc):
                    continue
                if "stream_options" not in body or exc.status not in (400, 422):
                    raise
                # servers that refuse fields they do not know (Mistral's 422, older Azure API
                # versions' 400) refuse stream_options: when the same stream without it is
                # answered, this server is not asked for it again (usage is then estimated)
                del body["stream_options"]
                continue
            if self._stream_usage and "stream_options" not in body:
                self._stream_usage = False
            return out

    async def _stream(self, body: dict[str, Any], request: GenerationRequest,
                      on_text: TextSink) -> list[Completion]:
        session = await self._session()
        try:
            async with session.post(self.url, data=json.dumps(body).encode(),
                                    headers=self._headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise self._status_error(resp.status, resp.headers,
                                             await self._read(resp, ERROR_BODY_BYTES))
                if resp.content_type == "application/json":
                    # a server that does not stream answers with the whole response
                    (whole,) = self._completions(self._parse(await self._read(resp)), request, 1)
                    on_text(whole.text)
                    return [whole]
                pieces, reasons, usage = await self._events(resp.content.iter_any(), 1,
                                                            on_text)
        except (asyncio.CancelledError, BackendError):
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._transport_error(exc) from None
        text = "".join(pieces[0])
        prompt, completion = _usage_counts(usage, [text])
        if prompt is None:  # a server that sends no usable usage in streams: estimates
            prompt = self.count_tokens(request.messages)
        if completion is None:
            completion = len(pieces[0])  # about one token per event
        return [Completion(text=text, prompt_tokens=prompt, completion_tokens=completion,
                           finish_reason=reasons.get(0) or "stop")]

    async def _events(self, chunks: AsyncIterator[bytes], n: int, on_text: TextSink | None
                      ) -> tuple[dict[int, list[str]], dict[int, str], Any]:
        """An event stream's answers: the text pieces and the finish_reason of each choice
        with an index below ``n`` (one without an index is choice 0; choice 0's pieces go to
        ``on_text`` as they come), and the stream's usage (None if it sent none). A stream
        that fails, or ends before its answers do, raises."""
        pieces: dict[int, list[str]] = {}
        reasons: dict[int, str] = {}
        usage: Any = None
        event = pending = payload = b""
        done = False
        async for line in self._lines(chunks):
            if line.startswith(b"event:"):
                event = line[6:].strip()
                continue
            if not line.startswith(b"data:"):
                if not line.strip():
                    event = b""  # a blank line ends an event
                    if pending:  # its data lines never made one JSON value
                        raise self._fail("malformed stream event "
                                         f"{self._redact(pending)[:80]!r}", kind="malformed")
                continue  # comments, keep-alives, other fields
            payload = line[5:].strip()
            if payload == b"[DONE]" and not pending:
                done = True
                break
            if pending:  # an event's data may span lines, joined by LF
                payload = pending + b"\n" + payload
            try:
                chunk = json.loads(payload)
            except (ValueError, RecursionError):
                # the rest of it may be on the next data line; a server that puts no blank
                # line between events is still read event by event
                if len(payload) > PENDING_EVENT_BYTES:  # each try reads it all
                    raise self._fail("malformed stream event "
                                     f"{self._redact(payload)[:80]!r}",
                                     kind="malformed") from None
                pending = payload
                continue
            pending = b""
            try:
                if not isinstance(chunk, dict):
                    raise ValueError("not an object")
                if event == b"error" and "error" not in chunk:
                    chunk = {"error": chunk}
                failure = self._error_in(chunk)
                if failure is not None:  # the text so far is not an answer
                    raise failure
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    index = choice.get("index")
                    if index is None:
                        index = 0
                    elif type(index) is not int or not 0 <= index < n:
                        continue  # a choice not asked for is not part of the answers
                    got = pieces.get(index)
                    if got is None:
                        got = pieces[index] = []
                    delta = self._content((choice.get("delta") or {}).get("content")
                                          if self.chat else choice.get("text"))
                    if delta:
                        got.append(delta)
                        if index == 0 and on_text is not None:
                            on_text(delta)
                    if choice.get("finish_reason"):
                        reason = reasons[index] = str(choice["finish_reason"])
                        if reason in FAILED_FINISH:
                            raise self._fail("the server ended the stream with "
                                             f"finish_reason {reason!r}")
            except (ValueError, AttributeError, TypeError, RecursionError):
                raise self._fail(f"malformed stream event {self._redact(payload)[:80]!r}",
                                 kind="malformed") from None
        if pending:
            raise self._fail(f"malformed stream event {self._redact(pending)[:80]!r}",
                             kind="malformed")
        if not done and (not reasons or len(reasons) < len(pieces)):
            raise self._fail("stream ended before its last event", kind="malformed")
        if not pieces:
            raise self._fail("stream without choices", kind="malformed")
        if any(not got and i not in reasons for i, got in pieces.items()):
            raise self._fail("stream ended without text or a finish_reason", kind="malformed")
        return pieces, reasons, usage

    def _whole(self, streamed: tuple[dict[int, list[str]], dict[int, str], Any]
               ) -> dict[str, Any]:
        """A stream's answers as the response a request that did not stream gets."""
        pieces, reasons, usage = streamed
        field = "message" if self.chat else "text"
        choices = [{"index": i, "finish_reason": reasons.get(i),
                    field: {"role": "assistant", "content": "".join(got)} if self.chat
                    else "".join(got)} for i, got in sorted(pieces.items())]
        return {"choices": choices, "usage": usage}


def create_openai_backend(spec: ModelSpec) -> OpenAIBackend:
    return OpenAIBackend(spec)
