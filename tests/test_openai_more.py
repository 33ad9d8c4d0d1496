"""``backend: openai`` (and litellm's key) against what test_openai_audit.py left: OpenAI's
reasoning models, which refuse ``max_tokens`` and any temperature but their own; a server
that streams a request that did not ask to; a key echoed back escaped in a body that is no
JSON; and a litellm key read with a line break at its end. Each against a real aiohttp
server on loopback (test_openai_audit.py's), every reply the test's."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_openai_audit import ANSWER, USAGE, _delta, _sse, aio_server, ask, chat_answer, cli
from test_openai_audit import graph_text as audit_graph

from tts_graph.executor import QueryResult

#: what OpenAI answers a reasoning model (o1, o3, o4-mini, gpt-5...) asked with max_tokens
MAX_TOKENS_REFUSED = {"error": {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
               "Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}
#: and asked with a temperature other than 1
TEMPERATURE_REFUSED = {"error": {
    "message": "Unsupported value: 'temperature' does not support 0.7 with this model. Only "
               "the default (1) value is supported.",
    "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}


def graph_text(api_base: str, *, temperature: float = 0.7, **kw: Any) -> str:
    return audit_graph(api_base, **kw).replace("temperature: 0.7",
                                               f"temperature: {temperature}")


def error_of(res: QueryResult) -> str:
    return res.steps["solve"].error or ""


async def answer_as_asked(request: web.Request, body: Any) -> web.StreamResponse:
    """A chat completion with as many choices as asked, streamed when asked."""
    n = body.get("n", 1)
    if not body.get("stream"):
        out = chat_answer()
        out["choices"] = [dict(out["choices"][0], index=i) for i in range(n)]
        return web.json_response(out)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(_sse(_delta("Answer"), _delta(": 4"), _delta(None, "stop"),
                          {"choices": [], "usage": USAGE}))
    await resp.write_eof()
    return resp


# ----------------------------------------------------------------- litellm: the key's ends


def litellm_graph(api_base: str) -> str:
    return (f"version: 1\nname: more\nmodels:\n  m:\n    backend: litellm\n    model: openai/m\n"
            f"    api_base: {json.dumps(api_base)}\n    timeout_s: 60\n    max_retries: 1\n"
            "    api_key_env: MORE_KEY\n"
            "defaults: {max_tokens: 32, temperature: 0.7, seed: 3}\n"
            "nodes:\n  solve: {role: solver, model: m}\noutput: solve\n")


def test_litellm_a_key_with_a_trailing_line_break_is_sent_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An env file's or a secret mount's final newline: every call failed as a retried
    "Connection error" (httpx refuses the header), which sent the user to the network."""
    key = "sk-more-" + "k" * 24
    monkeypatch.setenv("MORE_KEY", key + "\r\n")

    async def answers(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(chat_answer())

    with aio_server(answers) as server:
        (res,), _ = ask(litellm_graph(server.url + "/v1"))
    assert res.status == "ok" and res.text == ANSWER, res.error
    assert [s.headers["Authorization"] for s in server.seen] == [f"Bearer {key}"]


def test_litellm_a_key_with_a_line_break_inside_is_one_config_line(tmp_path: Path) -> None:
    key = "sk-more-first-" + "a" * 16 + "\nsk-more-second-" + "b" * 16

    async def answers(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(chat_answer())

    with aio_server(answers) as server:
        (tmp_path / "g.yaml").write_text(litellm_graph(server.url + "/v1"))
        p = cli(["run", "g.yaml", "-q", "What is 2 + 2?"], {"MORE_KEY": key}, tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "MORE_KEY" in lines[0] and "control character" in lines[0], \
        p.stderr
    assert "Traceback" not in p.stderr and "sk-more" not in p.stdout + p.stderr
    assert server.seen == []


# ---------------------------------------------------------- reasoning models: max_tokens


def refuses_max_tokens(refusal: dict[str, Any]):
    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        if "max_tokens" in body:
            return web.json_response(refusal, status=400)
        return await answer_as_asked(request, body)
    return handler


@pytest.mark.parametrize("way", ["plain", "stream", "samples"])
@pytest.mark.parametrize("refusal", [
    MAX_TOKENS_REFUSED,
    # an Azure deployment of one, by message alone (no param), under its own name
    {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                          "model. Use 'max_completion_tokens' instead.", "code": None}},
], ids=["openai", "message-only"])
def test_a_model_that_refuses_max_tokens_gets_max_completion_tokens_from_then_on(
        way: str, refusal: dict[str, Any]) -> None:
    """Every call to o1/o3/o4-mini/gpt-5 failed with HTTP 400. Asked again once with
    ``max_completion_tokens`` (the same value), and that field from then on: the second
    question costs no refused round trip."""
    samples = 3 if way == "samples" else 1
    with aio_server(refuses_max_tokens(refusal)) as server:
        results, pieces = ask(graph_text(server.url + "/v1", samples=samples),
                              stream=way == "stream", questions=2)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert all(r.text == ANSWER for r in results)
    if way == "stream":
        assert "".join(pieces) == ANSWER * 2
        assert all(s.body["stream"] for s in server.seen)
    fields = [[k for k in ("max_tokens", "max_completion_tokens") if k in s.body]
              for s in server.seen]
    assert fields == [["max_tokens"], ["max_completion_tokens"], ["max_completion_tokens"]]
    assert all(s.body.get("max_tokens", s.body.get("max_completion_tokens")) == 32
               for s in server.seen)
    assert all(s.body.get("n", 1) == samples for s in server.seen)  # n stays native
    assert all(s.body["temperature"] == 0.7 for s in server.seen)


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_field_chosen_up_front_sends_no_refused_request(stream: bool) -> None:
    with aio_server(refuses_max_tokens(MAX_TOKENS_REFUSED)) as server:
        results, _ = ask(graph_text(server.url + "/v1", extra="\n    options: "
                                    "{max_tokens_field: max_completion_tokens}"),
                         stream=stream, questions=2)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    assert len(server.seen) == 2
    for s in server.seen:
        assert s.body["max_completion_tokens"] == 32
        assert "max_tokens" not in s.body and "max_tokens_field" not in s.body


def test_a_max_tokens_value_refused_is_its_error_not_asked_again() -> None:
    """OpenAI's "max_tokens is too large" names the same param: the value is wrong, and the
    other field would be refused the same (and be kept for the model)."""
    too_large = {"error": {"message": "max_tokens is too large: 32. This model supports at "
                           "most 16 completion tokens, whereas you provided 32.",
                           "type": "invalid_request_error", "param": "max_tokens",
                           "code": "invalid_value"}}

    async def handler(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(too_large, status=400)

    with aio_server(handler) as server:
        (res,), _ = ask(graph_text(server.url + "/v1"))
    err = error_of(res)
    assert res.status == "error" and "HTTP 400: max_tokens is too large" in err, err
    assert len(server.seen) == 1 and "max_tokens" in server.seen[0].body


@pytest.mark.parametrize("stream", [False, True])
def test_a_temperature_refused_says_what_to_set_and_is_not_changed(stream: bool) -> None:
    """The temperature is the experiment's: never dropped or changed behind the user's
    back. The one line says what to set instead; set, the model answers."""
    async def reasoning(request: web.Request, body: Any) -> web.StreamResponse:
        if "max_tokens" in body:
            return web.json_response(MAX_TOKENS_REFUSED, status=400)
        if body["temperature"] != 1:
            return web.json_response(TEMPERATURE_REFUSED, status=400)
        return await answer_as_asked(request, body)

    with aio_server(reasoning) as server:
        (res,), _ = ask(graph_text(server.url + "/v1"), stream=stream)
        refused = list(server.seen)
        (fixed,), _ = ask(graph_text(server.url + "/v1", temperature=1), stream=stream)
    err = error_of(res)
    assert res.status == "error" and "\n" not in err, err
    assert "HTTP 400: Unsupported value: 'temperature'" in err, err
    assert "set temperature: 1 on the node" in err, err
    assert [s.body["temperature"] for s in refused] == [0.7] * len(refused)
    assert "max_completion_tokens" in refused[-1].body
    assert fixed.status == "ok" and fixed.text == ANSWER, fixed.error


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_max_tokens_field_that_is_neither_is_a_file_line_error(
        command: str, tmp_path: Path) -> None:
    text = graph_text("http://127.0.0.1:9/v1",
                      extra="\n    options: {max_tokens_field: max_output_tokens}")
    (tmp_path / "g.yaml").write_text(text)
    (lineno,) = [i + 1 for i, line in enumerate(text.splitlines())
                 if line.strip().startswith("options")]
    args = ["run", "g.yaml", "-q", "What is 2 + 2?"] if command == "run" else [command, "g.yaml"]
    p = cli(args, {}, tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        f"g.yaml:{lineno}: models.m.options.max_tokens_field: must be max_tokens or "
        "max_completion_tokens, not 'max_output_tokens'"]


# --------------------------------------------------------- a stream nobody asked for


@pytest.mark.parametrize("way", ["plain", "samples", "base", "no content type"])
def test_a_stream_sent_to_a_request_that_did_not_ask_is_read_as_one(way: str) -> None:
    """Some proxies stream whatever is asked: the answer was "not JSON", retried, then
    failed. It is read as a stream is, its usage the stream's."""
    samples = 3 if way == "samples" else 1

    async def streams(request: web.Request, body: Any) -> web.StreamResponse:
        assert not body.get("stream")
        if way == "base":
            events = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]}
                      for t in ("Answer", ": 4")]
            events.append({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
        else:  # the choices' pieces interleaved, as a server streams n > 1
            events = [{"choices": [{"index": i, "delta": {"content": t}, "finish_reason": None}
                                   for i in range(samples)]} for t in ("Answer", ": 4")]
            events.append({"choices": [{"index": i, "delta": {}, "finish_reason": "stop"}
                                       for i in range(samples)]})
        events.append({"choices": [], "usage": USAGE})
        kind = "text/plain" if way == "no content type" else "text/event-stream"
        return web.Response(body=_sse(*events), headers={"Content-Type": kind})

    extra = "\n    options: {chat: false}" if way == "base" else ""
    with aio_server(streams) as server:
        (res,), _ = ask(graph_text(server.url + "/v1", samples=samples, extra=extra))
    assert res.status == "ok", res.error
    assert len(server.seen) == 1  # one request for all the samples, not retried
    answers = [c.text for c in res.steps["solve"].candidates]
    assert answers == [ANSWER] * samples
    assert res.usage.prompt_tokens == 10 and res.usage.completion_tokens == 3


def test_a_stream_sent_unasked_that_fails_is_its_error() -> None:
    async def fails(request: web.Request, body: Any) -> web.StreamResponse:
        data = _sse(_delta("Answer"), {"error": {"message": "upstream died"}})
        return web.Response(body=data, headers={"Content-Type": "text/event-stream"})

    with aio_server(fails) as server:
        (res,), _ = ask(graph_text(server.url + "/v1"))
    err = error_of(res)
    assert res.status == "error" and res.answer is None and "upstream died" in err, err
    assert len(server.seen) == 2  # a server failure: retried


# ------------------------------------------------------------- the key, in all its forms


KEY = "sk-more/echo+" + "Q/=" * 10


@pytest.mark.parametrize("form", ["json-escaped", "url-encoded", "url-plus"])
@pytest.mark.parametrize("status", [500, 400, 200, 302])
def test_the_key_echoed_escaped_in_a_body_that_is_no_json_is_redacted(
        form: str, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body cut short (so no JSON) that carried the key JSON-escaped ("\\/"), or a URL
    with the key in its query, reached the error line, and through it results, traces and
    the cache."""
    monkeypatch.setenv("MORE_KEY", KEY)
    shown = {"json-escaped": KEY.replace("/", "\\/"),
             "url-encoded": urllib.parse.quote(KEY, safe=""),
             "url-plus": urllib.parse.quote_plus(KEY)}[form]

    async def echo(request: web.Request, body: Any) -> web.StreamResponse:
        text = ('{"error": {"message": "bad key \\"' + shown + '\\" for https://gw/?key='
                + shown + '", "type": "inv')  # cut short: no JSON
        if status == 302:
            return web.Response(status=302, headers={"Location": f"https://gw/?key={shown}"})
        return web.Response(status=status, text=text, content_type="application/json")

    with aio_server(echo) as server:
        (res,), _ = ask(graph_text(server.url + "/v1", retries=0,
                                   extra="\n    api_key_env: MORE_KEY"))
    err = error_of(res)
    assert res.status == "error" and server.seen, err
    assert "***" in err, err
    assert "sk-more" not in err and "echo" not in err, err
