"""Blocking calls (``Graph.run``, ``run_many``, ``close``) run their coroutine on one event
loop per process, kept in a daemon thread from the first such call to the process's exit.

``asyncio.run`` per call made a new loop each time, and what a backend pools belongs to a
loop: every sync query opened a new HTTP connection (and TLS session, for a hosted API)
and closed it again — 2.3 ms a query against 0.95 ms in one loop against a loopback server,
a round trip or two more against a remote one. On one loop the pool lives from call to call,
and any number of threads share it.

The caller's context (``contextvars``: an OpenTelemetry span, say) is the run's, as with
``asyncio.run``; a caller interrupted while it waits (Ctrl-C) cancels its run. A blocking call
made from a coroutine on that loop itself (which could not wait for itself) runs in a worker
thread with a loop of its own, as every call did before."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
#: loops a forked child inherited without their thread: kept, never closed or collected
#: (closing one the parent still runs is refused; collecting it warns)
_orphans: list[asyncio.AbstractEventLoop] = []


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` to its end on the process's loop and return its result (or raise its
    exception), blocking the calling thread meanwhile."""
    loop = _shared_loop()
    if asyncio._get_running_loop() is loop:  # a coroutine on that loop: it cannot wait on it
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts-graph-run") as p:
            return p.submit(lambda: asyncio.run(make())).result()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    coro = make()

    def start() -> None:
        # runs in the caller's context (call_soon_threadsafe's ``context``): the task
        # copies it, as ``asyncio.run`` would have
        task = asyncio.ensure_future(coro)

        def settle(t: asyncio.Future[T]) -> None:
            if not done.set_running_or_notify_cancel():
                return  # the caller gave up (see below)
            if t.cancelled():
                done.set_exception(asyncio.CancelledError())
            elif (exc := t.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(t.result())

        task.add_done_callback(settle)
        done.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(
            task.cancel))

    loop.call_soon_threadsafe(start, context=contextvars.copy_context())
    try:
        return done.result()
    except BaseException:
        done.cancel()  # interrupted while waiting (Ctrl-C): the run is cancelled too
        raise


def close_soon(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``make()`` on the process's loop without waiting for it: how a graph dropped
    without ``close()`` releases what it pooled there (sessions collected unclosed warn).
    Nothing when that loop is not running (it never started, or the process is exiting:
    the loop then closes what it holds itself)."""
    with _lock:
        loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive():
        return
    with contextlib.suppress(RuntimeError):  # closed meanwhile
        loop.call_soon_threadsafe(lambda: loop.create_task(make()))


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=_serve, args=(loop, ready), daemon=True,
                                      name="tts-graph-loop")
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
    finally:
        try:
            # runs still going at exit are cancelled; then backends close what they pooled
            # (their keepers are async generators: shutdown_asyncgens ends them)
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


@atexit.register
def _stop() -> None:
    """At exit, before daemon threads are frozen: the loop ends and closes what it holds
    (else each pooled session warns "Unclosed client session")."""
    with _lock:
        loop, thread = _loop, _thread
    if loop is not None and thread is not None and thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _forget_after_fork() -> None:
    """A forked child has the parent's loop but not its thread: it starts its own."""
    global _loop, _thread, _lock
    if _loop is not None:
        _orphans.append(_loop)
    _loop, _thread, _lock = None, None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
