"""Graphs as OpenAI-compatible models: ``tts-graph serve`` and ``create_app``.

Any client that speaks the OpenAI chat API (the ``openai`` package, litellm, LangChain...) can
call a graph like a model: the model id is the graph's name.

    GET  /v1/models               every graph, in OpenAI's list format (id = graph name)
    GET  /v1/models/{id}          one graph
    POST /v1/chat/completions     run graph ``model`` on the conversation
    GET  /health                  {"status": "ok"} (no auth: for load balancers)

**The conversation.** The question is the content of the *last* message, which must come from
the user. When it is the only message, the graph gets it verbatim (so the answer, the usage
and the response cache are exactly those of ``graph.run(question)``). When earlier messages
exist (system or developer instructions, previous turns), they are prepended to the question as
a plain transcript, one ``Role: content`` entry per message, in order (see
``conversation_to_question``)::

    Conversation so far:
    System: Answer tersely.
    User: What is 2 + 2?
    Assistant: 4

    Question: And times 3?

Only text content is accepted (a string, or a list of ``{"type": "text"}`` parts).

**The answer.** ``choices[0].message.content`` is the final node's text (for a vote, the text
of a sample with the winning answer). ``usage`` sums prompt and completion tokens over *every*
call the graph made (cached calls included: they are calls of the graph, only not billed).
The extension field ``tts_graph`` holds the status, the extracted answer, the latency, the cost
(``cost_usd``, and ``billed_usd`` without cached calls), the usage totals and the per-node and
per-model breakdowns; a request may add ``"tts_graph": {"steps": true, "calls": true}`` (with
the ``openai`` client: ``extra_body=...``) to also get every step's candidates and every call.
``finish_reason`` is ``stop``, or ``length`` when the graph was cut short by its budget or
timeout (status ``budget`` or ``timeout``: still a 200, with the partial answer). A run that
ends in an infrastructure error (status ``error``: a backend failed after its retries)
answers 502 with an OpenAI-style error body, plus the same ``tts_graph`` field.

**Parameters.** The graph's own settings rule: ``temperature``, ``top_p``, ``max_tokens``,
``max_completion_tokens``, ``seed``, ``stop``, penalties, ``logit_bias``, ``user``,
``metadata``, ``store``, ``service_tier``, ``reasoning_effort`` and the like are accepted
and ignored. Sampling seeds come from the graph, so the same question gets the same answer.
``n`` must be 1. Parameters that would change what comes back and that a graph cannot honour
(``tools``, ``functions``, ``tool_choice``, ``response_format`` other than text,
``logprobs``, ``audio``, ``prediction``, ``web_search_options``...) are a 400 naming them, as
are parameters OpenAI does not know.

**Streaming** (``stream: true``). Server-Sent Events in OpenAI's chunk format, ending with
``data: [DONE]``. A first chunk with the assistant role goes out at once. When the graph's
output node is a model call whose answer *is* its text — a ``solver``, ``fuser`` or
``refiner`` drawing one sample — its text is streamed token by token as the model decodes
it (the graph's earlier steps run first: the first token waits for them). Any other output
(a ``vote``, a ``judge``'s or ``ranker``'s pick, several samples, a debate) is *sent when it
is ready*, in one content chunk, as is an answer replayed from the response cache. SSE
comments (``: keep-alive``) go out while nothing else does. Then a chunk with
``finish_reason`` (and the ``tts_graph`` field), and, when the request asked for
``stream_options: {"include_usage": true}``, a usage chunk with empty ``choices``. A call
retried mid-stream does not repeat text the client already has. An infrastructure error
mid-stream is sent as ``data: {"error": {...}}`` (the ``openai`` client raises it) and the
stream ends; text already sent stays sent.

**Errors** follow OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400
malformed body (not JSON, nested deeper than ``MAX_JSON_DEPTH``) or unsupported parameter,
401 missing or wrong API key, 404 unknown graph or route, 413 body larger than
``max_body_bytes``, 502 infrastructure error of the graph run. A bad body never reaches the
log as a traceback.

**Auth.** With an API key, every ``/v1`` request needs ``Authorization: Bearer <key>`` (the
scheme in any case, as RFC 7235 says). The key is compared in constant time and never logged
or echoed.

**Per-client limits.** Every request, whoever sends it: a body of at most ``max_body_bytes``
(``--max-body-mb``, default 4 MB; the ``Content-Length`` is checked before anything is read,
a chunked body is counted as it arrives and cut off at the limit), JSON nested at most
``MAX_JSON_DEPTH`` levels, and a header section of at most 64 KB (uvicorn's h11 limit).
There is *no* per-client rate limit or quota: all clients share ``max_concurrency`` graph
runs and wait in one queue. Put the server behind a proxy that limits rates per client when
it faces untrusted callers.

**Concurrency.** At most ``max_concurrency`` graph runs at once per server; further requests
*wait* in arrival order (no 429), and their wait counts towards the client's own timeout.
A client that disconnects (while waiting or running, streaming or not) cancels its graph run:
the run's pending backend calls are cancelled, not left to finish unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import GraphError, GraphErrors, TTSGraphError

if TYPE_CHECKING:
    from .cache import ResponseCache
    from .executor import QueryResult
    from .graph import Graph
    from .streaming import TextSink

log = logging.getLogger("tts_graph.server")

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
_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
#: message fields that carry nothing when empty (clients echo them back from responses)
_EMPTY_OK = {"refusal", "annotations", "audio", "function_call", "tool_calls"}
KEEPALIVE_S = 5.0
#: default request body limit: a long conversation is a few hundred KB, so 4 MB is generous
MAX_BODY_BYTES = 4 * 1024 * 1024
#: an OpenAI body is ~5 levels deep; deeper ones are abuse (and would exhaust the recursion
#: limit of whatever walks them)
MAX_JSON_DEPTH = 64


class APIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}, **self.extra}


# ------------------------------------------------------------------------------- graphs


def graph_files(sources: Iterable[str | Path]) -> list[Path]:
    """Graph files named by ``sources``: files as given, directories as their ``*.yaml`` and
    ``*.yml`` files (sorted). A missing path or an empty directory is a ``GraphError``."""
    files: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise GraphError("no graph files (*.yaml) in this directory", source=str(p))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise GraphError("no such file or directory", source=str(p))
    return files


def load_graphs(sources: Iterable[str | Path], *,
                cache: ResponseCache | str | Path | None = None) -> dict[str, Graph]:
    """Load and validate graph files (directories: every ``*.yaml``), keyed by graph name.

    Every problem is collected: a ``GraphErrors`` lists them all, one line each (file:line:
    field: message). Two graphs with the same name are an error. Backends are bound now, so a
    missing API key or model file is reported here, not at the first request."""
    from .graph import Graph
    from .model_checks import check_models

    problems: list[GraphError] = []
    graphs: dict[str, Graph] = {}
    where: dict[str, Path] = {}
    for path in graph_files(sources):
        try:
            g = Graph.from_yaml(path, cache=cache)
            checked = check_models(g.compiled.doc)
            if checked.errors or checked.warnings:  # with file:line, before binding
                problems.extend([*checked.errors, *checked.warnings])
                continue
            g.executor.bindings()
        except GraphErrors as exc:
            problems.extend(exc.errors)
            continue
        except GraphError as exc:
            problems.append(exc)
            continue
        except TTSGraphError as exc:
            problems.append(GraphError(str(exc), source=str(path)))
            continue
        if g.name in graphs:
            problems.append(GraphError(
                f"graph name '{g.name}' is also the name of {where[g.name]} (names are the "
                "model ids: they must differ)", source=str(path)))
            continue
        graphs[g.name] = g
        where[g.name] = path
    if problems:
        raise GraphErrors(problems)
    return graphs


def conversation_to_question(messages: Sequence[Mapping[str, Any]]) -> str:
    """The question a graph gets for a (validated) conversation: the last message's text,
    after a transcript of the earlier ones when there are any (see the module docstring)."""
    texts = [(_ROLES[str(m["role"])], _text(m.get("content"))) for m in messages]
    question = texts[-1][1]
    if len(texts) == 1:
        return question
    lines = [f"{role}: {text}" for role, text in texts[:-1]]
    return "Conversation so far:\n" + "\n".join(lines) + f"\n\nQuestion: {question}"


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content)


# ------------------------------------------------------------------------ request parsing


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
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's C parser recurses per level: ~1000 levels exhaust it
        raise APIError(400, _too_deep()) from None
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise APIError(400, _too_deep())
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    unknown = sorted(k for k in body if k not in _KNOWN)
    if unknown:
        raise APIError(400, "unrecognized request argument(s): " + ", ".join(unknown),
                       param=unknown[0])
    bad = sorted(k for k in UNSUPPORTED_PARAMS if _unsupported(k, body.get(k)))
    if bad:
        raise APIError(400, "not supported by tts-graph (a graph returns one text answer): "
                       + ", ".join(bad), param=bad[0], code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: the name of a graph (GET /v1/models)",
                       param="model")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise APIError(400, "'n' must be 1: a graph gives one answer (it samples inside)",
                       param="n")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", param="stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
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


def _too_deep() -> str:
    return f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``APIError`` 413 once it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading, else while the chunks arrive (never buffered
    past the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


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
        if role not in _ROLES:
            raise APIError(400, f"{where}.role: {role!r} is not supported (use system, "
                           "developer, user or assistant; tool messages are not supported)",
                           param=f"{where}.role")
        extra = sorted(k for k in m if k not in ("role", "content", "name")
                       and not (k in _EMPTY_OK and not _given(m[k])))
        if extra:
            raise APIError(400, f"{where}: not supported: {', '.join(extra)}",
                           param=f"{where}.{extra[0]}")
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


# ---------------------------------------------------------------------------- responses


def usage_block(result: QueryResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def extension(result: QueryResult, *, steps: bool = False, calls: bool = False
              ) -> dict[str, Any]:
    """The ``tts_graph`` field of a response."""
    d = result.to_dict()
    out: dict[str, Any] = {
        "graph": result.graph, "status": result.status, "answer": result.answer,
        "error": result.error, "latency_s": d["latency_s"],
        "cost_usd": d["usage"]["cost_usd"], "billed_usd": d["usage"]["billed_usd"],
        "usage": d["usage"], "usage_by_node": d["usage_by_node"],
        "usage_by_model": d["usage_by_model"],
    }
    if steps:
        out["steps"] = d["steps"]
    if calls:
        out["calls"] = d["calls"]
    return out


def _finish_reason(result: QueryResult) -> str:
    return "stop" if result.status == "ok" else "length"


def _infra_error(model: str, result: QueryResult, ext: dict[str, Any]) -> APIError:
    return APIError(502, f"graph '{model}' failed: {result.error or 'infrastructure error'}",
                    type="upstream_error", code="graph_error", extra={"tts_graph": ext})


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


# ---------------------------------------------------------------------------------- app


class ServerState:
    """Counters of one app (``app.state.tts``): runs waiting, running, the peak of running,
    runs cancelled because their client went away."""

    def __init__(self, graphs: dict[str, Graph], max_concurrency: int,
                 owned: bool) -> None:
        self.graphs = graphs
        self.max_concurrency = max_concurrency
        self.owned = owned
        self.created = int(time.time())
        self.waiting = 0
        self.running = 0
        self.peak_running = 0
        self.cancelled = 0
        self.completed = 0
        self._sem: asyncio.Semaphore | None = None

    def sem(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._sem

    async def run(self, model: str, question: str, on_text: TextSink | None = None
                  ) -> QueryResult:
        """Run a graph under the server's concurrency limit (waiting for a slot)."""
        graph = self.graphs[model]
        self.waiting += 1
        admitted = False
        try:
            async with self.sem():
                self.waiting -= 1
                admitted = True
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
                try:
                    return await graph.arun(question, on_text=on_text)
                finally:
                    self.running -= 1
        finally:
            if not admitted:
                self.waiting -= 1


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has gone (call only after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(graphs: Mapping[str, Graph] | Sequence[str | Path | Graph], *,
               api_key: str | None = None, max_concurrency: int = 8,
               cache: ResponseCache | str | Path | None = None,
               keepalive_s: float = KEEPALIVE_S,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The OpenAI-compatible app serving ``graphs``.

    ``graphs`` is a mapping of model id → ``Graph`` (the caller keeps ownership: the app does
    not close them), or a list of graph files, directories (their ``*.yaml``) and ``Graph``
    objects, which the app identifies by graph name and, for the files it loads, closes on
    shutdown. ``cache`` applies to graphs loaded from files. ``api_key``: requests need
    ``Authorization: Bearer <api_key>``. ``max_concurrency``: graph runs at once; further
    requests wait. ``max_body_bytes``: larger request bodies are a 413. Raises
    ``GraphErrors`` for invalid files or duplicate names."""
    from .graph import Graph

    if max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    owned: list[Graph] = []
    if isinstance(graphs, Mapping):
        table: dict[str, Graph] = dict(graphs)
    else:
        table = {}
        paths = [g for g in graphs if not isinstance(g, Graph)]
        loaded = load_graphs(paths, cache=cache) if paths else {}
        owned = list(loaded.values())
        for g in [*(g for g in graphs if isinstance(g, Graph)), *owned]:
            if g.name in table:
                raise GraphErrors([GraphError(f"two graphs are named '{g.name}'",
                                              source="<graphs>")])
            table[g.name] = g
    state = ServerState(table, max_concurrency, owned=bool(owned))
    expected = api_key.encode() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for g in owned:
                with contextlib.suppress(Exception):
                    await g.aclose()

    app = FastAPI(title="tts-graph", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.tts = state

    def error(exc: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (f"no route {request.method} {request.url.path}" if exc.status_code in
                   (404, 405) else str(exc.detail))
        return error(APIError(exc.status_code, message, code=code))

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        given = token.strip().encode("utf-8", "replace")
        # the scheme is case-insensitive (RFC 7235 §2.1); the key is not
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer "
                           "<key>'", type="authentication_error", code="invalid_api_key")

    def model_card(name: str) -> dict[str, Any]:
        g = table[name]
        spec = g.spec
        return {
            "id": name, "object": "model", "created": state.created, "owned_by": "tts-graph",
            "tts_graph": {
                "description": spec.description, "nodes": list(spec.nodes),
                "output": spec.output,
                "models": {k: f"{m.backend}:{m.model}" for k, m in spec.models.items()},
                "budget": spec.budget.model_dump(exclude_none=True),
            },
        }

    def unknown_model(name: str) -> APIError:
        return APIError(404, f"the model '{name}' does not exist: no graph of that name "
                        f"(graphs: {', '.join(sorted(table)) or 'none'})",
                        code="model_not_found", param="model")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card(n) for n in table]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id not in table:
            raise unknown_model(model_id)
        return model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        req = parse_chat_request(await read_body(request, max_body_bytes))
        if req.model not in table:
            raise unknown_model(req.model)
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if req.stream:
            return StreamingResponse(
                _stream(request, req, cid, created), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await _run_or_cancel(request, req)
        if result is None:  # the client is gone: nobody reads this
            return JSONResponse({}, status_code=499)
        ext = extension(result, steps=req.include_steps, calls=req.include_calls)
        if result.status == "error":
            raise _infra_error(req.model, result, ext)
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": result.text or ""},
                         "finish_reason": _finish_reason(result), "logprobs": None}],
            "usage": usage_block(result),
            "tts_graph": ext,
        })

    async def _run_or_cancel(request: Request, req: ChatRequest) -> QueryResult | None:
        """Run the graph; None when the client disconnected first (the run is cancelled)."""
        task = asyncio.create_task(_guarded(req))
        watcher = asyncio.create_task(_until_disconnect(request))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is shutting down
            watcher.cancel()
            task.cancel()
            raise
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its calls are cancelled too
            state.cancelled += 1
            log.info("client disconnected: run of graph '%s' cancelled", req.model)
            return None
        return task.result()

    async def _guarded(req: ChatRequest, on_text: TextSink | None = None) -> QueryResult:
        """The run, with failures that escape the executor turned into API errors."""
        t0 = time.perf_counter()
        try:
            result = await state.run(req.model, req.question, on_text)
        except TTSGraphError as exc:
            log.warning("graph '%s' failed: %s", req.model, exc)
            raise APIError(502, f"graph '{req.model}' failed: {exc}", type="upstream_error",
                           code="graph_error") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("graph '%s' failed", req.model)
            raise APIError(500, f"graph '{req.model}' failed: internal error "
                           f"({type(exc).__name__})", type="server_error",
                           code="internal_error") from None
        state.completed += 1
        u = result.usage
        log.info("graph '%s': %s in %.2fs, %d calls, %d tokens", req.model, result.status,
                 time.perf_counter() - t0, u.calls, u.tokens)
        return result

    async def _stream(request: Request, req: ChatRequest, cid: str, created: int
                      ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None,
                  **extra: Any) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": req.model, "choices": [{"index": 0, "delta": delta,
                                                     "finish_reason": finish,
                                                     "logprobs": None}], **extra}

        pieces: asyncio.Queue[str] = asyncio.Queue()

        def drain(first: str = "") -> str:
            parts = [first]
            while not pieces.empty():
                parts.append(pieces.get_nowait())
            return "".join(parts)

        task = asyncio.create_task(_guarded(req, pieces.put_nowait))
        watcher = asyncio.create_task(_until_disconnect(request))
        try:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            while True:
                text = drain()
                if text:  # whatever arrived since the last chunk goes in one chunk
                    yield _sse(chunk({"content": text}))
                    continue
                if task.done():
                    break
                getter = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({task, watcher, getter}, timeout=keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield _sse(chunk({"content": drain(getter.result())}))
                    continue
                getter.cancel()
                if watcher in done and task not in done:
                    return  # the client is gone: the finally block cancels the run
                if not done:
                    yield b": keep-alive\n\n"
            watcher.cancel()
            try:
                result = task.result()
            except APIError as exc:
                yield _sse(exc.body())
                return
            ext = extension(result, steps=req.include_steps, calls=req.include_calls)
            if result.status == "error":
                yield _sse(_infra_error(req.model, result, ext).body())
                return
            yield _sse(chunk({}, _finish_reason(result), tts_graph=ext))
            if req.include_usage:
                yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                            "model": req.model, "choices": [], "usage": usage_block(result)})
            yield b"data: [DONE]\n\n"
        finally:
            # also reached when the server cancels this generator on a disconnect: no await
            # here (the cancellation would hit it), the run task cancels on its own
            watcher.cancel()
            if not task.done():
                task.cancel()
                state.cancelled += 1
                log.info("client disconnected: run of graph '%s' cancelled", req.model)

    return app


# -------------------------------------------------------------------------------- serving


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``OSError`` when the address is taken or invalid)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, _, proto, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info",
          access_log: bool = True) -> None:
    """Serve ``app`` on ``sock`` until interrupted (blocking). SIGINT (Ctrl-C) and SIGTERM
    shut down gracefully; after SIGINT this returns normally."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=5)
    # uvicorn raises the captured signal again once it has shut down: for SIGINT that is a
    # KeyboardInterrupt, which here means "stopped as asked"
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
