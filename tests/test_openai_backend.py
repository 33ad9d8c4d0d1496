"""``backend: openai`` end to end against the loopback fault server (tts_graph.testing):
answers, usage, native ``n``, streaming, price, and every kind of fault, with nothing mocked
between the executor and the socket. The real llama.cpp server is in test_openai_wire.py."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

from tts_graph import Executor, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.openai_backend import OpenAIBackend, cost_map, mapped_price
from tts_graph.backends.registry import create_backend
from tts_graph.blocking import run_sync
from tts_graph.errors import TTSGraphError
from tts_graph.executor import QueryResult
from tts_graph.spec import ModelSpec
from tts_graph.testing import FAULT_KINDS, FaultConfig, fault_stats, serve_fault_server
from tts_graph.testing.fault_server import prompt_tokens, sample_text
from tts_graph.types import Message

LATENCY_MS = 5
TIMEOUT_S = 1.5
MAX_RETRIES = 10
CONCURRENCY = 16

GRAPH = """
version: 1
name: openai-backend
models:
  m:
    backend: openai
    model: {model}
    api_base: "{url}/v1"
    timeout_s: {timeout}
    max_retries: {retries}{extra}
defaults: {{max_tokens: 64, temperature: 0.7, seed: 3}}
nodes:
  solve: {{role: solver, model: m, samples: {samples}}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""
STREAM_GRAPH = GRAPH.split("nodes:")[0] + """nodes:
  solve: {{role: solver, model: m}}
output: solve
"""
QUESTIONS = [f"What is {i} plus {3 * i + 1}?" for i in range(120)]


def graph(url: str, *, samples: int = 2, retries: int = MAX_RETRIES, model: str = "fault",
          extra: str = "", timeout: float = TIMEOUT_S, text: str = GRAPH) -> str:
    return text.format(url=url, samples=samples, retries=retries, model=model, extra=extra,
                       timeout=timeout)


def run(cfg: FaultConfig, questions: list[str], **kw: Any
        ) -> tuple[list[QueryResult], dict[str, Any]]:
    with serve_fault_server(cfg) as url:
        results = Executor(loads_graph(graph(url, **kw))).run_many(questions,
                                                                   concurrency=CONCURRENCY)
        return results, fault_stats(url)


def outcome(res: QueryResult) -> tuple[Any, ...]:
    return res.answer, res.text, tuple(c.text for c in res.steps["solve"].candidates)


@pytest.fixture(scope="module")
def clean() -> tuple[list[QueryResult], dict[str, Any]]:
    return run(FaultConfig(latency_ms=LATENCY_MS), QUESTIONS)


# ------------------------------------------------------------------------------ answers


def test_samples_are_the_servers_answers_in_one_request_with_native_n() -> None:
    with serve_fault_server(FaultConfig()) as url:
        ex = Executor(loads_graph(graph(url, samples=3)))
        result = ex.run("What is 2 + 2?")
        stats = fault_stats(url)
    assert result.status == "ok", result.error
    assert stats["requests"] == 1  # n=3 went out natively, once
    (call,) = result.calls
    assert call.samples == 3
    solve = result.steps["solve"].candidates
    assert len(solve) == 3
    texts = [c.text for c in solve]
    assert len(set(texts)) == 3
    assert result.usage.samples == 3 and result.usage.calls == 1
    assert result.usage.completion_tokens == sum(len(t.split()) for t in texts)
    assert not ex.bindings()["m"].backend.splits_samples()


async def test_generate_returns_the_servers_texts_and_usage() -> None:
    with serve_fault_server(FaultConfig()) as url:
        backend = create_backend(ModelSpec(backend="openai", model="fault",
                                           api_base=f"{url}/v1"))
        msgs = (Message("system", "Be brief."), Message("user", "What is 5 + 6?"))
        req = GenerationRequest(msgs, max_tokens=64, temperature=0.5, seed=11, n=3)
        out = await backend.generate(req)
        await backend.aclose()
    wire = [m.to_dict() for m in msgs]
    assert [c.text for c in out] == [sample_text(wire, 11 + i) for i in range(3)]
    assert sum(c.prompt_tokens for c in out) == prompt_tokens(wire)
    assert sum(c.completion_tokens for c in out) == sum(len(c.text.split()) for c in out)
    assert all(c.finish_reason == "stop" for c in out)


async def test_max_tokens_and_finish_reason_reach_the_client() -> None:
    with serve_fault_server(FaultConfig()) as url:
        backend = OpenAIBackend(ModelSpec(backend="openai", model="fault", api_base=f"{url}/v1"))
        (c,) = await backend.generate(GenerationRequest((Message("user", "q"),), max_tokens=3))
        await backend.aclose()
    assert c.completion_tokens == 3 and c.finish_reason == "length"


def test_identity_names_server_model_and_options_but_never_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_TEST_KEY", "sk-identity-secret")
    a = OpenAIBackend(ModelSpec(backend="openai", model="x", api_base="http://127.0.0.1:9/v1",
                                api_key_env="OA_TEST_KEY"))
    b = OpenAIBackend(ModelSpec(backend="openai", model="x", api_base="http://127.0.0.1:9/v1",
                                options={"top_k": 5}))
    assert a.info.identity.startswith("openai:x@http://127.0.0.1:9/v1#")
    assert a.info.identity != b.info.identity  # options change answers: a different cache
    assert "sk-identity" not in a.info.identity


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(TTSGraphError, match="may not set"):
        OpenAIBackend(ModelSpec(backend="openai", model="x", options={"n": 4}))
    with pytest.raises(TTSGraphError, match="OA_UNSET_KEY"):
        OpenAIBackend(ModelSpec(backend="openai", model="x", api_key_env="OA_UNSET_KEY"))


# --------------------------------------------------------------------------------- price


def test_the_binding_owns_timeout_s_and_client_timeouts_come_later() -> None:
    """A hang must be reported by one layer, not whichever timer fires first: the clients'
    own timeouts (aiohttp here, litellm's) are backstops set after the binding's."""
    from tts_graph.backends.litellm_backend import LitellmBackend

    spec = ModelSpec(backend="openai", model="x", api_base="http://127.0.0.1:9/v1",
                     timeout_s=TIMEOUT_S)
    total = OpenAIBackend(spec)._timeout.total
    assert total is not None and total >= TIMEOUT_S + 1.0
    lite = LitellmBackend(ModelSpec(backend="litellm", model="openai/x", timeout_s=TIMEOUT_S))
    req = GenerationRequest(messages=(Message("user", "hi"),), max_tokens=8)
    assert lite._kwargs(req, 1, 0, None)["timeout"] >= TIMEOUT_S + 1.0
    # no timeout_s: the client's default still bounds a call
    unset = OpenAIBackend(ModelSpec(backend="openai", model="x"))._timeout.total
    assert unset is not None and unset > 0


def test_price_from_litellms_cost_map_read_once() -> None:
    assert cost_map()  # litellm's bundled table is there
    before = cost_map.cache_info().misses
    price = mapped_price("gpt-4o-mini")
    assert price is not None and price[0] > 0 and price[1] > price[0]
    assert mapped_price("gpt-4o-mini") == price
    assert cost_map.cache_info().misses == before  # read once per process, never per call
    assert mapped_price("no-such-model-anywhere") is None


def test_cost_comes_from_the_map_or_the_declared_price() -> None:
    with serve_fault_server(FaultConfig()) as url:
        mapped = Executor(loads_graph(graph(url, model="gpt-4o-mini", samples=1)))
        r = mapped.run("What is 1 + 1?")
        declared = Executor(loads_graph(graph(
            url, model="gpt-4o-mini", samples=1,
            extra="\n    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}")))
        d = declared.run("What is 1 + 1?")
    pin, pout = mapped_price("gpt-4o-mini")  # type: ignore[misc]
    u = r.usage
    assert u.cost_usd == pytest.approx((u.prompt_tokens * pin + u.completion_tokens * pout) / 1e6)
    assert u.cost_usd > 0
    du = d.usage
    assert du.cost_usd == pytest.approx((du.prompt_tokens * 1.0 + du.completion_tokens * 2.0)
                                        / 1e6)


# ----------------------------------------------------------------------------- streaming


async def test_a_single_sample_streams_word_by_word_with_the_servers_usage() -> None:
    from tts_graph import Graph

    with serve_fault_server(FaultConfig()) as url:
        g = Graph.from_string(graph(url, text=STREAM_GRAPH))
        pieces: list[str] = []
        streamed = await g.arun("Name three colours.", on_text=pieces.append)
        plain = await Graph.from_string(graph(url, text=STREAM_GRAPH)).arun(
            "Name three colours.")
        await g.aclose()
    assert streamed.status == "ok", streamed.error
    assert len(pieces) > 3 and "".join(pieces) == streamed.text == plain.text
    assert pieces[0] == streamed.text.split(" ")[0] + " "
    assert streamed.usage.tokens == plain.usage.tokens  # the usage event, not a guess


# -------------------------------------------------------------------------------- faults

ALL_FAULTS = (*FAULT_KINDS, "cut", "empty")


def test_fault_free_baseline(clean: tuple[list[QueryResult], dict[str, Any]]) -> None:
    results, stats = clean
    assert [r.status for r in results] == ["ok"] * len(QUESTIONS)
    assert stats["faults_total"] == 0
    # n=2 natively: one request per query
    assert stats["requests"] == stats["answered"] == len(QUESTIONS)


def test_thirty_percent_faults_of_every_kind_change_nothing_but_the_retries(
        clean: tuple[list[QueryResult], dict[str, Any]]) -> None:
    cfg = FaultConfig(faults={k: 0.3 / len(ALL_FAULTS) for k in ALL_FAULTS},
                      latency_ms=LATENCY_MS, seed=11, retry_after_s=0.05, hang_s=5 * TIMEOUT_S)
    results, stats = run(cfg, QUESTIONS)
    base, base_stats = clean
    assert Counter(r.status for r in results) == {"ok": len(QUESTIONS)}
    assert [outcome(r) for r in results] == [outcome(r) for r in base]
    assert [r.usage.tokens for r in results] == [r.usage.tokens for r in base]
    assert stats["answers_per_key"] == base_stats["answers_per_key"]
    assert all(stats["faults"][k] > 0 for k in ALL_FAULTS), stats["faults"]
    calls = [c for r in results for c in r.calls]
    # every fault cost exactly one retry; no hidden retries below the binding
    assert sum(c.retries for c in calls) == stats["faults_total"]
    assert stats["requests"] == sum(c.retries + 1 for c in calls)


REPORTED = {"rate_limit": "rate_limit", "server_error": "server", "hang": "timeout",
            "drop": "connection", "malformed": "malformed", "cut": "malformed",
            "empty": "malformed"}
CAUSE = {"rate_limit": "HTTP 429", "server_error": "HTTP 500", "hang": "no answer within",
         "drop": "connection lost", "malformed": "not JSON", "cut": "truncated",
         "empty": "without choices"}


@pytest.mark.parametrize("kind", ALL_FAULTS)
def test_faults_that_outlast_the_retries_are_one_line_infra_errors(kind: str) -> None:
    retries, n = 1, 4
    cfg = FaultConfig(faults={kind: 1.0}, latency_ms=LATENCY_MS, retry_after_s=0.05,
                      hang_s=5 * TIMEOUT_S)
    results, stats = run(cfg, QUESTIONS[:n], retries=retries)
    assert stats["answered"] == 0
    assert stats["requests"] == stats["faults"][kind] == n * (retries + 1)
    for r in results:
        assert r.status == "error" and r.answer is None and r.text is None
        err = r.steps["solve"].error or ""
        if kind == "hang":
            # the binding owns timeout_s (the client's own timeout is a later backstop), so a
            # hang is always its line: the model entry and the timeout
            assert err == (f"m: timeout: no answer within {TIMEOUT_S:g} s "
                           f"(gave up after {retries + 1} attempts)"), err
        else:
            assert err.startswith(f"m: {REPORTED[kind]}: model 'fault' at http://127.0.0.1:"), err
        assert CAUSE[kind] in err, err
        assert f"gave up after {retries + 1} attempts" in err
        assert "\n" not in err
        assert len(r.infra_errors) == 1 and r.usage.errors == 1


@pytest.mark.parametrize("kind", ["malformed", "cut", "empty", "drop"])
def test_broken_streams_are_retried_then_infra_errors(kind: str) -> None:
    from tts_graph import Graph

    async def main(url: str) -> tuple[list[QueryResult], list[str]]:
        g = Graph.from_string(graph(url, text=STREAM_GRAPH, retries=1))
        pieces: list[list[str]] = [[], []]
        out = [await g.arun(q, on_text=p.append) for q, p in zip(QUESTIONS, pieces,
                                                                   strict=False)]
        await g.aclose()
        return out, ["".join(p) for p in pieces]

    with serve_fault_server(FaultConfig(faults={kind: 1.0}, latency_ms=LATENCY_MS)) as url:
        results, texts = asyncio.run(main(url))
        stats = fault_stats(url)
    assert stats["requests"] == stats["faults"][kind] == 4
    for r, text in zip(results, texts, strict=True):
        assert r.status == "error" and r.answer is None, r
        assert "gave up after 2 attempts" in (r.error or "")
        assert "Answer:" not in text  # half an answer never passes for a whole one


def test_unreachable_api_base_is_an_infra_error_naming_model_and_cause() -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = Executor(loads_graph(graph(f"http://127.0.0.1:{port}", retries=1)))
    result = ex.run("What is 1 + 1?")
    assert result.status == "error" and result.answer is None
    err = result.steps["solve"].error or ""
    assert err.startswith(f"m: connection: model 'fault' at http://127.0.0.1:{port}/v1: "
                          "cannot connect"), err
    assert "gave up after 2 attempts" in err and "\n" not in err
    assert ex.bindings()["m"].attempts == 2  # retried: a server may be starting


# ------------------------------------------------------------------------------- the key


def test_the_key_is_sent_but_never_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-oa-test-" + "k" * 24
    monkeypatch.setenv("OA_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache.sqlite"
    cfg = FaultConfig(faults={"server_error": 0.5}, seed=2, retry_after_s=0.01)
    with serve_fault_server(cfg) as url:
        ex = Executor(loads_graph(graph(url, extra="\n    api_key_env: OA_TEST_KEY")),
                      cache=cache)
        results = ex.run_many(QUESTIONS[:8], concurrency=4)
        bad = Executor(loads_graph(graph(url, extra="\n    api_key_env: OA_TEST_KEY",
                                         retries=0))).run_many(QUESTIONS[8:16])
    assert any(r.status == "ok" for r in results)
    assert any(r.status == "error" for r in bad)  # errors were made, and hold no key
    dumped = json.dumps([r.to_dict() for r in [*results, *bad]])
    assert key not in dumped
    assert key.encode() not in cache.read_bytes()
    assert key not in caplog.text


# ------------------------------------------------------------------------------ sessions


def test_one_pooled_session_per_loop_closed_with_its_loop() -> None:
    """Blocking runs share one loop (``tts_graph.blocking``) and so one pooled session,
    from run to run; a loop of the caller's own gets a session of its own, closed when that
    loop shuts down; ``aclose`` closes the shared one."""
    with serve_fault_server(FaultConfig()) as url:
        ex = Executor(loads_graph(graph(url)))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            sessions = []
            for q in QUESTIONS[:3]:
                assert ex.run(q).status == "ok"
                backend = ex.bindings()["m"].backend
                assert isinstance(backend, OpenAIBackend)
                sessions.append(next(iter(backend._sessions.values()))[0])
            assert len(backend._sessions) == 1 and len(set(map(id, sessions))) == 1
            results = ex.run_many(QUESTIONS[:40], concurrency=20)
            assert all(r.status == "ok" for r in results)
            assert asyncio.run(ex.arun(QUESTIONS[0])).status == "ok"  # a loop of its own
            assert len(backend._sessions) == 1  # its loop's shutdown closed its session
            run_sync(ex.aclose)
            assert backend._sessions == {} and sessions[0].closed
            stats = fault_stats(url)
    assert stats["requests"] == 44


@pytest.mark.parametrize("stream", [False, True])
def test_json_nested_past_the_parsers_depth_is_a_malformed_response(stream: bool) -> None:
    """A body of 100,000 nested arrays makes json.loads raise RecursionError, not
    ValueError: it escaped as a crash of the query instead of an infrastructure error."""
    import http.server
    import threading

    deep = b"[" * 100_000 + b"]" * 100_000

    class Deep(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = (b"data: " + deep + b"\n\n") if stream else deep
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream" if stream
                             else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        from tts_graph import Graph

        async def main() -> QueryResult:
            g = Graph.from_string(graph(url, retries=1, text=STREAM_GRAPH))
            chunks: list[str] = []
            out = await g.arun("What is 2 + 2?", on_text=chunks.append if stream else None)
            await g.aclose()
            return out

        res = asyncio.run(main())
    finally:
        server.shutdown()
        server.server_close()
    err = res.steps["solve"].error or ""
    assert res.status == "error" and "\n" not in err
    assert err.startswith("m: malformed: model 'fault' at http://127.0.0.1:"), err
    assert ("malformed stream event" if stream else "response is not JSON") in err, err
    assert "gave up after 2 attempts" in err
