"""Retries, timeouts and infrastructure errors in the model binding (all backends)."""

from __future__ import annotations

import asyncio

import pytest

from tts_graph import Executor, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.bindings import backoff_delay
from tts_graph.errors import TransientBackendError
from tts_graph.types import Completion

GRAPH = """
version: 1
name: r
models: {m: {backend: scripted, model: x, max_retries: %d, timeout_s: 0.2}}
nodes:
  solve: {role: solver, model: m, samples: 2}
  vote: {role: vote, inputs: [solve]}
output: vote
"""


class Flaky(ScriptedBackend):
    """Fails the first ``failures`` calls with the given error, then answers."""

    def __init__(self, failures: int, error: Exception | None = None, hang: bool = False):
        super().__init__(lambda req, i: f"Answer: {req.seed + i}")
        self.failures = failures
        self.error = error or TransientBackendError("HTTP 500", kind="server")
        self.hang = hang
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.calls += 1
        if self.calls <= self.failures:
            if self.hang:
                await asyncio.sleep(30)
            raise self.error
        return await super().generate(request)


def test_transient_errors_are_retried_and_counted() -> None:
    backend = Flaky(2)
    res = Executor(loads_graph(GRAPH % 3), backends={"m": backend}).run("q")
    assert res.status == "ok"
    assert backend.calls == 3
    assert res.usage.retries == 2
    assert [c.retries for c in res.calls] == [2]


def test_retries_are_bounded_and_reported_as_infrastructure_errors() -> None:
    backend = Flaky(100)
    res = Executor(loads_graph(GRAPH % 2), backends={"m": backend}).run("q")
    assert backend.calls == 3  # 1 try + 2 retries
    assert res.status == "error"
    assert res.answer is None  # an infrastructure failure is never scored as an answer
    assert res.usage.errors == 1
    assert "gave up after 3 attempts" in res.infra_errors[0]


def test_hang_past_timeout_is_cancelled_and_retried() -> None:
    backend = Flaky(1, hang=True)
    res = Executor(loads_graph(GRAPH % 1), backends={"m": backend}).run("q")
    assert res.status == "ok"
    assert backend.calls == 2
    assert res.usage.retries == 1


def test_permanent_errors_are_not_retried() -> None:
    from tts_graph.errors import BackendError

    backend = Flaky(1, error=BackendError("HTTP 401: bad key"))
    res = Executor(loads_graph(GRAPH % 3), backends={"m": backend}).run("q")
    assert backend.calls == 1
    assert res.status == "error"
    assert "401" in res.error


def test_retry_after_is_honoured() -> None:
    assert backoff_delay(1, 0.25) == 0.25
    assert backoff_delay(1, 1e6) == 30.0
    for attempt in range(1, 6):
        assert 0 <= backoff_delay(attempt, None) <= min(30.0, 0.5 * 2 ** (attempt - 1))


@pytest.mark.parametrize("retries", [0, 1])
def test_zero_retries(retries: int) -> None:
    backend = Flaky(1)
    res = Executor(loads_graph(GRAPH % retries), backends={"m": backend}).run("q")
    assert (res.status == "ok") == (retries == 1)
