"""Graph runs of one server: at most ``max_concurrency`` at once (the rest wait in arrival
order), cancelled when their client disconnects, and failures that escape the executor
turned into API errors."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fastapi import Request

from ..errors import TTSGraphError
from .api_error import APIError
from .protocol import ChatRequest

if TYPE_CHECKING:
    from ..executor import QueryResult
    from ..graph import Graph
    from ..streaming import TextSink

log = logging.getLogger("tts_graph.server")


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


async def _run_or_cancel(state: ServerState, request: Request, req: ChatRequest
                         ) -> QueryResult | None:
    """Run the graph; None when the client disconnected first (the run is cancelled)."""
    task = asyncio.create_task(_guarded(state, req))
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


async def _guarded(state: ServerState, req: ChatRequest, on_text: TextSink | None = None
                   ) -> QueryResult:
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
