"""The limits declared on a model entry — concurrency cap, request rate, token rate — kept
once per process for each model (``shared``: every graph object, executor and search trial
that declares the same model and limits) and taken from any event loop in any thread.

asyncio's own primitives belong to one loop, and a sync program runs a loop of its own per
``Graph.run`` (``asyncio.run``), a threaded one a loop per thread: limits kept per loop let
each run start a fresh minute (``rpm: 60`` never held across ``for q in qs: graph.run(q)``)
and each thread take the whole cap. These hold across them all: a short ``threading.Lock``
guards the counts (never held across an ``await``), and a waiter on another loop is woken
on that loop (``call_soon_threadsafe``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from asyncio_throttle import Throttler

#: the window of ``rpm`` and ``tpm``, in seconds (a module constant: tests shorten it)
RATE_PERIOD_S = 60.0

_T = TypeVar("_T")
_SHARED: dict[Hashable, object] = {}
_SHARED_LOCK = threading.Lock()


def shared(key: Hashable, make: Callable[[], _T]) -> _T:
    """The limits kept under ``key`` for the whole process, made by ``make`` the first time.
    Kept for the life of the process: a provider's minute does not restart because one
    executor was closed and the next made (a search's trials run one after another), so a
    later one must see what the earlier ones sent."""
    with _SHARED_LOCK:
        got = _SHARED.get(key)
        if got is None:
            got = _SHARED[key] = make()
        return got  # type: ignore[return-value]


def forget_shared() -> None:
    """Drop every shared limit: the next binding starts afresh (a forked child, whose
    parent's waiters and locks are not its own; tests)."""
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()  # a fork may have copied it held by another thread
    _SHARED.clear()


os.register_at_fork(after_in_child=forget_shared)

#: how many processes this one shares each model's declared limits with (``set_share``)
_SHARE = 1


def set_share(n: int) -> None:
    """This process is one of ``n`` calling the same models at once — machines joined
    through one ``--storage``, replicas of a server behind one key — and keeps to an
    ``n``-th of each model's declared limits, so that together they keep to them: every
    binding made from now on takes that share (``--share-limits`` of eval, search and
    serve). Each process is told: none can see the others."""
    global _SHARE
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a share of the limits is one of n >= 1 processes, not {n!r}")
    _SHARE = n


def share() -> int:
    """The ``n`` of ``set_share`` (1: this process alone calls its models)."""
    return _SHARE


class Permits:
    """A counting semaphore shared by every loop and thread of the process, first come first
    served. ``acquire`` waits without blocking its loop; ``release`` may run anywhere."""

    __slots__ = ("_free", "_lock", "_waiters")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("a cap of permits must be >= 1")
        self._free = n
        self._lock = threading.Lock()
        self._waiters: collections.deque[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()

    def locked(self) -> bool:
        """Whether an ``acquire`` now would wait."""
        with self._lock:
            return self._free == 0 or bool(self._waiters)

    async def acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        except BaseException:
            # not there when already handed a permit (or being handed one, see _grant)
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled before it could run: pass it on
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                loop, fut = self._waiters.popleft()
                if fut.done():  # its waiter was cancelled
                    continue
                if asyncio._get_running_loop() is loop:  # this thread's: no wake-up call
                    fut.set_result(None)
                    return
                try:
                    loop.call_soon_threadsafe(self._grant, fut)
                except RuntimeError:  # that loop has closed: its waiter is gone
                    continue
                return
            self._free += 1

    def _grant(self, fut: asyncio.Future[None]) -> None:
        """Hand a permit to a waiter, on its own loop; one cancelled on the way passes it
        on."""
        if fut.cancelled():
            self.release()
        else:
            fut.set_result(None)


class RequestRate:
    """At most ``per_minute`` requests (rounded down) in any window of ``RATE_PERIOD_S``, or
    under one a minute, one request in every ``RATE_PERIOD_S / per_minute``
    (asyncio-throttle's sliding window), for the whole process. Waiters take turns through
    one permit, so only the first in line polls the window and the window is read and
    written by one at a time whatever thread it runs in."""

    __slots__ = ("_turn", "throttler")

    def __init__(self, per_minute: float) -> None:
        if per_minute >= 1:
            # whole requests in any window: 1.5 a minute is 1 (rounding up would exceed it)
            limit, period = int(per_minute), RATE_PERIOD_S
        else:  # under one a minute: one request every 1 / per_minute minutes
            limit, period = 1, RATE_PERIOD_S / per_minute
        self.throttler = Throttler(rate_limit=limit, period=period)
        self._turn = Permits(1)

    async def acquire(self) -> None:
        await self._turn.acquire()
        try:
            await self.throttler.acquire()
        finally:
            self._turn.release()


class TokenRate:
    """At most ``per_minute`` tokens in any window of ``RATE_PERIOD_S``, for the whole
    process: a call waits, in turn, until the window's tokens leave room for its own."""

    __slots__ = ("_turn", "per_minute", "window")

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.window: collections.deque[tuple[float, int]] = collections.deque()
        self._turn = Permits(1)

    async def acquire(self, tokens: int) -> None:
        tokens = min(tokens, self.per_minute)
        await self._turn.acquire()
        try:
            while True:
                now = time.monotonic()
                while self.window and now - self.window[0][0] >= RATE_PERIOD_S:
                    self.window.popleft()
                if sum(k for _, k in self.window) + tokens <= self.per_minute:
                    self.window.append((now, tokens))
                    return
                await asyncio.sleep(max(0.01, RATE_PERIOD_S - (now - self.window[0][0])))
        finally:
            self._turn.release()
