"""Streaming (``stream: true``): a chat completion as Server-Sent Events in OpenAI's chunk
format, with keep-alive comments while nothing else goes out."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from .api_error import APIError
from .protocol import ChatRequest
from .responses import _finish_reason, _infra_error, extension, usage_block
from .runs import ServerState, _guarded, _until_disconnect

log = logging.getLogger("tts_graph.server")
KEEPALIVE_S = 5.0


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _stream(state: ServerState, request: Request, req: ChatRequest, cid: str,
                  created: int, keepalive_s: float) -> AsyncIterator[bytes]:
    """The SSE byte stream of one chat completion (see the package docstring)."""
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

    task = asyncio.create_task(_guarded(state, req, pieces.put_nowait))
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
