"""``create_app``: the FastAPI app serving graphs as OpenAI models: its routes, the API key
check, and every error answered in OpenAI's format."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GraphError, GraphErrors
from .api_error import APIError, clip
from .graphs import load_graphs
from .protocol import BODY_TIMEOUT_S, MAX_BODY_BYTES, parse_chat_request, read_body
from .responses import _finish_reason, _infra_error, extension, usage_block
from .runs import ServerState, _run_or_cancel
from .sse import KEEPALIVE_S, _stream

#: bodies at least this large are parsed in a worker thread, at most ``THREADED_PARSES`` at
#: once (a 64 KB body takes about a millisecond: below that the hop costs more than it saves)
THREADED_PARSE_BYTES = 64 * 1024
THREADED_PARSES = 2

if TYPE_CHECKING:
    from ..cache import ResponseCache
    from ..graph import Graph


def create_app(graphs: Mapping[str, Graph] | Sequence[str | Path | Graph], *,
               api_key: str | None = None, max_concurrency: int = 8,
               cache: ResponseCache | str | Path | None = None,
               keepalive_s: float = KEEPALIVE_S,
               max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """The OpenAI-compatible app serving ``graphs``.

    ``graphs`` is a mapping of model id → ``Graph`` (the caller keeps ownership: the app does
    not close them), or a list of graph files, directories (their ``*.yaml``) and ``Graph``
    objects, which the app identifies by graph name and, for the files it loads, closes on
    shutdown. ``cache`` applies to graphs loaded from files. ``api_key``: requests need
    ``Authorization: Bearer <api_key>``. ``max_concurrency``: graph runs at once; further
    requests wait. ``max_body_bytes``: larger request bodies are a 413. ``body_timeout_s``:
    a body that has not all arrived this long after its headers is a 408. Raises
    ``GraphErrors`` for invalid files or duplicate names. With an ``api_key``, browsers may
    call the API from any web page (CORS), as OpenAI's; without one, from none."""
    from ..graph import Graph

    if max_concurrency < 1:
        raise ValueError("max_concurrency must be >= 1")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    if not body_timeout_s > 0:
        raise ValueError("body_timeout_s must be > 0")
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
    parse_slots = asyncio.Semaphore(THREADED_PARSES)
    expected = api_key.encode() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for g in owned:
                with contextlib.suppress(Exception):
                    await g.aclose()

    # no redirect from "/path/" to "/path": a 307 with an empty body, to a URL built from the
    # Host header, is no answer for an API client; each route takes both spellings instead
    app = FastAPI(title="tts-graph", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.tts = state
    if api_key:
        # browsers may call it from any page, as they may call OpenAI's API: the key (which a
        # page has only when its user gave it) guards it. Without a key, no CORS: no web page
        # may read the answers of a server anyone on the machine can call
        app.add_middleware(CORSMiddleware, allow_origins=["*"],
                           allow_methods=["GET", "HEAD", "POST"], allow_headers=["*"],
                           allow_private_network=True, max_age=600)

    def error(exc: APIError, headers: Mapping[str, str] | None = None) -> JSONResponse:
        headers = dict(headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if exc.status == 408 or exc.code == "client_disconnected":
            # the rest of the body may still come: the connection cannot carry a next request
            headers["Connection"] = "close"
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (f"no route {clip(request.method)} {clip(request.url.path)}" if exc.status_code in
                   (404, 405) else str(exc.detail))
        # the 405's Allow header says which methods the route has (RFC 9110 §15.5.6)
        return error(APIError(exc.status_code, message, code=code), exc.headers)

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        given = token.strip().encode("utf-8", "replace")
        # the scheme is case-insensitive (RFC 7235 §2.1); the key is not
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer "
                           "<key>'", type="authentication_error", code="invalid_api_key")

    def same_site_only(request: Request) -> None:
        """Without a key, a browser request from another origin is refused: a page may send a
        "simple" POST cross-site unasked (a Blob body carries no Content-Type at all), and it
        would run a graph, spending tokens, for whoever opened the page. Browsers always name
        the page's origin on such a request; other clients send no Origin."""
        origin = request.headers.get("origin")
        if expected is not None or origin is None:
            return
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise APIError(403, f"cross-origin request refused (Origin: {clip(origin)}): this "
                           "server has no API key, so web pages may not call it; start it "
                           "with --api-key-env to allow them", type="permission_error",
                           code="cross_origin_forbidden")

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
        return APIError(404, f"the model '{clip(name)}' does not exist: no graph of that name "
                        f"(graphs: {', '.join(sorted(table)) or 'none'})",
                        code="model_not_found", param="model")

    # HEAD wherever GET is (RFC 9110 §9.3.2: load balancers probe with it)
    @app.api_route("/health", methods=["GET", "HEAD"])
    @app.api_route("/health/", methods=["GET", "HEAD"], include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    @app.api_route("/v1/models/", methods=["GET", "HEAD"], include_in_schema=False)
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card(n) for n in table]}

    @app.api_route("/v1/models/{model_id}", methods=["GET", "HEAD"])
    @app.api_route("/v1/models/{model_id}/", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id not in table:
            raise unknown_model(model_id)
        return model_card(model_id)

    @app.post("/v1/chat/completions")
    @app.post("/v1/chat/completions/", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        same_site_only(request)
        raw = await read_body(request, max_body_bytes, body_timeout_s)
        if len(raw) < THREADED_PARSE_BYTES:
            req = parse_chat_request(raw)
        else:
            # parsing and checking MBs of JSON takes seconds of CPU: on the event loop it
            # would stall every other client (their streams, their keep-alives) meanwhile;
            # few at once, as the parsed objects weigh ~20x the body
            async with parse_slots:
                req = await asyncio.to_thread(parse_chat_request, raw)
        if req.model not in table:
            raise unknown_model(req.model)
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if req.stream:
            return StreamingResponse(
                _stream(state, request, req, cid, created, keepalive_s),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await _run_or_cancel(state, request, req)
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


    return app
