"""The chat completion request: which fields are accepted, ignored or refused, the body and
nesting limits, and the validation of a body into a ``ChatRequest`` (every problem an
``APIError`` 400 or 413 naming it)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from .api_error import APIError, clip
from .conversation import _ROLES, _text, conversation_to_question
from .params import check_params

#: request fields that are accepted and ignored: the graph's own settings rule
IGNORED_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "metadata", "store",
    "service_tier", "reasoning_effort", "verbosity", "parallel_tool_calls",
    "prompt_cache_key", "safety_identifier", "stream_options",
})
#: request fields a graph cannot honour (400 when given a non-empty value)
UNSUPPORTED_PARAMS = frozenset({
    "tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
    "response_format", "audio", "modalities", "prediction", "web_search_options",
})
_KNOWN = IGNORED_PARAMS | UNSUPPORTED_PARAMS | {"model", "messages", "stream", "n", "tts_graph"}
#: message fields that carry nothing when empty (clients echo them back from responses)
_EMPTY_OK = {"refusal", "annotations", "audio", "function_call", "tool_calls"}
#: default request body limit: a long conversation is a few hundred KB, so 4 MB is generous
MAX_BODY_BYTES = 4 * 1024 * 1024
#: an OpenAI body is ~5 levels deep; deeper ones are abuse (and would exhaust the recursion
#: limit of whatever walks them)
MAX_JSON_DEPTH = 64
#: default time for a whole request body to arrive once its headers have: 4 MB at 70 KB/s
BODY_TIMEOUT_S = 60.0


@dataclass
class ChatRequest:
    model: str
    question: str
    stream: bool
    include_usage: bool
    include_steps: bool
    include_calls: bool


def _given(value: Any) -> bool:
    return value is not None and value != [] and value != {} and value is not False


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a chat completion body; raises ``APIError`` (400) naming the problem."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_int=_bounded_int)
    except (_NotJSON, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's C parser recurses per level: ~1000 levels exhaust it
        raise APIError(400, _too_deep()) from None
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise APIError(400, _too_deep())
    where = _lone_surrogate(body)
    if where is not None:
        # valid JSON (a "\ud800" escape) but not Unicode: it cannot be encoded as UTF-8, so
        # neither the answer nor an error message naming it could be sent back
        raise APIError(400, "the request body holds a lone UTF-16 surrogate (an unpaired "
                       "\\ud800-\\udfff escape): not valid Unicode", param=where or None)
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in _KNOWN)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise APIError(400, "unrecognized request argument(s): "
                       + ", ".join(clip(k) for k in unknown[:10]) + more,
                       param=clip(unknown[0]))
    bad = sorted(k for k in UNSUPPORTED_PARAMS if _unsupported(k, body.get(k)))
    if bad:
        raise APIError(400, "not supported by tts-graph (a graph returns one text answer): "
                       + ", ".join(bad), param=bad[0], code="unsupported_parameter")
    check_params(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: the name of a graph (GET /v1/models)",
                       param="model")
    if body.get("n") not in (None, 1):  # its type and range were checked as OpenAI does
        raise APIError(400, "'n' must be 1: a graph gives one answer (it samples inside)",
                       param="n", code="unsupported_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", param="stream")
    opts = body.get("stream_options")
    ext = body.get("tts_graph")
    if ext is not None and (not isinstance(ext, dict)
                            or any(k not in ("steps", "calls") for k in ext)
                            or any(not isinstance(v, bool) for v in ext.values())):
        raise APIError(400, "'tts_graph' must be an object like {\"steps\": true, "
                       "\"calls\": true}", param="tts_graph")
    messages = body.get("messages")
    _check_messages(messages)
    return ChatRequest(
        model=model, question=conversation_to_question(messages), stream=bool(stream),
        include_usage=bool((opts or {}).get("include_usage")),
        include_steps=bool((ext or {}).get("steps")), include_calls=bool((ext or {}).get("calls")),
    )


class _NotJSON(ValueError):
    """A value Python's json accepts but JSON (RFC 8259) or this server does not."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


#: longer integers are no sampling parameter; Python refuses to parse past 4300 digits anyway
#: (with an error that would be a 500)
MAX_INT_DIGITS = 100


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _NotJSON(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _lone_surrogate(value: Any) -> str | None:
    """The top-level field of ``value`` whose strings (keys included) hold a lone surrogate,
    "" when that is a top-level key, None when there is none (iterative)."""
    tops = value.items() if isinstance(value, dict) else [("", value)]
    for key, top in tops:
        if _has_surrogate(key):
            return ""
        stack = [top]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _has_surrogate(item):
                    return key
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_deep() -> str:
    return f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests more than ``limit`` levels (level by level: no recursion,
    and 3-4x faster than a stack of (item, depth) pairs on a body of many small lists)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            below.extend([c for c in (item.values() if isinstance(item, dict) else item)
                          if isinstance(c, dict | list)])
        level = below
        depth += 1
    return False


async def read_body(request: Request, limit: int,
                    timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The request body, or ``APIError`` 413 once it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading, else while the chunks arrive (never buffered
    past the limit); 408 when the whole body has not arrived within ``timeout_s``; 415 when
    a ``Content-Type`` is given and is not JSON, or the body is compressed."""
    _check_content_type(request.headers.get("content-type"))
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # else the compressed bytes are reported as "not valid JSON: can't decode byte 0x8b"
        raise APIError(415, f"Unsupported content encoding: {clip(encoding)!r}. Send the "
                       "request body uncompressed.", code="unsupported_content_encoding")
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    try:
        # a client that stalls mid-body (or after "Expect: 100-continue") would otherwise
        # hold its connection for ever: uvicorn has no timeout once the headers are in
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s",
                       code="request_timeout") from None
    except ClientDisconnect:
        # gone mid-body: nobody reads the answer, but it must not be a traceback in the log
        raise APIError(400, "the client disconnected before the whole body arrived",
                       code="client_disconnected") from None
    return b"".join(parts)


def _check_content_type(value: str | None) -> None:
    """No ``Content-Type`` is taken as JSON (what ``requests`` sends for a string body); a
    form or text type is refused, as OpenAI does: those are what a browser may send
    cross-site without asking (a CORS "simple request"), so a web page could not make a
    local server without an API key spend tokens for it."""
    if value is None:
        return
    media = value.partition(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/")
                                       and media.endswith("+json")):
        return
    raise APIError(415, f"Unsupported content type: {value[:100]!r}. This API method only "
                   "accepts 'application/json' requests (with curl: -H 'Content-Type: "
                   "application/json').", code="unsupported_content_type")


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than {limit:,} bytes (the server's "
                    "--max-body-mb)", code="request_too_large")


def _unsupported(key: str, value: Any) -> bool:
    if key in ("tool_choice", "function_call"):
        return value not in (None, "none")
    if key == "response_format":
        return value is not None and value != {"type": "text"}
    if key == "modalities":
        return value is not None and value != ["text"]
    return _given(value)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of messages",
                       param="messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(400, f"{where}: a message must be an object", param=where)
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:  # a list or object: unhashable
            raise APIError(400, f"{where}.role: {role!r} is not supported (use system, "
                           "developer, user or assistant; tool messages are not supported)",
                           param=f"{where}.role")
        extra = sorted(k for k in m if k not in ("role", "content", "name")
                       and not (k in _EMPTY_OK and not _given(m[k])))
        if extra:
            raise APIError(400, f"{where}: not supported: {', '.join(extra)}",
                           param=f"{where}.{extra[0]}")
        if m.get("name") is not None and not isinstance(m["name"], str):
            raise APIError(400, f"Invalid type for '{where}.name': expected a string.",
                           param=f"{where}.name", code="invalid_type")
        content = m.get("content")
        if content is None and role == "assistant" and i < len(messages) - 1:
            continue
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):
                    raise APIError(400, f"{where}.content[{j}]: only text parts "
                                   "({\"type\": \"text\", \"text\": ...}) are supported",
                                   param=f"{where}.content")
        elif not isinstance(content, str):
            raise APIError(400, f"{where}.content: expected a string or a list of text parts",
                           param=f"{where}.content")
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must come from the user: it is the question",
                       param="messages")
    if not _text(messages[-1].get("content")).strip():
        raise APIError(400, "the last user message is empty", param="messages")
