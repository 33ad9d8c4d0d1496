"""The shared deadline queue behaves as ``asyncio.timeout`` does, with one timer a queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tts_graph import deadlines


async def _bounded(delay: float, work: float) -> str:
    with deadlines.for_loop(delay).entered():
        await asyncio.sleep(work)
    return "done"


def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await _bounded(0.02, 5.0)
        assert not deadlines.for_loop(0.02)._due  # nothing left behind

    asyncio.run(main())


def test_a_block_within_its_deadline_leaves_nothing_behind() -> None:
    async def main() -> None:
        assert await _bounded(1.0, 0.0) == "done"
        queue = deadlines.for_loop(1.0)
        assert not queue._due

    asyncio.run(main())


def test_only_the_blocks_past_their_deadline_are_cut() -> None:
    async def main() -> list[str]:
        async def one(work: float) -> str:
            try:
                return await _bounded(0.1, work)
            except TimeoutError:
                return "timeout"

        return await asyncio.gather(*(one(w) for w in (0.0, 0.3, 0.01, 0.5, 0.02)))

    assert asyncio.run(main()) == ["done", "timeout", "done", "timeout", "done"]


def test_deadlines_come_due_in_the_order_blocks_entered() -> None:
    # entered 50 ms apart with a 100 ms bound: the first is cut at ~100 ms, the second at
    # ~150 ms, although the timer was first set for the first one only
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        cut: list[float] = []

        async def one(wait: float) -> None:
            await asyncio.sleep(wait)
            try:
                await _bounded(0.1, 5.0)
            except TimeoutError:
                cut.append(loop.time() - t0)

        await asyncio.gather(one(0.0), one(0.05))
        return cut

    first, second = asyncio.run(main())
    assert 0.09 <= first < second
    assert 0.14 <= second < 1.0


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(_bounded(10.0, 5.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines.for_loop(10.0)._due

    asyncio.run(main())


def test_nested_blocks_of_different_lengths() -> None:
    async def main() -> str:
        with deadlines.for_loop(5.0).entered():
            try:
                with deadlines.for_loop(0.02).entered():
                    await asyncio.sleep(1.0)
            except TimeoutError:
                return "inner cut, outer intact"
        return "no cut"

    assert asyncio.run(main()) == "inner cut, outer intact"


def test_each_event_loop_has_its_own_queue() -> None:
    results: list[str] = []

    def in_thread() -> None:
        async def main() -> None:
            try:
                await _bounded(0.02, 1.0)
            except TimeoutError:
                results.append("timeout")

        asyncio.run(main())

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["timeout"] * 3


def test_outside_a_task_it_says_so() -> None:
    async def main() -> None:
        queue = deadlines.for_loop(1.0)
        # a callback of the loop runs in no task
        fut: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def callback() -> None:
            try:
                queue.entered()
            except RuntimeError as exc:
                fut.set_result(exc)
            else:
                fut.set_result(None)

        asyncio.get_running_loop().call_soon(callback)
        assert isinstance(await fut, RuntimeError)

    asyncio.run(main())


def test_a_finished_loop_is_not_kept_alive_by_its_queue() -> None:
    import gc
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await _bounded(30.0, 0.0)  # leaves the queue armed for 30 s

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None
