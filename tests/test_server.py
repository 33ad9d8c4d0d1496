"""``tts-graph serve``: graphs as OpenAI-compatible models, called by real clients.

The server runs on loopback in a background thread (uvicorn), and is called with the official
``openai`` client (sync and async), with litellm, and with raw httpx where a client would hide
what is checked (bad bodies, disconnects). Logic tests use scripted backends; the tests marked
``model`` serve graphs/single.yaml and graphs/self_consistency.yaml on the embedded SmolLM2.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from tts_graph import Graph
from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import BackendError
from tts_graph.server import (
    HEAD_TIMEOUT_S,
    bind_socket,
    conversation_to_question,
    create_app,
    uvicorn_config,
)
from tts_graph.types import Completion

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ helpers


@contextmanager
def serve_app(app: Any, *, log_level: str = "warning", access_log: bool = False,
              head_timeout_s: float = HEAD_TIMEOUT_S) -> Iterator[str]:
    """Serve ``app`` from a thread on a free loopback port, with the settings ``tts-graph
    serve`` uses; yields the base URL."""
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn_config(app, log_level=log_level, access_log=access_log,
                            head_timeout_s=head_timeout_s, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="tts-graph-server")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


async def await_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class SlowBackend(Backend):
    """Answers ``Answer: 4`` after ``latency`` seconds; counts calls in flight, their peak,
    and calls cancelled while running."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.started = self.finished = self.cancelled = 0
        self.in_flight = self.peak = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="scripted:slow")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.started += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        self.finished += 1
        return [Completion("Answer: 4", prompt_tokens=5, completion_tokens=2)
                for _ in range(request.n)]


class BrokenBackend(Backend):
    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="scripted:broken")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        raise BackendError("the backend is down")


def graph(name: str, backend: Backend, *, samples: int = 1, vote: bool = False,
          budget: dict[str, Any] | None = None, max_tokens: int | None = None) -> Graph:
    nodes: dict[str, Any] = {"solve": {"role": "solver", "model": "m", "samples": samples}}
    if vote:
        nodes["vote"] = {"role": "vote", "inputs": ["solve"]}
    data: dict[str, Any] = {"version": 1, "name": name,
                            "models": {"m": {"backend": "scripted", "model": name}},
                            "nodes": nodes, "output": "vote" if vote else "solve"}
    if budget:
        data["budget"] = budget
    if max_tokens:
        data["defaults"] = {"max_tokens": max_tokens}
    return Graph.from_dict(data, backends={"m": backend})


def vote_backend() -> ScriptedBackend:
    return ScriptedBackend(lambda req, i: ["So 4.\nAnswer: 4", "Answer: 4", "Answer: 5"][i])


def echo_backend() -> ScriptedBackend:
    """Says back the user message it got (the question as the graph sees it)."""
    return ScriptedBackend(lambda req, i: "ECHO:" + req.messages[-1].content)


def scripted_graphs() -> dict[str, Graph]:
    return {
        "vote3": graph("vote3", vote_backend(), samples=3, vote=True),
        "echo": graph("echo", echo_backend()),
        "broken": graph("broken", BrokenBackend()),
        # a judge after 4 samples that 60 tokens cannot cover: the query is cut (a vote
        # would not be: once the replies' usage is known its plan fits 2 samples)
        "budget": Graph.from_dict({
            "version": 1, "name": "budget", "models": {"m": {"backend": "scripted",
                                                             "model": "budget"}},
            "nodes": {"solve": {"role": "solver", "model": "m", "samples": 4},
                      "judge": {"role": "judge", "model": "m", "inputs": ["solve"]}},
            "output": "judge", "defaults": {"max_tokens": 10},
            "budget": {"max_tokens_per_query": 60}},
            backends={"m": ScriptedBackend(lambda req, i: "Answer: 4")}),
    }


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[str, Any]]:
    app = create_app(scripted_graphs(), max_concurrency=8)
    with serve_app(app) as url:
        yield url, app


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def aclient(url: str, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------- models and answers


def test_models_list_and_retrieve(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    c = client(url)
    ids = [m.id for m in c.models.list()]
    assert ids == ["vote3", "echo", "broken", "budget"]
    m = c.models.retrieve("vote3")
    assert m.id == "vote3" and m.object == "model" and m.owned_by == "tts-graph"
    assert m.model_extra["tts_graph"]["nodes"] == ["solve", "vote"]
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def test_completion_usage_equals_the_graphs_usage(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    r = client(url).chat.completions.create(model="vote3", messages=user("What is 2+2?"))
    assert r.object == "chat.completion" and r.model == "vote3" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "So 4.\nAnswer: 4"
    assert r.choices[0].finish_reason == "stop"
    # the same graph run in-process on the same question costs exactly the same
    direct = graph("vote3", vote_backend(), samples=3, vote=True).run("What is 2+2?")
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert r.usage.completion_tokens == direct.usage.completion_tokens > 0
    assert r.usage.total_tokens == direct.usage.tokens
    ext = r.model_extra["tts_graph"]
    assert ext["status"] == "ok" and ext["answer"] == "4" and ext["graph"] == "vote3"
    assert ext["latency_s"] > 0 and ext["cost_usd"] == 0.0
    assert ext["usage"]["samples"] == 3 and ext["usage"]["tokens"] == r.usage.total_tokens
    nodes = ext["usage_by_node"]
    assert set(nodes) == {"solve"}  # the vote makes no call
    assert sum(n["prompt_tokens"] for n in nodes.values()) == r.usage.prompt_tokens
    assert sum(n["completion_tokens"] for n in nodes.values()) == r.usage.completion_tokens
    assert "steps" not in ext and "calls" not in ext


def test_steps_and_calls_on_request(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    r = client(url).chat.completions.create(model="vote3", messages=user("q"),
                                            extra_body={"tts_graph": {"steps": True,
                                                                      "calls": True}})
    ext = r.model_extra["tts_graph"]
    assert [c["text"] for c in ext["steps"]["solve"]["candidates"]] == [
        "So 4.\nAnswer: 4", "Answer: 4", "Answer: 5"]
    assert sum(c["prompt_tokens"] for c in ext["calls"]) == r.usage.prompt_tokens


def test_conversation_is_given_as_a_transcript(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    c = client(url)
    alone = c.chat.completions.create(model="echo", messages=user("2+2?"))
    assert alone.choices[0].message.content == "ECHO:2+2?"  # one message: verbatim
    messages: list[Any] = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "refusal": None},
        {"role": "user", "content": [{"type": "text", "text": "And "},
                                     {"type": "text", "text": "3*3?"}]},
    ]
    r = c.chat.completions.create(model="echo", messages=messages)
    expected = ("Conversation so far:\nSystem: Be terse.\nUser: hi\nAssistant: hello\n\n"
                "Question: And 3*3?")
    assert r.choices[0].message.content == "ECHO:" + expected
    assert conversation_to_question(messages) == expected


async def test_async_client_concurrent(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    async with aclient(url) as c:
        rs = await asyncio.gather(*(c.chat.completions.create(
            model="echo", messages=user(f"q{i}")) for i in range(5)))
        assert [r.choices[0].message.content for r in rs] == [f"ECHO:q{i}" for i in range(5)]
        models = await c.models.list()
        assert "echo" in [m.id async for m in models]


def test_ignored_parameters_are_accepted(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    r = client(url).chat.completions.create(
        model="vote3", messages=user("What is 2+2?"), temperature=0.0, top_p=0.5,
        max_tokens=1, seed=7, stop=["x"], presence_penalty=0.1, user="me", n=1,
        response_format={"type": "text"}, tool_choice="none")
    assert r.choices[0].message.content == "So 4.\nAnswer: 4"  # the graph's settings rule


# ----------------------------------------------------------------------------- streaming


def test_streaming_with_the_openai_client(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    c = client(url)
    whole = c.chat.completions.create(model="vote3", messages=user("What is 2+2?"))
    chunks = list(c.chat.completions.create(model="vote3", messages=user("What is 2+2?"),
                                            stream=True,
                                            stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" and ch.model == "vote3" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert finals[0].model_extra["tts_graph"]["answer"] == "4"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens",
                                                "total_tokens"}) == \
        whole.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
    # without include_usage there is no usage chunk
    plain = list(c.chat.completions.create(model="vote3", messages=user("What is 2+2?"),
                                           stream=True))
    assert all(ch.choices for ch in plain)


async def test_streaming_async_and_wire_format(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    async with aclient(url) as c:
        stream = await c.chat.completions.create(model="echo", messages=user("hey"),
                                                 stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
    assert text == "ECHO:hey"
    async with httpx.AsyncClient(base_url=url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "echo", "stream": True,
                                                       "messages": user("hey")})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


class WordStream(Backend):
    """Streams its answer word by word; after the first word it waits (polling a thread-safe
    event: the server runs on another thread) until the test has seen that word arrive."""

    def __init__(self) -> None:
        self.go_on = threading.Event()
        self.finished = False

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="scripted:words")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        raise AssertionError("a one-sample output node streams")

    async def stream(self, request: GenerationRequest, on_text: Any) -> list[Completion]:
        words = ["Two", " plus", " two", " is", " four.", "\nAnswer:", " 4"]
        for i, w in enumerate(words):
            on_text(w)
            if i == 0:
                while not self.go_on.is_set():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.005)
        self.finished = True
        return [Completion("".join(words), prompt_tokens=7, completion_tokens=7)]


def test_streaming_sends_tokens_as_the_output_node_decodes() -> None:
    words = WordStream()
    app = create_app({"words": graph("words", words)})
    with serve_app(app) as url:
        stream = client(url).chat.completions.create(
            model="words", messages=user("What is 2+2?"), stream=True,
            stream_options={"include_usage": True})
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"
        first = next(chunks)
        assert first.choices[0].delta.content == "Two"
        assert not words.finished  # the model is still decoding
        words.go_on.set()
        rest = list(chunks)
    content = [ch.choices[0].delta.content for ch in rest
               if ch.choices and ch.choices[0].delta.content]
    assert "Two" + "".join(content) == "Two plus two is four.\nAnswer: 4"
    assert len(content) >= 2  # more than one chunk after the first word
    final = [ch for ch in rest if ch.choices and ch.choices[0].finish_reason]
    assert final[0].model_extra["tts_graph"]["answer"] == "4"
    assert rest[-1].usage.completion_tokens == 7


def test_streaming_infrastructure_error(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    with pytest.raises(openai.APIError, match="the backend is down"):
        list(client(url).chat.completions.create(model="broken", messages=user("q"),
                                                 stream=True))


# -------------------------------------------------------------------- statuses and errors


def test_infrastructure_error_is_502(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    with pytest.raises(openai.APIStatusError) as exc:
        client(url).chat.completions.create(model="broken", messages=user("q"))
    assert exc.value.status_code == 502
    body = exc.value.response.json()
    assert body["error"]["code"] == "graph_error"
    assert "the backend is down" in body["error"]["message"]
    assert body["tts_graph"]["status"] == "error"


def test_budget_status_is_200_with_the_partial_answer(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    r = client(url).chat.completions.create(model="budget", messages=user("2+2?"))
    ext = r.model_extra["tts_graph"]
    assert ext["status"] == "budget" and ext["answer"] == "4"
    assert 0 < ext["usage"]["samples"] < 4
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Answer: 4"


def test_unknown_graph_and_route_are_404(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    with pytest.raises(openai.NotFoundError) as exc:
        client(url).chat.completions.create(model="nope", messages=user("q"))
    err = exc.value.response.json()["error"]
    assert err["code"] == "model_not_found" and "nope" in err["message"]
    r = httpx.get(url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    ({"messages": [{"role": "user", "content": "q"}]}, "'model' is required"),
    ({"model": "echo"}, "'messages' must be a non-empty list"),
    ({"model": "echo", "messages": []}, "'messages' must be a non-empty list"),
    ({"model": "echo", "messages": ["hi"]}, "messages[0]: a message must be an object"),
    ({"model": "echo", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "echo", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "echo", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, "only text parts"),
    ({"model": "echo", "messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]},
     "last message must come from the user"),
    ({"model": "echo", "messages": [{"role": "user", "content": "  "}]}, "is empty"),
    ({"model": "echo", "messages": user("q"), "n": 2}, "'n' must be 1"),
    ({"model": "echo", "messages": user("q"), "stream": "yes"}, "'stream' must be"),
    ({"model": "echo", "messages": user("q"), "tools": [{"type": "function", "function": {
        "name": "f"}}], "tool_choice": "auto"}, "tool_choice, tools"),
    ({"model": "echo", "messages": user("q"), "logprobs": True}, "logprobs"),
    ({"model": "echo", "messages": user("q"), "response_format": {"type": "json_object"}},
     "response_format"),
    ({"model": "echo", "messages": user("q"), "frobnicate": 1}, "unrecognized request "
     "argument(s): frobnicate"),
    ({"model": "echo", "messages": user("q"), "tts_graph": {"steps": "yes"}}, "'tts_graph'"),
])
def test_malformed_bodies_are_400(scripted: tuple[str, Any], body: Any, needle: str) -> None:
    url, _ = scripted
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(url + "/v1/chat/completions", content=content,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"


def test_deeply_nested_bodies_are_400_without_a_traceback(
        scripted: tuple[str, Any], caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    url, _ = scripted
    caplog.set_level("DEBUG")
    deep = b"[" * 100_000 + b"]" * 100_000  # past json's recursion limit
    shallow_enough_to_parse = ('{"model": "echo", "messages": [{"role": "user", '
                               '"content": "q"}], "metadata": ' + "[" * 200 + "]" * 200 + "}")
    for body in (deep, shallow_enough_to_parse.encode()):
        r = httpx.post(url + "/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert "nested too deeply" in r.json()["error"]["message"]
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        assert "Traceback" not in text and "RecursionError" not in text
    ok = httpx.post(url + "/v1/chat/completions", json={  # nested, but not too deeply
        "model": "echo", "messages": [{"role": "user", "content": [{"type": "text",
                                                                    "text": "q"}]}]})
    assert ok.status_code == 200, ok.text


def test_body_size_limit_is_413() -> None:
    app = create_app({"echo": graph("echo", echo_backend())}, max_body_bytes=64 * 1024)
    big = json.dumps({"model": "echo", "messages": user("x" * 200_000)}).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    with serve_app(app) as url:
        for kwargs in ({"content": big}, {"content": chunked()}):
            r = httpx.post(url + "/v1/chat/completions", **kwargs,  # type: ignore[arg-type]
                           headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "request_too_large"
            assert "65,536 bytes" in r.json()["error"]["message"]
        fits = client(url).chat.completions.create(model="echo", messages=user("y" * 60_000))
        assert fits.choices[0].message.content == "ECHO:" + "y" * 60_000


def test_unsupported_parameter_with_the_openai_client(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    with pytest.raises(openai.BadRequestError, match="tools"):
        client(url).chat.completions.create(
            model="echo", messages=user("q"),
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


# --------------------------------------------------------------------------------- auth


def test_api_key_auth(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
                      ) -> None:
    key = "sk-tts-test-" + secrets.token_hex(12)
    app = create_app({"echo": graph("echo", echo_backend())}, api_key=key)
    caplog.set_level("DEBUG")
    with serve_app(app, log_level="debug", access_log=True) as url:
        with pytest.raises(openai.AuthenticationError) as exc:
            client(url, "wrong").chat.completions.create(model="echo", messages=user("q"))
        assert exc.value.status_code == 401
        bodies = [exc.value.response.text]
        r = httpx.post(url + "/v1/chat/completions", json={"model": "echo",
                                                           "messages": user("q")})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bodies.append(r.text)
        r = httpx.get(url + "/v1/models", headers={"Authorization": key})  # no "Bearer"
        assert r.status_code == 401
        for scheme in ("bearer", "BEARER", "bEaReR"):  # RFC 7235: the scheme is any case
            r = httpx.get(url + "/v1/models", headers={"Authorization": f"{scheme} {key}"})
            assert r.status_code == 200, scheme
        r = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key.upper()}"})
        assert r.status_code == 401  # the key itself is case-sensitive
        r = httpx.get(url + "/v1/models", headers={"Authorization": f"Basic {key}"})
        assert r.status_code == 401
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        ok = client(url, key).chat.completions.create(model="echo", messages=user("q"))
        assert ok.choices[0].message.content == "ECHO:q"
        bodies.append(ok.model_dump_json())
        models = client(url, key).models.list()
        assert [m.id for m in models] == ["echo"]
        bodies.append(json.dumps([m.model_dump() for m in models]))
        stream = list(client(url, key).chat.completions.create(
            model="echo", messages=user("q"), stream=True))
        bodies.append("".join(ch.model_dump_json() for ch in stream))
    out, err = capfd.readouterr()
    assert "POST /v1/chat/completions" in out + err + caplog.text  # the logs were captured
    for text in [*bodies, out, err, caplog.text]:
        assert key not in text


# -------------------------------------------------------------- concurrency and cancelling


async def test_concurrency_limit_queues_requests() -> None:
    backend = SlowBackend(0.3)
    app = create_app({"slow": graph("slow", backend)}, max_concurrency=2)
    state = app.state.tts
    peak_waiting = 0
    with serve_app(app) as url:
        async with aclient(url) as c:
            calls = asyncio.gather(*(c.chat.completions.create(
                model="slow", messages=user(f"q{i}")) for i in range(6)))
            task = asyncio.ensure_future(calls)
            while not task.done():
                peak_waiting = max(peak_waiting, state.waiting)
                await asyncio.sleep(0.01)
            rs = task.result()
    assert [r.choices[0].message.content for r in rs] == ["Answer: 4"] * 6
    assert backend.peak == 2 and state.peak_running == 2
    assert peak_waiting >= 3  # six at once, two running: the rest waited
    assert backend.finished == 6 and state.waiting == state.running == 0


def test_disconnect_cancels_the_run() -> None:
    backend = SlowBackend(30.0)
    app = create_app({"hang": graph("hang", backend)})
    state = app.state.tts
    with serve_app(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", timeout=0.5,
                       json={"model": "hang", "messages": user("q")})
        wait_for(lambda: backend.cancelled == 1 and state.running == 0, timeout=5)
        assert backend.started == 1 and backend.finished == 0 and state.cancelled == 1


def test_disconnect_while_streaming_cancels_the_run() -> None:
    backend = SlowBackend(30.0)
    app = create_app({"hang": graph("hang", backend)}, keepalive_s=0.2)
    state = app.state.tts
    with serve_app(app) as url, httpx.Client(timeout=10) as h:
        with h.stream("POST", url + "/v1/chat/completions",
                      json={"model": "hang", "stream": True, "messages": user("q")}) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            assert '"role": "assistant"' in first
            assert next(line for line in lines if line) == ": keep-alive"
            wait_for(lambda: backend.started == 1)
        wait_for(lambda: backend.cancelled == 1 and state.running == 0, timeout=5)
        assert backend.finished == 0 and state.cancelled == 1


async def test_disconnect_while_waiting_for_a_slot() -> None:
    backend = SlowBackend(30.0)
    app = create_app({"hang": graph("hang", backend)}, max_concurrency=1)
    state = app.state.tts
    body = {"model": "hang", "messages": user("q")}
    with serve_app(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as h:
            first = asyncio.create_task(h.post("/v1/chat/completions", json=body))
            await await_for(lambda: state.running == 1)
            second = asyncio.create_task(h.post("/v1/chat/completions", json=body))
            await await_for(lambda: state.waiting == 1)
            second.cancel()  # the client gives up while queued
            await await_for(lambda: state.waiting == 0 and state.cancelled == 1)
            assert backend.started == 1  # the queued run never reached the backend
            first.cancel()
            await await_for(lambda: backend.cancelled == 1 and state.running == 0)
            assert state.cancelled == 2 and backend.finished == 0


# -------------------------------------------------------------------------------- litellm


def litellm_module() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from tts_graph.backends.litellm_backend import import_litellm

    return import_litellm()


def test_litellm_as_a_client(scripted: tuple[str, Any]) -> None:
    url, _ = scripted
    litellm = litellm_module()
    r = litellm.completion(model="openai/vote3", api_base=url + "/v1", api_key="x",
                           messages=user("What is 2+2?"), num_retries=0)
    assert r.choices[0].message.content == "So 4.\nAnswer: 4"
    direct = graph("vote3", vote_backend(), samples=3, vote=True).run("What is 2+2?")
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens
    assert r.usage.completion_tokens == direct.usage.completion_tokens
    chunks = list(litellm.completion(model="openai/echo", api_base=url + "/v1", api_key="x",
                                     messages=user("hey"), stream=True, num_retries=0))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "ECHO:hey"


# ------------------------------------------------------------------------------------ CLI


SCRIPTED_YAML = """\
version: 1
name: {name}
models:
  m: {{backend: scripted, model: x, options: {{answers: ["Answer: 4"]}}}}
nodes:
  solve: {{role: solver, model: m}}
output: solve
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", "serve", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_cli_rejects_bad_graphs_in_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SCRIPTED_YAML.format(name="same"))
    (tmp_path / "b.yaml").write_text(SCRIPTED_YAML.format(name="same"))
    (tmp_path / "c.yaml").write_text("version: 1\nname: c\nnodes: {}\noutput: x\n")
    r = cli(str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith(f"{tmp_path / 'b.yaml'}: graph name 'same' is also")
               for line in lines)
    assert any(line.startswith(str(tmp_path / "c.yaml")) for line in lines)
    assert "Traceback" not in r.stderr
    (tmp_path / "d.yaml").write_text(  # checked before binding, with its line
        "version: 1\nname: d\nmodels:\n  m: {backend: local, model: llama-900b}\n"
        "nodes:\n  s: {role: solver, model: m}\noutput: s\n")
    r = cli(str(tmp_path / "d.yaml"))
    assert r.returncode == 2 and r.stderr.strip().startswith(
        f"{tmp_path / 'd.yaml'}:4: models.m.model: unknown local model 'llama-900b'"), r.stderr
    r = cli(str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and r.stderr.strip().endswith("no such file or directory")
    (tmp_path / "empty").mkdir()
    r = cli(str(tmp_path / "empty"))
    assert r.returncode == 2 and "no graph files" in r.stderr
    r = cli(str(tmp_path / "a.yaml"), "--api-key-env", "TTS_GRAPH_TEST_UNSET_KEY")
    assert r.returncode == 2 and "TTS_GRAPH_TEST_UNSET_KEY is not set" in r.stderr


def test_cli_serves_a_directory(tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.yaml").write_text(SCRIPTED_YAML.format(name=name))
    key = "sk-cli-" + secrets.token_hex(8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tts_graph", "serve", str(tmp_path), "--port", "0",
         "--api-key-env", "TTS_GRAPH_TEST_KEY", "--max-concurrency", "2",
         "--max-body-mb", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TTS_GRAPH_TEST_KEY": key})
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "serving 2 graph(s) at http://127.0.0.1:" in banner, banner
        url = banner.split(" at ")[1].split()[0]
        c = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=20)
        wait_for(lambda: _up(url))
        assert sorted(m.id for m in c.models.list()) == ["alpha", "beta"]
        r = c.chat.completions.create(model="beta", messages=user("q"))
        assert r.choices[0].message.content == "Answer: 4"
        too_big = httpx.post(url + "/chat/completions", json={
            "model": "beta", "messages": user("x" * 20_000)},
            headers={"Authorization": f"Bearer {key}"})
        assert too_big.status_code == 413, too_big.text  # --max-body-mb 0.01 ≈ 10 KB
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert key not in banner + out


def _up(url: str) -> bool:
    try:
        return httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
    except httpx.TransportError:
        return False


# ------------------------------------------------------------------- the embedded model


@pytest.fixture(scope="module")
def real() -> Iterator[str]:
    app = create_app([ROOT / "graphs" / "single.yaml", ROOT / "graphs" / "self_consistency.yaml"],
                     max_concurrency=2)
    with serve_app(app) as url:
        yield url


QUESTION = "What is 3 + 4?"


@pytest.mark.model
def test_real_single_matches_the_graph_run_in_process(real: str) -> None:
    c = client(real)
    assert sorted(m.id for m in c.models.list()) == ["self_consistency", "single"]
    r = c.chat.completions.create(model="single", messages=user(QUESTION))
    direct = Graph.from_yaml(ROOT / "graphs" / "single.yaml").run(QUESTION)
    assert r.choices[0].message.content == direct.text and direct.text
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert r.usage.completion_tokens == direct.usage.completion_tokens > 0
    ext = r.model_extra["tts_graph"]
    assert ext["answer"] == direct.answer and ext["status"] == direct.status
    assert ext["usage_by_model"]["small"]["tokens"] == r.usage.total_tokens
    # streaming gives the same text (seeds come from the graph)
    chunks = list(c.chat.completions.create(model="single", messages=user(QUESTION),
                                            stream=True, stream_options={"include_usage": True}))
    content = [ch.choices[0].delta.content for ch in chunks
               if ch.choices and ch.choices[0].delta.content]
    assert "".join(content) == direct.text
    assert len(content) > 3  # token by token, not one chunk at the end
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens


@pytest.mark.model
async def test_real_self_consistency_async_usage_sums(real: str) -> None:
    async with aclient(real) as c:
        r = await c.chat.completions.create(model="self_consistency", messages=user(QUESTION))
    ext = r.model_extra["tts_graph"]
    assert ext["status"] == "ok" and ext["usage"]["samples"] == 8
    by_node = ext["usage_by_node"]
    assert sum(n["prompt_tokens"] for n in by_node.values()) == r.usage.prompt_tokens
    assert sum(n["completion_tokens"] for n in by_node.values()) == r.usage.completion_tokens
    assert r.usage.total_tokens == ext["usage"]["tokens"] > 0
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"


@pytest.mark.model
def test_real_litellm_client(real: str) -> None:
    litellm = litellm_module()
    r = litellm.completion(model="openai/single", api_base=real + "/v1", api_key="x",
                           messages=[{"role": "system", "content": "Be brief."},
                                     *user(QUESTION)], num_retries=0)
    assert r.choices[0].message.content
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
