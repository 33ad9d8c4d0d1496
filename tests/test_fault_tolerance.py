"""Fault tolerance end to end: graphs run through ``backend: litellm`` against the loopback
fault server (tts_graph.testing), with 429s, 500s, hangs, dropped connections and malformed
JSON injected. Nothing is mocked between the executor and the socket."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip("uvicorn")
pytest.importorskip("litellm")

from tts_graph import Executor, loads_graph
from tts_graph.executor import QueryResult
from tts_graph.testing import FAULT_KINDS, FaultConfig, fault_stats, serve_fault_server

QUERIES = 200
CONCURRENCY = 16  # calls wait ~0.1 s for the client CPU: far from the timeout
LATENCY_MS = 5
TIMEOUT_S = 1.5
MAX_RETRIES = 10

GRAPH = """
version: 1
name: fault-tolerance
models:
  m:
    backend: litellm
    model: openai/fault
    api_base: "{url}/v1"
    timeout_s: {timeout}
    max_retries: {retries}
nodes:
  solve: {{role: solver, model: m, samples: 2}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""

QUESTIONS = [f"What is {i} plus {3 * i + 1}?" for i in range(QUERIES)]


@pytest.fixture(scope="module", autouse=True)
def _litellm_warm() -> None:
    """One fault-free call first. litellm imports in seconds, and its first call imports
    ~470 more modules (the OpenAI client's resources) synchronously on the event loop
    (~0.5 s): a burst of concurrent first calls under a short timeout would time out and
    retry on the client side before reaching the server, which is not what these tests
    measure."""
    with serve_fault_server() as url:
        graph = loads_graph(GRAPH.format(url=url, timeout=30, retries=0))
        assert Executor(graph).run("warm up").status == "ok"


def run(cfg: FaultConfig, questions: list[str], *, retries: int = MAX_RETRIES
        ) -> tuple[list[QueryResult], dict[str, Any]]:
    with serve_fault_server(cfg) as url:
        graph = loads_graph(GRAPH.format(url=url, timeout=TIMEOUT_S, retries=retries))
        results = Executor(graph).run_many(questions, concurrency=CONCURRENCY)
        return results, fault_stats(url)


def outcome(res: QueryResult) -> tuple[Any, ...]:
    """What a query produced: the final answer and text, and every sample's text."""
    samples = tuple(c.text for c in res.steps["solve"].candidates)
    return res.answer, res.text, samples


@pytest.fixture(scope="module")
def clean() -> tuple[list[QueryResult], dict[str, Any]]:
    return run(FaultConfig(latency_ms=LATENCY_MS), QUESTIONS)


def test_fault_free_baseline(clean: tuple[list[QueryResult], dict[str, Any]]) -> None:
    results, stats = clean
    assert [r.status for r in results] == ["ok"] * QUERIES
    assert all(len(r.steps["solve"].candidates) == 2 for r in results)
    assert all(r.answer is not None for r in results)
    assert stats["faults_total"] == 0
    assert stats["requests"] == stats["answered"] == sum(len(r.calls) for r in results)
    assert sum(r.usage.retries for r in results) == 0


def test_twenty_percent_faults_change_nothing_but_the_retries(
        clean: tuple[list[QueryResult], dict[str, Any]]) -> None:
    cfg = FaultConfig.mixed(0.2, latency_ms=LATENCY_MS, seed=11, retry_after_s=0.05,
                            hang_s=5 * TIMEOUT_S)
    results, stats = run(cfg, QUESTIONS)
    base, base_stats = clean

    # every query finishes, with exactly the fault-free results
    assert Counter(r.status for r in results) == {"ok": QUERIES}
    assert [outcome(r) for r in results] == [outcome(r) for r in base]
    assert all(not r.infra_errors for r in results)

    # no call lost, none answered twice: the same request bodies were answered, once each
    assert stats["answered"] == base_stats["answered"]
    assert stats["answers_per_key"] == base_stats["answers_per_key"]
    assert stats["answered_twice"] == 0
    calls = [c for r in results for c in r.calls]
    base_calls = [c for r in base for c in r.calls]
    assert len(calls) == len(base_calls)
    assert sum(c.samples for c in calls) == sum(c.samples for c in base_calls)
    usage, base_usage = (sum((r.usage.tokens for r in rs), 0) for rs in (results, base))
    assert usage == base_usage

    # faults of every kind happened, and every one cost exactly one retry
    assert all(stats["faults"][k] > 0 for k in FAULT_KINDS), stats["faults"]
    retries = sum(c.retries for c in calls)
    assert retries == stats["faults_total"] > 0.1 * stats["requests"]
    # every attempt reached the server once: no hidden retries below the binding
    assert stats["requests"] == sum(c.retries + 1 for c in calls)
    # retries stay within their bound
    assert max(c.retries for c in calls) <= MAX_RETRIES
    assert max(stats["attempts_per_key"].values()) <= MAX_RETRIES + 1
    assert sum(r.usage.retries for r in results) == retries
    assert sum(r.usage.errors for r in results) == 0


# what the binding reports for each kind once it gives up (litellm 1.106 raises a dropped
# connection and an unparsable body as InternalServerError, which read as server errors)
REPORTED = {"rate_limit": ("rate_limit",), "server_error": ("server",), "hang": ("timeout",),
            "drop": ("connection", "server"), "malformed": ("malformed", "server")}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_faults_that_outlast_the_retries_are_infra_errors_not_answers(kind: str) -> None:
    retries, n = 2, 16
    cfg = FaultConfig(faults={kind: 1.0}, latency_ms=LATENCY_MS, retry_after_s=0.05,
                      hang_s=5 * TIMEOUT_S)
    results, stats = run(cfg, QUESTIONS[:n], retries=retries)
    assert stats["answered"] == 0
    assert stats["requests"] == stats["faults"][kind] == n * (retries + 1)
    for r in results:
        assert r.status == "error"
        assert r.answer is None and r.text is None  # never scored as an answer
        solve = r.steps["solve"]
        assert solve.status == "error" and not solve.candidates
        assert any(f"m: {k}:" in (solve.error or "") for k in REPORTED[kind]), solve.error
        assert f"gave up after {retries + 1} attempts" in (solve.error or "")
        assert not r.steps["vote"].candidates
        # reported per query and per node, counted apart from answered calls
        assert len(r.infra_errors) == 1 and r.infra_errors[0].startswith("solve: ")
        assert r.error and r.error.startswith("solve: ")
        assert r.usage.errors == 1 and r.usage.samples == 2 and r.usage.tokens == 0
        assert r.usage_by_node()["solve"].errors == 1
        assert r.usage.retries == 0  # a call that failed records no answered retries
        assert r.to_dict()["usage"]["errors"] == 1


def test_answered_samples_are_cached_even_when_a_sibling_call_fails(tmp_path: Any) -> None:
    """Samples 1 and 3 of 4 are cached, so samples 0 and 2 go out as two live calls; the
    first fails for good. The second was answered (and billed): it must reach the cache, so
    that a re-run does not pay for it again."""
    import asyncio

    from tts_graph.backends.base import GenerationRequest
    from tts_graph.backends.scripted import ScriptedBackend
    from tts_graph.bindings import ModelBinding
    from tts_graph.cache import ResponseCache, sample_key
    from tts_graph.errors import BackendError
    from tts_graph.spec import ModelSpec
    from tts_graph.types import Completion, Message

    class FirstFails(ScriptedBackend):
        async def generate(self, request: GenerationRequest) -> list[Completion]:
            self.requests.append(request)
            if request.sample_offset == 0:
                raise BackendError("HTTP 401: bad key")
            await asyncio.sleep(0.05)  # answers after its sibling failed
            return [Completion(f"s{request.seed + i}") for i in range(request.n)]

    cache = ResponseCache(tmp_path / "c.db")
    backend = FirstFails()
    binding = ModelBinding("m", ModelSpec(backend="scripted", model="x"), backend, cache=cache)
    req = GenerationRequest((Message("user", "q"),), max_tokens=8, seed=0, n=4)
    cache.put_many([(sample_key(binding.identity, req, i), Completion(f"s{i}")) for i in (1, 3)])
    with pytest.raises(BackendError, match="401"):
        asyncio.run(binding.generate(req, 100))
    assert [(r.sample_offset, r.n) for r in backend.requests] == [(0, 1), (2, 1)]
    assert sample_key(binding.identity, req, 2) in cache.get_many(
        [sample_key(binding.identity, req, i) for i in range(4)])
    assert len(cache) == 3


def test_answered_samples_are_cached_when_a_split_sample_fails(tmp_path: Any) -> None:
    """A backend that serves n samples as n requests (splits_samples): the binding sends
    them one by one; sample 1 fails for good, samples 0 and 2 were answered and are kept."""
    import asyncio

    from tts_graph.backends.base import GenerationRequest
    from tts_graph.backends.scripted import ScriptedBackend
    from tts_graph.bindings import ModelBinding
    from tts_graph.cache import ResponseCache, sample_key
    from tts_graph.errors import BackendError
    from tts_graph.spec import ModelSpec
    from tts_graph.types import Completion, Message

    class Splitting(ScriptedBackend):
        def splits_samples(self) -> bool:
            return True

        async def generate(self, request: GenerationRequest) -> list[Completion]:
            self.requests.append(request)
            assert request.n == 1
            if request.sample_offset == 1:
                raise BackendError("HTTP 400: context too long")
            await asyncio.sleep(0.05)
            return [Completion(f"s{request.seed}")]

    cache = ResponseCache(tmp_path / "c.db")
    backend = Splitting()
    binding = ModelBinding("m", ModelSpec(backend="scripted", model="x"), backend, cache=cache)
    req = GenerationRequest((Message("user", "q"),), max_tokens=8, seed=5, n=3)
    with pytest.raises(BackendError, match="400"):
        asyncio.run(binding.generate(req, 100))
    keys = [sample_key(binding.identity, req, i) for i in range(3)]
    hits = cache.get_many(keys)
    assert set(hits) == {keys[0], keys[2]}
    assert [hits[keys[0]].text, hits[keys[2]].text] == ["s5", "s7"]


# ------------------------------------------------------------------- streamed answers

# the same model; one solver sample as the output, so its text streams
STREAM_GRAPH = GRAPH.split("nodes:")[0] + """nodes:
  solve: {{role: solver, model: m}}
output: solve
"""
STREAM_KINDS = (*FAULT_KINDS, "cut")  # cut: the stream closes after half of the text


def run_streamed(cfg: FaultConfig, questions: list[str], *, retries: int = MAX_RETRIES,
                 stream: bool = True) -> tuple[list[QueryResult], list[str], dict[str, Any]]:
    """Each question streamed (``on_text``) through the fault server, 8 at a time; the
    results, what each stream received joined, and the server's counters."""
    import asyncio

    async def main(url: str) -> tuple[list[QueryResult], list[str]]:
        ex = Executor(loads_graph(STREAM_GRAPH.format(url=url, timeout=TIMEOUT_S,
                                                      retries=retries)))
        gate = asyncio.Semaphore(8)
        pieces: list[list[str]] = [[] for _ in questions]

        async def one(i: int) -> QueryResult:
            async with gate:
                if not stream:
                    return await ex.arun(questions[i])
                return await ex.arun(questions[i], on_text=pieces[i].append)

        results = await asyncio.gather(*(one(i) for i in range(len(questions))))
        return list(results), ["".join(p) for p in pieces]

    with serve_fault_server(cfg) as url:
        results, texts = asyncio.run(main(url))
        return results, texts, fault_stats(url)


def test_streams_cut_or_broken_mid_answer_are_retried_without_repeating_text() -> None:
    questions = QUESTIONS[:60]
    base, _, _ = run_streamed(FaultConfig(latency_ms=LATENCY_MS), questions, stream=False)
    cfg = FaultConfig(faults={k: 0.3 / len(STREAM_KINDS) for k in STREAM_KINDS},
                      latency_ms=LATENCY_MS, seed=5, retry_after_s=0.05, hang_s=5 * TIMEOUT_S)
    results, streamed, stats = run_streamed(cfg, questions)

    assert Counter(r.status for r in results) == {"ok": len(questions)}
    # the streamed answers are the unstreamed fault-free ones, and each stream received that
    # text exactly once: what an attempt sent before it was cut is not sent again
    assert [r.text for r in results] == [r.text for r in base]
    assert [r.answer for r in results] == [r.answer for r in base]
    assert streamed == [r.text for r in results]
    # usage is the server's (its usage event, asked for with stream_options), not an estimate
    assert [r.usage.tokens for r in results] == [r.usage.tokens for r in base]
    assert all(stats["faults"][k] > 0 for k in STREAM_KINDS), stats["faults"]
    calls = [c for r in results for c in r.calls]
    assert sum(c.retries for c in calls) == stats["faults_total"]
    assert stats["answered"] == len(questions) and stats["answered_twice"] == 0


def test_a_stream_cut_on_every_attempt_is_an_infra_error_not_a_partial_answer() -> None:
    retries, n = 2, 4
    cfg = FaultConfig(faults={"cut": 1.0}, latency_ms=LATENCY_MS)
    results, streamed, stats = run_streamed(cfg, QUESTIONS[:n], retries=retries)
    assert stats["requests"] == stats["faults"]["cut"] == n * (retries + 1)
    for r, text in zip(results, streamed, strict=True):
        assert r.status == "error" and r.answer is None and r.text is None
        assert len(r.infra_errors) == 1 and r.infra_errors[0].startswith("solve: ")
        assert f"gave up after {retries + 1} attempts" in (r.error or "")
        # the half answer that went out is never completed into something that looks whole
        assert "Answer:" not in text


def test_the_samples_a_server_left_out_are_asked_and_retried_on_their_own(
        tmp_path: Any) -> None:
    """A server that answers fewer choices than asked (one that caps ``n`` at 2): the
    binding asks for the rest with the next seeds, each request retried on its own. The
    backend used to top up inside one call, so a 500 on a top-up retried the whole call,
    asking (and paying) again for the samples already answered."""
    import asyncio

    from tts_graph.backends.base import GenerationRequest
    from tts_graph.backends.scripted import ScriptedBackend
    from tts_graph.bindings import ModelBinding
    from tts_graph.cache import ResponseCache, sample_key
    from tts_graph.errors import TransientBackendError
    from tts_graph.spec import ModelSpec
    from tts_graph.types import Completion, Message

    class CapsN(ScriptedBackend):
        failed = False

        async def generate(self, request: GenerationRequest) -> list[Completion]:
            self.requests.append(request)
            if request.seed == 7 and not self.failed:  # the first request for the rest
                self.failed = True
                raise TransientBackendError("HTTP 500", kind="server")
            return [Completion(f"s{request.seed + i}") for i in range(min(request.n, 2))]

    for cache in (None, ResponseCache(tmp_path / "c.db")):
        backend = CapsN()
        spec = ModelSpec(backend="scripted", model="x", max_retries=2)
        binding = ModelBinding("m", spec, backend, cache=cache)
        req = GenerationRequest((Message("user", "q"),), max_tokens=8, seed=5, n=5)
        parts = asyncio.run(binding.generate(req, 100))
        assert [c.text for p in parts for c in p.completions] == [f"s{s}" for s in range(5, 10)]
        assert [(p.start, len(p.completions), p.retries) for p in parts] == [
            (0, 2, 0), (2, 2, 1), (4, 1, 0)]
        # asked: 5 at seed 5 (2 back), 3 at seed 7 (failed, then 2 back), 1 at seed 9
        assert [(r.seed, r.n, r.sample_offset) for r in backend.requests] == [
            (5, 5, 0), (7, 3, 2), (7, 3, 2), (9, 1, 4)]
        if cache is not None:
            hits = cache.get_many([sample_key(binding.identity, req, i) for i in range(5)])
            assert len(hits) == 5  # every sample cached under its own key


def test_a_backend_that_returns_no_completion_or_too_many_is_an_error() -> None:
    import asyncio

    from tts_graph.backends.base import GenerationRequest
    from tts_graph.backends.scripted import ScriptedBackend
    from tts_graph.bindings import ModelBinding
    from tts_graph.errors import BackendError
    from tts_graph.spec import ModelSpec
    from tts_graph.types import Completion, Message

    class Returns(ScriptedBackend):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        async def generate(self, request: GenerationRequest) -> list[Completion]:
            return [Completion("x")] * self.k

    req = GenerationRequest((Message("user", "q"),), max_tokens=8, n=2)
    for k in (0, 3):
        binding = ModelBinding("m", ModelSpec(backend="scripted", model="x"), Returns(k))
        with pytest.raises(BackendError, match=f"returned {k} completions for n=2"):
            asyncio.run(binding.generate(req, 100))
