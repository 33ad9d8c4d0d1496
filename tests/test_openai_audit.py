"""``backend: openai`` against servers nobody here wrote, as a user meets them: a real aiohttp
server on loopback per test (every reply is the test's), graphs run through the executor or
the CLI as a subprocess. What the other openai tests (test_openai_backend.py,
test_upstream_faults.py, test_openai_wire.py) leave out: keys as environments hold them, an
``api_base`` that is a proxy's or no URL, redirects, a server that refuses
``stream_options``, a base model's choice without text, a quota that is spent, and the key
in none of the files a run or an eval writes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tts_graph import Executor, Graph, loads_graph
from tts_graph.errors import TTSGraphError
from tts_graph.executor import QueryResult

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "Answer: 4"
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)


@contextmanager
def aio_server(handler: Handler) -> Iterator[Server]:
    """An aiohttp server on 127.0.0.1 in a thread of its own, every route answered by
    ``handler(request, parsed_json_body_or_None)``; what it got is in ``.seen``."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def any_route(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        box["server"].seen.append(Seen(request.method, request.path, dict(request.query),
                                       dict(request.headers), body))
        return await handler(request, body)

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", any_route)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        box["runner"] = runner
        box["server"] = Server(f"http://127.0.0.1:{port}")
        started.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield box["server"]
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def chat_answer(text: str = ANSWER) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}], "usage": USAGE}


async def answers(request: web.Request, body: Any) -> web.StreamResponse:
    return web.json_response(chat_answer())


def graph_text(api_base: str, *, extra: str = "", samples: int = 1, retries: int = 1) -> str:
    return (f"version: 1\nname: audit\nmodels:\n  m:\n    backend: openai\n    model: m\n"
            f"    api_base: {json.dumps(api_base)}\n    timeout_s: 5\n"
            f"    max_retries: {retries}{extra}\n"
            "defaults: {max_tokens: 32, temperature: 0.7, seed: 3}\n"
            f"nodes:\n  solve: {{role: solver, model: m, samples: {samples}}}\n"
            "output: solve\n")


def ask(text: str, *, stream: bool = False, questions: int = 1
        ) -> tuple[list[QueryResult], list[str]]:
    """Questions through one graph (one event loop): the results and what streamed."""
    g = Graph.from_string(text)
    pieces: list[str] = []

    async def main() -> list[QueryResult]:
        try:
            return [await g.arun(f"What is 2 + {i + 2}?",
                                 on_text=pieces.append if stream else None)
                    for i in range(questions)]
        finally:
            await g.aclose()

    return asyncio.run(main()), pieces


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    full.update(env, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------ the key


def test_a_key_with_a_trailing_line_break_is_sent_without_it(tmp_path: Path) -> None:
    """A key read from a file (``KEY=$(cat f)`` keeps none, but env files and secret mounts
    often keep the final newline) crashed every call with aiohttp's "forbidden control
    character" ValueError, a traceback out of ``tts-graph run``."""
    key = "sk-audit-" + "n" * 24
    with aio_server(answers) as server:
        (tmp_path / "g.yaml").write_text(
            graph_text(server.url + "/v1", extra="\n    api_key_env: AUDIT_KEY"))
        p = cli(["run", "g.yaml", "-q", "What is 2 + 2?", "--json"],
                {"AUDIT_KEY": key + "\r\n"}, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["text"] == ANSWER
    assert [s.headers["Authorization"] for s in server.seen] == [f"Bearer {key}"]


def test_a_key_with_a_line_break_inside_is_one_config_line(tmp_path: Path) -> None:
    """Two keys pasted into one variable: no call can carry it. One line naming the
    variable, exit 2, nothing sent, and no part of the key printed."""
    key = "sk-audit-first-" + "a" * 16 + "\nsk-audit-second-" + "b" * 16
    with aio_server(answers) as server:
        (tmp_path / "g.yaml").write_text(
            graph_text(server.url + "/v1", extra="\n    api_key_env: AUDIT_KEY"))
        p = cli(["run", "g.yaml", "-q", "What is 2 + 2?"], {"AUDIT_KEY": key}, tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "AUDIT_KEY" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and "sk-audit" not in p.stdout + p.stderr
    assert server.seen == []


def test_the_key_is_in_no_file_a_run_or_an_eval_writes(tmp_path: Path) -> None:
    """A server that echoes the Authorization header back: in a JSON error with its slashes
    escaped (PHP's json_encode does it), in a plain-text 502, in a 400. The key reaches
    neither the output, the ``--trace`` file, the response cache, nor eval's results store
    (SQLite and its write-ahead log), nor what the CLI prints."""
    key = "sk-audit/echo+" + "Q/" * 12
    count = {"n": 0}

    async def echo(request: web.Request, body: Any) -> web.StreamResponse:
        count["n"] += 1
        auth = request.headers.get("Authorization", "")
        if count["n"] % 4 == 1:
            text = json.dumps({"error": {"message": f"overloaded for {auth}"}})
            return web.Response(status=500, text=text.replace("/", "\\/"),
                                content_type="application/json")
        if count["n"] % 4 == 2:
            return web.Response(status=502, text=f"bad gateway: {auth}")
        if count["n"] % 4 == 3:
            return web.json_response({"error": {"message": f"refused {auth}"}}, status=400)
        return web.json_response(chat_answer())

    with aio_server(echo) as server:
        (tmp_path / "g.yaml").write_text(
            graph_text(server.url + "/v1", extra="\n    api_key_env: AUDIT_KEY", retries=2))
        with (tmp_path / "q.jsonl").open("w") as f:
            for i in range(6):
                f.write(json.dumps({"question": f"What is 2 + {i}?", "answer": str(2 + i)})
                        + "\n")
        env = {"AUDIT_KEY": key}
        run = cli(["run", "g.yaml", "--input", "q.jsonl", "--out", "out.jsonl", "--trace",
                   "run.trace.jsonl", "--cache", "cache.sqlite", "--json"], env, tmp_path)
        ev = cli(["eval", "g.yaml", "--task", "q.jsonl", "--out", "evalrun", "--trace",
                  "eval.trace.jsonl", "--json"], env, tmp_path)
    assert any(s.headers.get("Authorization") == f"Bearer {key}" for s in server.seen)
    for p in (run, ev):
        assert "Traceback" not in p.stderr, p.stderr[-2000:]
        assert key[:10] not in p.stdout + p.stderr
    assert "sk-audit" not in run.stdout + run.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"ok", "error"}  # errors were made, and kept
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"
               and p.name != "q.jsonl"]
    assert {"run.trace.jsonl", "eval.trace.jsonl", "cache.sqlite"} <= {p.name for p in written}
    assert any(p.parent.name == "evalrun" for p in written)
    for p in written:
        data = p.read_bytes()
        for form in (key, key.replace("/", "\\/")):
            assert form.encode() not in data, p
        assert b"sk-audit" not in data, p


# -------------------------------------------------------------------------- the api_base


def test_an_api_base_with_a_query_keeps_it_after_the_path() -> None:
    """Gateways that want ``?api-version=...`` on every request: the path was appended after
    the query (``/v1?api-version=1/chat/completions``)."""
    with aio_server(answers) as server:
        (res,), _ = ask(graph_text(server.url + "/proxy/v1/?api-version=2024-06-01"))
    assert res.status == "ok", res.error
    (seen,) = server.seen
    assert seen.path == "/proxy/v1/chat/completions"
    assert seen.query == {"api-version": "2024-06-01"}


@pytest.mark.parametrize("api_base", ["127.0.0.1:8000/v1", "localhost:8000",
                                      "ftp://127.0.0.1/v1", "http:///v1", "not a url"])
def test_an_api_base_that_is_no_http_url_is_a_config_error(api_base: str) -> None:
    """It was a "connection" failure of every call, retried, or an error at the first call:
    a configuration error is known before anything runs."""
    ex = Executor(loads_graph(graph_text(api_base)))
    with pytest.raises(TTSGraphError) as info:
        ex.bindings()
    msg = str(info.value)
    assert "model 'm'" in msg and "api_base" in msg and api_base in msg and "\n" not in msg


BAD_ENTRIES = {
    "api_base": (graph_text("127.0.0.1:8000/v1"), "models.m.api_base: '127.0.0.1:8000/v1' is "
                 "not an http:// or https:// URL with a host (e.g. http://127.0.0.1:8000/v1)"),
    "options": (graph_text("http://127.0.0.1:9/v1", extra="\n    options: {chat: 'no'}"),
                "models.m.options.chat: must be true or false, not 'no'"),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("bad", list(BAD_ENTRIES))
def test_a_bad_api_base_or_chat_option_is_a_file_line_error_exit_2(
        command: str, bad: str, tmp_path: Path) -> None:
    text, message = BAD_ENTRIES[bad]
    (tmp_path / "g.yaml").write_text(text)
    (lineno,) = [i + 1 for i, line in enumerate(text.splitlines())
                 if line.strip().startswith(bad)]
    args = ["run", "g.yaml", "-q", "What is 2 + 2?"] if command == "run" else [command, "g.yaml"]
    p = cli(args, {}, tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [f"g.yaml:{lineno}: {message}"]


def test_a_404_names_the_address_that_was_asked() -> None:
    """An api_base without its ``/v1``: "HTTP 404: Not Found" said nothing of where."""
    async def only_v1(request: web.Request, body: Any) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            return web.json_response(chat_answer())
        return web.json_response({"detail": "Not Found"}, status=404)

    with aio_server(only_v1) as server:
        (res,), _ = ask(graph_text(server.url))
    err = res.steps["solve"].error or ""
    assert res.status == "error" and len(server.seen) == 1  # not retried
    assert f"POST {server.url}/chat/completions" in err and "Not Found" in err, err
    assert "\n" not in err


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_reported_with_where_it_points_not_followed(status: int) -> None:
    """Followed, a 301/302 turned the POST into a GET without its body, and a redirect to
    another origin (http to https included) went without the key: the error then spoke of
    a wrong method or a wrong key. The user is told where api_base points instead."""
    with aio_server(answers) as target:
        async def moved(request: web.Request, body: Any) -> web.StreamResponse:
            return web.Response(status=status,
                                headers={"Location": f"{target.url}/v1/chat/completions"})

        with aio_server(moved) as server:
            (res,), _ = ask(graph_text(server.url + "/v1"))
    err = res.steps["solve"].error or ""
    assert res.status == "error" and res.answer is None, res
    assert f"HTTP {status}" in err and f"{target.url}/v1/chat/completions" in err, err
    assert "api_base" in err and "\n" not in err
    assert len(server.seen) == 1 and target.seen == []  # not retried, not followed


# ----------------------------------------------------------------------- what servers say


def test_a_base_model_choice_without_text_is_malformed_not_an_empty_answer() -> None:
    """``/v1/completions`` answered with a chat-shaped choice (no ``text``): an empty answer
    was scored as the model's wrong answer."""
    async def chat_shaped(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(chat_answer())

    with aio_server(chat_shaped) as server:
        (res,), _ = ask(graph_text(server.url + "/v1", extra="\n    options: {chat: false}"))
    err = res.steps["solve"].error or ""
    assert res.status == "error" and res.answer is None and res.text is None, res
    assert err.startswith("m: malformed: model 'm' at "), err
    assert "without text" in err and "gave up after 2 attempts" in err
    assert [s.path for s in server.seen] == ["/v1/completions"] * 2


def test_the_chat_option_must_be_true_or_false() -> None:
    """``chat: "false"`` (quoted) was truthy: the base model got chat requests."""
    ex = Executor(loads_graph(graph_text("http://127.0.0.1:9/v1",
                                         extra="\n    options: {chat: 'false'}")))
    with pytest.raises(TTSGraphError, match=r"model 'm': options\.chat must be true or false"):
        ex.bindings()


def test_a_429_for_a_spent_quota_is_not_retried() -> None:
    """OpenAI answers a spent quota with 429 ``insufficient_quota``: no retry helps, and
    each one waited out a backoff before the same answer."""
    async def spent(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"error": {
            "message": "You exceeded your current quota, please check your plan.",
            "type": "insufficient_quota", "code": "insufficient_quota"}}, status=429)

    with aio_server(spent) as server:
        (res,), _ = ask(graph_text(server.url + "/v1", retries=3))
    err = res.steps["solve"].error or ""
    assert res.status == "error" and res.infra_errors and len(server.seen) == 1, err
    assert "HTTP 429" in err and "insufficient_quota" in err and "quota" in err, err


def test_a_plain_429_is_still_retried_after_its_retry_after() -> None:
    count = {"n": 0}

    async def busy_once(request: web.Request, body: Any) -> web.StreamResponse:
        count["n"] += 1
        if count["n"] == 1:
            return web.json_response({"error": {"message": "slow down", "type": "requests",
                                                "code": "rate_limit_exceeded"}},
                                     status=429, headers={"Retry-After": "0"})
        return web.json_response(chat_answer())

    with aio_server(busy_once) as server:
        (res,), _ = ask(graph_text(server.url + "/v1"))
    assert res.status == "ok" and len(server.seen) == 2, res.error


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
        b"data: [DONE]\n\n"


def _delta(text: str | None, reason: str | None = None) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}


@pytest.mark.parametrize("status", [400, 422])
def test_a_stream_refused_for_stream_options_is_asked_again_without_them(
        status: int) -> None:
    """Servers that refuse fields they do not know (Mistral's 422, older Azure API versions'
    400) refused every streamed call, which asks for usage with ``stream_options``, while the
    same call unstreamed worked. Asked again without it (once: remembered), the answer
    streams and its usage is counted."""
    async def strict(request: web.Request, body: Any) -> web.StreamResponse:
        if "stream_options" in body:
            return web.json_response({"detail": [{"type": "extra_forbidden",
                                                  "loc": ["body", "stream_options"]}]},
                                     status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_sse(_delta("Answer"), _delta(": 4"), _delta(None, "stop")))
        await resp.write_eof()
        return resp

    with aio_server(strict) as server:
        results, pieces = ask(graph_text(server.url + "/v1"), stream=True, questions=2)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert [r.text for r in results] == [ANSWER, ANSWER]
    assert "".join(pieces) == ANSWER * 2
    sent = ["stream_options" in s.body for s in server.seen]
    assert sent == [True, False, False]  # the second question was not refused first
    assert all(r.usage.completion_tokens > 0 for r in results)


def test_a_stream_refused_for_another_reason_is_still_its_error() -> None:
    async def too_long(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"error": {"message": "context length exceeded"}},
                                 status=400)

    with aio_server(too_long) as server:
        (res,), _ = ask(graph_text(server.url + "/v1"), stream=True)
    err = res.steps["solve"].error or ""
    assert res.status == "error" and "HTTP 400: context length exceeded" in err, err
    assert len(server.seen) == 2  # once more, without stream_options, then no more


# ------------------------------------------------------------------------ what keeps working


@pytest.mark.parametrize("way", ["gzip", "deflate", "chunked", "proxy_env", "slash"])
def test_transport_variants_answer(way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compressed and chunked bodies; HTTP_PROXY set to a dead proxy (a loopback api_base is
    not sent through it); an api_base with a trailing slash."""
    async def reply(request: web.Request, body: Any) -> web.StreamResponse:
        resp = web.json_response(chat_answer())
        if way in ("gzip", "deflate"):
            resp.enable_compression(web.ContentCoding(way))
        if way == "chunked":
            resp = web.Response(body=json.dumps(chat_answer()).encode(),
                                content_type="application/json")
            resp.enable_chunked_encoding()
        return resp

    if way == "proxy_env":
        for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(var, "http://127.0.0.1:9")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
    with aio_server(reply) as server:
        (res,), _ = ask(graph_text(server.url + ("/v1/" if way == "slash" else "/v1")))
    assert res.status == "ok" and res.text == ANSWER, res.error
    assert [s.path for s in server.seen] == ["/v1/chat/completions"]
    assert res.usage.prompt_tokens == 10 and res.usage.completion_tokens == 3
