"""Timeouts of one length shared by many tasks of one event loop, as ``asyncio.timeout``
behaves, for a fraction of its cost.

``asyncio.timeout`` puts a timer in the loop's heap per use and cancels it on exit: at
thousands of calls a second that is a heap push (Python-level comparisons of timer handles),
a handle and a cancelled entry left in the heap per call. Every call of a model shares one
timeout length, so their deadlines fall due in the order the calls started: an insertion-
ordered map (``OrderedDict``, pushes and removals in C) holds them, and one timer per
queue, set for the earliest deadline, stands in for one timer per call.

Semantics are ``asyncio.timeout``'s: on expiry the task is cancelled; leaving the block
with that cancellation turns it into ``TimeoutError``; a cancellation from elsewhere stays a
cancellation.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from types import TracebackType


class _Entry:
    """One task's stay in a ``with`` block of a queue."""

    __slots__ = ("cancelling", "expired", "queue", "task", "when")

    def __init__(self, queue: DeadlineQueue, when: float, task: asyncio.Task[object]) -> None:
        self.queue = queue
        self.when = when
        self.task: asyncio.Task[object] | None = task
        self.cancelling = task.cancelling()
        self.expired = False

    def __enter__(self) -> _Entry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        task, self.task = self.task, None  # no cycle task -> frame -> entry -> task
        if not self.expired:
            self.queue._due.pop(self, None)
            return
        assert task is not None
        if task.uncancel() <= self.cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class DeadlineQueue:
    """``with queue.entered():`` bounds the block to ``delay`` seconds (one loop, one
    delay: see ``for_loop``). It holds no reference to its loop, so that a map from loops
    to queues can be weak."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._due: OrderedDict[_Entry, None] = OrderedDict()
        # whether the loop holds a timer for this queue (not the handle: it refers to its
        # loop, and a queue must not keep a loop alive from a weak map's value)
        self._armed = False

    def entered(self) -> _Entry:
        """The context manager for one stay of the current task."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        entry = _Entry(self, loop.time() + self.delay, task)
        self._due[entry] = None
        if not self._armed:
            self._armed = True
            loop.call_at(entry.when, self._fire)
        return entry

    def _fire(self) -> None:
        """Cancel the tasks whose deadline has passed, then wait for the next one (the
        timer was set for a head that may have left since: it then just moves on)."""
        self._armed = False
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due:
            entry = next(iter(due))
            if entry.when > now:
                self._armed = True
                loop.call_at(entry.when, self._fire)
                return
            due.popitem(last=False)
            entry.expired = True
            assert entry.task is not None
            entry.task.cancel()


_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, DeadlineQueue]] = (
    weakref.WeakKeyDictionary())


def for_loop(delay: float) -> DeadlineQueue:
    """The running loop's queue for ``delay`` seconds (asyncio objects belong to one loop)."""
    loop = asyncio.get_running_loop()
    queues = _QUEUES.get(loop)
    if queues is None:
        queues = _QUEUES[loop] = {}
    queue = queues.get(delay)
    if queue is None:
        queue = queues[delay] = DeadlineQueue(delay)
    return queue
