"""The real wire for ``backend: openai``: llama.cpp's OpenAI-compatible server on 127.0.0.1
(SmolLM2-135M-Instruct; see tests/servers.py), behind a recording proxy where what went over
the wire matters. llama.cpp's server accepts ``n`` and answers with one choice: the backend
tops up the missing samples with one call per seed and lets the binding split from then on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import RecordingProxy
from test_wire import sse_deltas

from tts_graph import Executor, Graph, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.registry import create_backend
from tts_graph.types import Message

pytestmark = pytest.mark.model
QUESTION = "What is 3 + 4?"
KEY_ENV = "TTS_OPENAI_WIRE_KEY"


def graph(base_url: str, *, samples: int = 1, temperature: float = 0.8, max_tokens: int = 24,
          extra: str = "", output: str = "vote") -> str:
    vote = "  vote: {role: vote, inputs: [solve]}\n" if output == "vote" else ""
    return (
        "version: 1\n"
        "name: openai-wire\n"
        f"models:\n  m: {{backend: openai, model: smollm2, api_base: '{base_url}'{extra}}}\n"
        f"defaults: {{max_tokens: {max_tokens}, temperature: {temperature}, seed: 7}}\n"
        f"nodes:\n  solve: {{role: solver, model: m, samples: {samples}}}\n{vote}"
        f"output: {output}\n"
    )


@pytest.fixture
def proxy(llama_server: Any) -> Any:
    with RecordingProxy(llama_server.base_url) as p:
        yield p


def test_answer_and_usage_are_what_the_server_sent(proxy: Any) -> None:
    result = Executor(loads_graph(graph(proxy.base_url))).run(QUESTION)
    assert result.status == "ok", result.error
    (ex,) = proxy.chats()
    sent, got = ex.request, ex.response
    assert sent["model"] == "smollm2" and "n" not in sent
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (24, 0.8, 7)
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}
    assert result.steps["solve"].candidates[0].text == got["choices"][0]["message"]["content"]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"])


def test_n_samples_when_the_server_ignores_n(proxy: Any) -> None:
    n = 4
    ex = Executor(loads_graph(graph(proxy.base_url, samples=n, temperature=1.0)))
    result = ex.run(QUESTION)
    assert result.status == "ok", result.error
    texts = [c.text for c in result.steps["solve"].candidates]
    assert len(texts) == n and len(set(texts)) == n, texts
    chats = proxy.chats()
    # one request asking for n (one choice back), then one per missing sample
    assert len(chats) == n and chats[0].request["n"] == n
    assert all("n" not in e.request for e in chats[1:])
    assert sorted(e.request["seed"] for e in chats) == [7 + i for i in range(n)]
    assert result.usage.completion_tokens == sum(e.response["usage"]["completion_tokens"]
                                                 for e in chats)
    # learned: the next query's samples go out one per request, none asks for n again
    assert ex.bindings()["m"].backend.splits_samples()
    again = ex.run("What is 5 + 1?")
    assert again.status == "ok" and len(again.steps["solve"].candidates) == n
    assert len(proxy.chats()) == 2 * n
    assert all("n" not in e.request for e in proxy.chats()[n:])


def test_a_base_model_prompt_goes_to_v1_completions(proxy: Any) -> None:
    text = graph(proxy.base_url, temperature=0.0, max_tokens=12,
                 extra=", options: {chat: false}")
    result = Executor(loads_graph(text)).run(QUESTION)
    assert result.status == "ok", result.error
    (ex,) = [e for e in proxy.exchanges if e.path == "/v1/completions"]
    assert not proxy.chats()
    assert ex.request["prompt"].endswith(f"Question: {QUESTION}\nResponse:")
    assert "\nQuestion:" in ex.request["stop"]
    assert result.steps["solve"].candidates[0].text == ex.response["choices"][0]["text"]
    assert result.usage.completion_tokens == ex.response["usage"]["completion_tokens"]


async def test_a_single_sample_streams_as_the_server_sent_it(proxy: Any) -> None:
    g = Graph.from_string(graph(proxy.base_url, max_tokens=32, output="solve"))
    pieces: list[str] = []
    result = await g.arun("Name three colours.", on_text=pieces.append)
    await g.aclose()
    assert result.status == "ok", result.error
    (ex,) = proxy.chats()
    assert ex.request["stream"] is True
    wire = sse_deltas(ex.raw)
    assert len(wire) > 3 and pieces == wire
    assert "".join(pieces) == result.text
    assert result.usage.prompt_tokens > 0 and 0 < result.usage.completion_tokens <= 32


def test_the_right_key_works_and_is_kept_nowhere(
        llama_server_keyed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    key = llama_server_keyed.api_key
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, key)
    text = graph(llama_server_keyed.base_url, extra=f", api_key_env: {KEY_ENV}")
    cache = tmp_path / "cache.sqlite"
    result = Executor(loads_graph(text), cache=cache).run(QUESTION)
    assert result.status == "ok", result.error
    assert key not in json.dumps(result.to_dict())
    assert key.encode() not in cache.read_bytes()
    assert key not in caplog.text


def test_a_wrong_key_is_one_infra_error_not_retried(
        llama_server_keyed: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    wrong = "sk-wrong-" + "z" * 24
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, wrong)
    ex = Executor(loads_graph(graph(llama_server_keyed.base_url,
                                    extra=f", api_key_env: {KEY_ENV}")))
    result = ex.run(QUESTION)
    assert result.status == "error" and result.answer is None
    assert result.infra_errors and result.usage.errors == 1
    err = result.error or ""
    assert "model 'smollm2'" in err and "HTTP 401 authentication failed" in err, err
    assert "\n" not in err
    assert ex.bindings()["m"].attempts == 1  # a refused key is not retried
    for secret in (wrong, llama_server_keyed.api_key):
        assert secret not in json.dumps(result.to_dict()) and secret not in caplog.text


async def test_cancelling_a_call_returns_promptly(llama_server: Any) -> None:
    backend = create_backend(loads_graph(graph(llama_server.base_url)).spec.models["m"])
    req = GenerationRequest((Message("user", "Write a long story about a dragon."),),
                            max_tokens=96, seed=3)
    task = asyncio.create_task(backend.generate(req))
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - t0 < 1.0
    await backend.aclose()
    assert httpx.get(f"{llama_server.base_url}/models", timeout=30).status_code == 200
