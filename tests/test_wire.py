"""The real wire: graphs run through ``backend: litellm`` against llama.cpp's
OpenAI-compatible server on 127.0.0.1 (SmolLM2-135M-Instruct; see tests/servers.py).

What llama.cpp's server does with ``n``: it accepts the field and drops it, answering with a
single choice. litellm says the ``openai`` (and ``hosted_vllm``) provider supports ``n``, so
the backend sends ``n`` natively, gets one choice back, and tops up the missing samples with
one call per sample (seeds ``seed + i``): N different answers either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import RecordingProxy

from tts_graph import Executor, Graph, loads_graph
from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.registry import create_backend
from tts_graph.types import Completion, Message

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is 3 + 4?"
KEY_ENV = "TTS_WIRE_TEST_KEY"


def graph(base_url: str, *, model: str = "openai/smollm2", samples: int = 1,
          temperature: float = 0.8, max_tokens: int = 24, extra: str = "") -> str:
    nodes = (f"  solve: {{role: solver, model: m, samples: {samples}}}\n"
             "  vote: {role: vote, inputs: [solve]}\n")
    return (
        "version: 1\n"
        "name: wire\n"
        f"models:\n  m: {{backend: litellm, model: {model}, api_base: '{base_url}'{extra}}}\n"
        f"defaults: {{max_tokens: {max_tokens}, temperature: {temperature}, seed: 7}}\n"
        f"nodes:\n{nodes}"
        "output: vote\n"
    )


class Recording(Backend):
    """Delegates to a real backend and keeps every request with what came back."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.log: list[tuple[GenerationRequest, list[Completion]]] = []

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        return self.inner.count_tokens(messages)

    def splits_samples(self) -> bool:
        return self.inner.splits_samples()

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        out = await self.inner.generate(request)
        self.log.append((request, out))
        return out


def recorded_executor(text: str) -> tuple[Executor, Recording]:
    doc = loads_graph(text)
    rec = Recording(create_backend(doc.spec.models["m"]))
    return Executor(doc, backends={"m": rec}), rec


@pytest.fixture
def proxy(llama_server: Any) -> Any:
    """A recording proxy in front of the server: what litellm sent, what the server said."""
    with RecordingProxy(llama_server.base_url) as p:
        yield p


# ------------------------------------------------------------------------------ answers


def test_answer_and_usage_match_what_the_server_reported(proxy: Any) -> None:
    ex, rec = recorded_executor(graph(proxy.base_url))
    result = ex.run(QUESTION)
    assert result.status == "ok", result.error
    assert result.text and result.text.strip()
    (req, comps), = rec.log
    (ex_,) = proxy.chats()
    sent, got = ex_.request, ex_.response
    assert sent["model"] == "smollm2"
    assert sent["messages"] == [m.to_dict() for m in req.messages]
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (24, 0.8, req.seed)
    assert comps[0].text == got["choices"][0]["message"]["content"]
    assert comps[0].prompt_tokens == got["usage"]["prompt_tokens"]
    assert comps[0].completion_tokens == got["usage"]["completion_tokens"]
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"])
    assert usage.calls == 1 and usage.samples == 1 and usage.errors == 0


def test_max_tokens_reaches_the_server(llama_server: Any) -> None:
    ex, rec = recorded_executor(graph(llama_server.base_url, max_tokens=5, temperature=0.0))
    result = ex.run("Write a long story about a cat.")
    assert result.status == "ok", result.error
    (_, comps), = rec.log
    assert comps[0].completion_tokens == 5
    assert comps[0].finish_reason == "length"


# ---------------------------------------------------------------------------- n samples


def test_litellm_says_openai_supports_n_but_llama_server_returns_one_choice(
        llama_server: Any) -> None:
    from tts_graph.backends.litellm_backend import import_litellm

    litellm = import_litellm()
    for provider in ("openai", "hosted_vllm"):
        assert "n" in litellm.get_supported_openai_params(model="smollm2",
                                                          custom_llm_provider=provider)
    raw = llama_server.chat({"messages": [{"role": "user", "content": QUESTION}],
                             "max_tokens": 4, "n": 3, "seed": 1})
    assert len(raw["choices"]) == 1  # n is accepted and silently ignored


def test_n_samples_are_n_different_answers(proxy: Any) -> None:
    n = 4
    ex, rec = recorded_executor(graph(proxy.base_url, samples=n, temperature=1.0))
    result = ex.run(QUESTION)
    assert result.status == "ok", result.error
    texts = [c.text for c in result.steps["solve"].candidates]
    assert len(texts) == n
    assert len(set(texts)) == n, texts
    assert result.usage.samples == n
    # what the backend was asked: n (llama.cpp answers with one choice), then, by the
    # binding, one request per missing sample (each under the model's limits)
    (req, first), *rest = rec.log
    assert req.n == n and len(first) == 1
    rest.sort(key=lambda r: r[0].seed)
    assert [(r.n, r.seed) for r, _ in rest] == [(1, req.seed + i) for i in range(1, n)]
    comps = [*first, *(c for _, got in rest for c in got)]
    assert result.usage.calls == n  # a record each request
    # what went over the wire: one call asking for n, then one call per missing sample,
    # each with its own seed
    chats = proxy.chats()
    assert len(chats) == n
    assert chats[0].request.get("n") == n
    assert all("n" not in e.request for e in chats[1:])
    by_seed = {e.request["seed"]: e.response for e in chats}
    assert sorted(by_seed) == [req.seed + i for i in range(n)]
    # sample i is the server's answer for seed + i, with the usage the server reported
    for i, comp in enumerate(comps):
        got = by_seed[req.seed + i]
        assert comp.text == got["choices"][0]["message"]["content"], i
        assert comp.prompt_tokens == got["usage"]["prompt_tokens"]
        assert comp.completion_tokens == got["usage"]["completion_tokens"]
    assert result.usage.prompt_tokens == sum(e.response["usage"]["prompt_tokens"]
                                             for e in chats)
    assert result.usage.completion_tokens == sum(e.response["usage"]["completion_tokens"]
                                                 for e in chats)


# -------------------------------------------------------------------------------- limits


def test_max_concurrency_limits_calls_in_flight(proxy: Any) -> None:
    text = graph(proxy.base_url, max_tokens=8, extra=", max_concurrency: 2")
    ex = Executor(loads_graph(text))
    results = ex.run_many([f"What is {i} + {i}?" for i in range(6)], concurrency=6)
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    binding = ex.bindings()["m"]
    assert binding.peak_in_flight == 2
    assert binding.attempts == 6
    assert len(proxy.chats()) == 6 and proxy.peak <= 2  # and so on the wire

    proxy.peak = 0
    unlimited = Executor(loads_graph(graph(proxy.base_url, max_tokens=8)))
    unlimited.run_many([f"What is {i} + 1?" for i in range(6)], concurrency=6)
    assert unlimited.bindings()["m"].peak_in_flight > 2  # the cap above did the limiting
    assert proxy.peak > 2


def test_max_concurrency_bounds_requests_on_the_wire_with_samples(proxy: Any) -> None:
    """A call for n samples that the backend fans out is still one call under the cap: the
    cap must bound the HTTP requests too, or a server gets n times the declared load."""
    text = graph(proxy.base_url, samples=3, max_tokens=8, extra=", max_concurrency: 1")
    ex = Executor(loads_graph(text))
    results = ex.run_many([f"What is {i} + 2?" for i in range(2)], concurrency=2)
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert ex.bindings()["m"].peak_in_flight == 1
    assert proxy.peak <= 1, f"{proxy.peak} requests in flight under max_concurrency: 1"


# --------------------------------------------------------------------- the vLLM route


def test_hosted_vllm_route_speaks_the_same_api(proxy: Any) -> None:
    ex = Executor(loads_graph(graph(proxy.base_url, model="hosted_vllm/smollm2", samples=2)))
    result = ex.run(QUESTION)
    assert result.status == "ok", result.error
    assert len(result.steps["solve"].candidates) == 2
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert ex.bindings()["m"].identity.startswith("litellm:hosted_vllm/smollm2@")
    chats = proxy.chats()
    assert chats and all(e.request["model"] == "smollm2" for e in chats)
    assert all(e.status == 200 for e in chats)


# ------------------------------------------------------------------------------ API keys


def test_api_key_from_env_reaches_the_server_and_stays_out_of_results(
        llama_server_keyed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = llama_server_keyed.api_key
    text = graph(llama_server_keyed.base_url, extra=f", api_key_env: {KEY_ENV}")
    assert key not in text
    monkeypatch.setenv(KEY_ENV, key)
    cache = tmp_path / "cache.sqlite"
    result = Executor(loads_graph(text), cache=cache).run(QUESTION)
    assert result.status == "ok", result.error
    assert result.text
    dumped = json.dumps(result.to_dict())
    assert key not in dumped
    assert key.encode() not in cache.read_bytes()


def test_wrong_key_is_an_infrastructure_error_without_the_key(
        llama_server_keyed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-" + "x" * 24
    monkeypatch.setenv(KEY_ENV, wrong)
    text = graph(llama_server_keyed.base_url, extra=f", api_key_env: {KEY_ENV}")
    ex = Executor(loads_graph(text))
    result = ex.run(QUESTION)
    assert result.status == "error"
    assert result.answer is None
    assert result.infra_errors and result.usage.errors == 1
    assert "401" in (result.error or "") or "auth" in (result.error or "").lower()
    assert ex.bindings()["m"].attempts == 1  # a refused key is not retried
    dumped = json.dumps(result.to_dict())
    assert wrong not in dumped and llama_server_keyed.api_key not in dumped


def test_no_key_is_refused_by_the_server(llama_server_keyed: Any) -> None:
    result = Executor(loads_graph(graph(llama_server_keyed.base_url))).run(QUESTION)
    assert result.status == "error" and result.infra_errors


def test_missing_key_env_is_one_clear_error_before_any_call(
        llama_server_keyed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph.errors import TTSGraphError

    monkeypatch.delenv(KEY_ENV, raising=False)
    text = graph(llama_server_keyed.base_url, extra=f", api_key_env: {KEY_ENV}")
    before = llama_server_keyed.posts()
    with pytest.raises(TTSGraphError, match=KEY_ENV):
        Executor(loads_graph(text)).bindings()
    assert llama_server_keyed.posts() == before


# ----------------------------------------------------------------------------------- CLI


def test_cli_runs_a_graph_end_to_end_over_the_wire(llama_server_keyed: Any,
                                                   tmp_path: Path) -> None:
    key = llama_server_keyed.api_key
    path = tmp_path / "wire.yaml"
    path.write_text(graph(llama_server_keyed.base_url, samples=3,
                          extra=f", api_key_env: {KEY_ENV}"))
    env = {**os.environ, KEY_ENV: key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "run", str(path), "-q", QUESTION,
                           "--json"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout and key not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "ok"
    assert len(out["steps"]["solve"]["candidates"]) == 3
    assert out["usage"]["samples"] == 3 and out["usage"]["completion_tokens"] > 0

    env[KEY_ENV] = "sk-wrong-" + "y" * 24
    bad = subprocess.run([sys.executable, "-m", "tts_graph", "run", str(path), "-q", QUESTION],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
                         check=False)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert env[KEY_ENV] not in bad.stdout + bad.stderr
    assert key not in bad.stdout + bad.stderr


# ------------------------------------------------------------------------- cancellation


async def test_cancelling_a_call_returns_promptly(llama_server: Any) -> None:
    from tts_graph.backends.litellm_backend import import_litellm

    import_litellm()  # so the cancel hits a request in flight, not the import
    doc = loads_graph(graph(llama_server.base_url))
    backend = create_backend(doc.spec.models["m"])
    req = GenerationRequest((Message("user", "Write a long story about a dragon."),),
                            max_tokens=96, seed=3)
    task = asyncio.create_task(backend.generate(req))
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - t0 < 1.0
    # llama.cpp's server cannot notice a dropped non-streaming request: it finishes the
    # generation, then serves again
    r = httpx.get(f"{llama_server.base_url}/models", timeout=30)
    assert r.status_code == 200


# ---------------------------------------------------------------------------- streaming


def sse_deltas(raw: bytes) -> list[str]:
    """The content deltas of an OpenAI SSE stream, as the server sent them."""
    out: list[str] = []
    for event in raw.decode().split("\n\n"):
        if not event.startswith("data: ") or event == "data: [DONE]":
            continue
        body = json.loads(event.removeprefix("data: "))
        for choice in body.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                out.append(choice["delta"]["content"])
    return out


async def test_a_single_sample_output_streams_over_the_wire(proxy: Any) -> None:
    text = graph(proxy.base_url, max_tokens=32).replace(
        "  vote: {role: vote, inputs: [solve]}\n", "").replace("output: vote", "output: solve")
    g = Graph.from_string(text)
    pieces: list[str] = []
    result = await g.arun("Name three colours.", on_text=pieces.append)
    assert result.status == "ok", result.error
    (ex_,) = proxy.chats()
    assert ex_.request["stream"] is True and ex_.request["max_tokens"] == 32
    wire = sse_deltas(ex_.raw)
    assert len(wire) > 3 and pieces == wire  # piece by piece as the server sent them
    assert "".join(pieces) == result.text
    u = result.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 32


async def test_a_vote_over_the_wire_is_not_streamed(proxy: Any) -> None:
    g = Graph.from_string(graph(proxy.base_url, samples=2))
    pieces: list[str] = []
    result = await g.arun(QUESTION, on_text=pieces.append)
    assert result.status == "ok", result.error
    assert pieces == [result.text]
    assert all(not e.request.get("stream") for e in proxy.chats())
