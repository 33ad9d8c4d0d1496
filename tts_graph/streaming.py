"""Token streaming of a graph's answer: the text sink handed from the executor to a backend.

Only the output step can stream, and only when its text *is* one completion: a role that sets
``Role.streams`` (solver, fuser, the last revise of a refiner) issuing one call for one sample.
Any other output (a vote, a judge's pick, several samples) is sent whole when the query ends.

``TextStream`` keeps what its consumer has been sent consistent with the final answer:

- a retried call starts its text again: pieces that repeat what was already sent are dropped,
  so the consumer sees one seamless text (seeded samples usually come out the same);
- when the query ends, the rest of the final text is sent (all of it when nothing streamed:
  a cached sample, a budget cut, a role that does not stream);
- when an attempt's text departs from what was sent (an unseeded retry, a timeout whose
  answer came from an upstream step), nothing more is sent and ``diverged`` says so: text
  already sent cannot be taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .executor import QueryResult

TextSink = Callable[[str], None]
"""Called with each new piece of text, in order; the pieces joined are the text so far."""


class TextStream:
    """The sink of one query's answer text (see the module docstring). ``emit`` gets each new
    piece; it must not block (it runs on the event loop)."""

    def __init__(self, emit: TextSink) -> None:
        self._emit = emit
        self.sent = ""
        self._attempt = ""
        self.diverged = False
        self.finished = False

    def begin(self) -> None:
        """A new attempt at the streamed call starts (its text starts from the beginning)."""
        self._attempt = ""

    def __call__(self, piece: str) -> None:
        if not piece or self.finished:
            return
        self._attempt += piece
        self._offer(self._attempt)

    def finish(self, text: str | None) -> None:
        """The query ended with ``text``: send whatever of it the consumer does not have."""
        if self.finished:
            return
        if text:
            self._offer(text)
        self.finished = True

    def _offer(self, text: str) -> None:
        if self.diverged:
            return
        if text.startswith(self.sent):
            new = text[len(self.sent):]
            if new:
                self.sent = text
                self._emit(new)
        elif not self.sent.startswith(text):
            self.diverged = True


class AnswerStream:
    """The answer of one query as it is produced: an async iterator of text pieces; once it
    is exhausted, ``result`` holds the ``QueryResult``. Leaving it early (``aclose``, or the
    ``async with`` block) cancels the run; so does dropping it unclosed (once collected).

        async with graph.astream("What is 17 + 25?") as stream:
            async for piece in stream:
                print(piece, end="", flush=True)
        print(stream.result.usage.tokens)
    """

    def __init__(self, start: Callable[[TextSink], Awaitable[QueryResult]]) -> None:
        self._start = start
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Future[QueryResult] | None = None
        self.result: QueryResult | None = None

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> str:
        if self._task is None:
            self._task = asyncio.ensure_future(self._start(self._queue.put_nowait))
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            if self._task.done():
                if self._task.cancelled():  # closed early (aclose): no result, no error
                    raise StopAsyncIteration
                self.result = self._task.result()  # the run's own error, if it failed
                raise StopAsyncIteration
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                return getter.result()

    async def aclose(self) -> None:
        """Cancel the run if it is still going."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def __del__(self) -> None:
        # ``async for piece in graph.astream(q): break`` closes nothing (an async iterator is
        # not closed on break, unlike an async generator): the run would go on, unseen and
        # billed. Dropping the stream cancels it, from the loop's own thread.
        task = self._task
        if task is not None and not task.done():
            loop = task.get_loop()
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)

    async def __aenter__(self) -> AnswerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
