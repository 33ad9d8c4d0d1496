"""``backend: openai`` and ``backend: litellm`` against OpenAI-compatible servers nobody here
wrote: each test serves one odd reply from a raw loopback socket (every byte of the reply
is the test's) and runs a graph through the executor. Whatever the server does, a query
ends with the server's answer or with one infrastructure error line naming the model and
the cause, after the binding's retries: never a crash, never a broken reply passed off as an
answer. The fault server's kinds (429, 5xx, hangs, drops, bad JSON, cuts, empty choices)
are in test_openai_backend.py and test_fault_tolerance.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tts_graph import Graph
from tts_graph.executor import QueryResult

TIMEOUT_S = 3.0
ANSWER = "Answer: 4"
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}

GRAPH = """
version: 1
name: upstream-faults
models:
  m:
    backend: {backend}
    model: {model}
    api_base: "{url}/v1"{timeout}
    max_retries: 1{extra}
defaults: {{max_tokens: 32, temperature: 0.7, seed: 3}}
nodes:
  solve: {{role: solver, model: m, samples: {samples}}}
output: solve
"""
MODEL = {"openai": "m", "litellm": "openai/m"}


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    count: int  # 1 for the first request the server got


#: the reply's bytes, or pieces of them to send one after another (a generator may sleep)
Reply = Callable[[Request], bytes | Iterable[bytes]]


@dataclass
class RawServer:
    """HTTP/1.1 by hand: reads one request per connection, writes the reply's bytes as
    they are, closes."""

    reply: Reply
    requests: list[Request] = field(default_factory=list)

    def serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            while len(body) < int(headers.get("content-length") or 0):
                body += conn.recv(65536)
            req = Request(lines[0].split()[1], headers, json.loads(body or b"{}"),
                          len(self.requests) + 1)
            self.requests.append(req)
            out = self.reply(req)
            try:
                for piece in [out] if isinstance(out, bytes) else out:
                    conn.sendall(piece)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the client gave up


@contextmanager
def raw_server(reply: Reply) -> Iterator[tuple[str, RawServer]]:
    server = RawServer(reply)
    sock = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=server.serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        sock.close()


def http(status: int, body: bytes | dict[str, Any], *, ctype: str = "application/json",
         headers: tuple[str, ...] = ()) -> bytes:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}", *headers,
            f"Content-Length: {len(data)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def answer(*, content: Any = ANSWER, usage: Any = USAGE, **choice: Any) -> dict[str, Any]:
    """A chat completion with one choice; ``choice`` replaces fields of that choice."""
    one = {"index": 0, "message": {"role": "assistant", "content": content},
           "finish_reason": "stop", **choice}
    out: dict[str, Any] = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [one]}
    if usage is not None:
        out["usage"] = usage
    return out


def choices(texts: list[str], indices: list[Any]) -> dict[str, Any]:
    return {**answer(), "choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for t, i in zip(texts, indices, strict=True)]}


def event(content: Any = None, reason: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": reason}], **extra}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def usage_event(usage: Any) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [], "usage": usage}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
GOOD_EVENTS = event("Answer") + event(": 4") + event(None, "stop")


def sse(*events: bytes) -> bytes:
    return http(200, b"".join(events), ctype="text/event-stream")


def ask(backend: str, reply: Reply, *, stream: bool = False, samples: int = 1,
        extra: str = "", timeout: float | None = TIMEOUT_S
        ) -> tuple[QueryResult, list[Request], str]:
    """One question through a graph on ``backend`` served by ``reply``: the result, the
    requests the server got, and what the answer's stream received."""
    with raw_server(reply) as (url, server):
        g = Graph.from_string(GRAPH.format(backend=backend, model=MODEL[backend], url=url,
                                           samples=samples, extra=extra,
                                           timeout="" if timeout is None
                                           else f"\n    timeout_s: {timeout}"))
        pieces: list[str] = []

        async def main() -> QueryResult:
            try:
                return await g.arun("What is 2 + 2?",
                                    on_text=pieces.append if stream else None)
            finally:
                await g.aclose()

        return asyncio.run(main()), server.requests, "".join(pieces)


def assert_infra_error(res: QueryResult, requests: list[Request], kind: str, cause: str,
                       backend: str = "openai") -> str:
    """The query failed with one line naming the model and the cause, after one retry."""
    err = res.steps["solve"].error or ""
    assert res.status == "error" and res.answer is None and res.text is None, res
    prefix = (f"m: {kind}: model 'm' at http://127.0.0.1:" if backend == "openai"
              else f"m: {kind}: model 'openai/m': ")
    assert err.startswith(prefix), err
    assert cause in err and "gave up after 2 attempts" in err and "\n" not in err, err
    assert len(requests) == 2 and len(res.infra_errors) == 1
    return err


def assert_answer(res: QueryResult, text: str = ANSWER) -> None:
    assert res.status == "ok", res.error
    assert res.text == text


# ------------------------------------------------------------------ openai: whole replies


@pytest.mark.parametrize("reply, cause", [
    # a null message is no answer: it was passed off as an empty one (a wrong answer)
    (answer(message=None), "without a message"),
    (answer(content=4), "content is a int, not text"),
])
def test_openai_a_choice_without_text_is_malformed_not_an_empty_answer(
        reply: dict[str, Any], cause: str) -> None:
    res, reqs, _ = ask("openai", lambda r: http(200, reply))
    assert_infra_error(res, reqs, "malformed", cause)


def test_openai_content_as_a_list_of_text_parts_is_the_text() -> None:
    parts = [{"type": "text", "text": "Answer:"}, {"type": "image_url", "image_url": {}},
             {"type": "text", "text": " 4"}]
    res, _, _ = ask("openai", lambda r: http(200, answer(content=parts)))
    assert_answer(res)  # was the list's repr


def test_openai_a_200_with_an_error_object_is_a_server_error_with_its_message() -> None:
    body = {"error": {"message": "model overloaded", "type": "server_error"}}
    res, reqs, _ = ask("openai", lambda r: http(200, body))
    assert_infra_error(res, reqs, "server", "error in a 200 response: model overloaded")


INF = "__INF__"


@pytest.mark.parametrize("usage", [
    None, {"prompt_tokens": INF, "completion_tokens": 3}, {"prompt_tokens": -10,
    "completion_tokens": -3}, {"prompt_tokens": 10**30, "completion_tokens": 10**30},
    {"prompt_tokens": "abc", "completion_tokens": "3"}, [1, 2], "lots",
    {"prompt_tokens": 0, "completion_tokens": 0}])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_usage_that_is_no_token_count_is_estimated(usage: Any, stream: bool) -> None:
    """Missing, negative, huge, infinite or non-numeric counts: the answer stands (it was
    a crash, a retried 'malformed' answer, or a negative/astronomic bill) and the counts are
    estimated."""
    def reply(req: Request) -> bytes:
        if stream:
            data = GOOD_EVENTS + (b"" if usage is None else usage_event(usage)) + DONE
            return sse(data.replace(f'"{INF}"'.encode(), b"1e999"))
        return http(200, json.dumps(answer(usage=usage)).replace(f'"{INF}"', "1e999").encode())

    res, reqs, _ = ask("openai", reply, stream=stream)
    assert_answer(res)
    assert len(reqs) == 1
    u = res.usage
    assert 0 < u.prompt_tokens < 1000 and 0 < u.completion_tokens < 1000, u
    if isinstance(usage, dict) and usage.get("completion_tokens") in (3, "3"):
        assert u.completion_tokens == 3  # the count the server did give is kept


def test_openai_more_choices_than_asked_bill_the_one_kept() -> None:
    res, _, _ = ask("openai", lambda r: http(200, choices([ANSWER, "Answer: 5"], [0, 1])))
    assert_answer(res)
    assert (res.usage.prompt_tokens, res.usage.completion_tokens) == (10, 3)  # was split


@pytest.mark.parametrize("indices", [[INF] * 3, ["a", "b", "c"], [None] * 3, [0, 0, 0],
                                     [2, 0, 1]])
def test_openai_odd_choice_indices_keep_every_sample(indices: list[Any]) -> None:
    texts = [f"Answer: {i}" for i in range(3)]
    body = json.dumps(choices(texts, indices)).replace(f'"{INF}"', "1e999").encode()
    res, reqs, _ = ask("openai", lambda r: http(200, body), samples=3)
    assert res.status == "ok", res.error  # 1e999 crashed the query; "a" failed it
    got = [c.text for c in res.steps["solve"].candidates]
    expected = [texts[indices.index(i)] for i in range(3)] if indices == [2, 0, 1] else texts
    assert got == expected and len(reqs) == 1


# ------------------------------------------------------------------------ openai: streams


@pytest.mark.parametrize("failure", [
    b'event: error\ndata: {"error": {"message": "upstream died"}}\n\n',
    b'data: {"error": {"message": "upstream died", "code": 500}}\n\n',
])
def test_openai_an_error_inside_a_stream_is_a_server_error_not_half_an_answer(
        failure: bytes) -> None:
    res, reqs, _ = ask("openai", lambda r: sse(event("Answer"), failure, DONE), stream=True)
    # the text before the error ("Answer") was returned as the answer
    assert_infra_error(res, reqs, "server", "upstream died")


@pytest.mark.parametrize("reason", ["error", "abort"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_a_finish_reason_that_says_the_server_failed_is_a_server_error(
        reason: str, stream: bool) -> None:
    """OpenRouter ends a failed answer with finish_reason "error", vLLM an aborted one with
    "abort": the text so far passed as the answer."""
    def reply(req: Request) -> bytes:
        if stream:
            return sse(event("Answer"), event(None, reason), DONE)
        return http(200, answer(content="Answer", finish_reason=reason))

    res, reqs, _ = ask("openai", reply, stream=stream)
    assert_infra_error(res, reqs, "server", f"finish_reason '{reason}'")


def test_openai_a_stream_with_neither_text_nor_finish_reason_is_malformed() -> None:
    role = (b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}, '
            b'"finish_reason": null}]}\n\n')
    res, reqs, _ = ask("openai", lambda r: sse(role, DONE), stream=True)
    assert_infra_error(res, reqs, "malformed", "without text or a finish_reason")


def test_openai_a_stream_keeps_only_the_choice_asked_for() -> None:
    both = (b'data: {"choices": [{"index": 0, "delta": {"content": "Answer: 4"}}, '
            b'{"index": 1, "delta": {"content": "Answer: 5"}}]}\n\n')
    res, _, streamed = ask("openai", lambda r: sse(both, event(None, "stop"), DONE),
                           stream=True)
    assert_answer(res)  # was "Answer: 4Answer: 5"
    assert streamed == ANSWER


def test_openai_a_stream_answered_as_one_json_body_is_the_answer() -> None:
    """A server that ignores ``stream: true`` and answers with a whole completion."""
    res, reqs, streamed = ask("openai", lambda r: http(200, answer()), stream=True)
    assert_answer(res)  # was "stream ended before its last event", twice
    assert streamed == ANSWER and len(reqs) == 1


def test_openai_stream_deltas_as_text_parts() -> None:
    parts = [{"type": "text", "text": "Answer: 4"}]
    res, _, _ = ask("openai", lambda r: sse(event(parts), event(None, "stop"), DONE),
                    stream=True)
    assert_answer(res)


def test_openai_what_already_worked_keeps_working() -> None:
    """CRLF line endings, ``data:`` without a space, comments and keep-alives, an event
    name, no [DONE] after the finish_reason: the answer, once."""
    crlf = (GOOD_EVENTS + usage_event(USAGE) + DONE).replace(b"\n", b"\r\n")
    odd = (b": keep-alive\n\nevent: message\n" + GOOD_EVENTS.replace(b"data: ", b"data:")
           + b":ping\n\n")
    for body in (crlf, odd):
        res, reqs, streamed = ask("openai", lambda r, body=body: sse(body), stream=True)
        assert_answer(res)
        assert streamed == ANSWER and len(reqs) == 1


# ---------------------------------------------------------------------------------- litellm


@pytest.fixture(scope="module", autouse=True)
def _litellm_warm() -> None:
    """One call first, with time to spare: litellm's first call imports hundreds of modules
    on the event loop, which on a loaded machine outlasts a test's timeout_s and costs the
    attempt these tests count (as in test_fault_tolerance.py)."""
    if __import__("importlib.util").util.find_spec("litellm") is None:
        return
    res, _, _ = ask("litellm", lambda r: http(200, answer()), timeout=60)
    assert res.status == "ok", res.error

litellm_needed = pytest.mark.skipif(not __import__("importlib.util").util.find_spec("litellm"),
                                    reason="litellm is not installed")


@litellm_needed
@pytest.mark.parametrize("header", ["Retry-After: soon", "retry-after-ms: soon"])
def test_litellm_a_retry_after_that_is_no_time_is_retried_not_a_crash(header: str) -> None:
    def reply(req: Request) -> bytes:
        if req.count == 1:
            return http(503, {"error": {"message": "busy"}}, headers=(header,))
        return http(200, answer())

    res, reqs, _ = ask("litellm", reply)
    assert_answer(res)  # ValueError escaped classify(): the query crashed
    assert len(reqs) == 2


@litellm_needed
@pytest.mark.parametrize("usage", [{"prompt_tokens": -10, "completion_tokens": -3},
                                   {"prompt_tokens": 10**30, "completion_tokens": 10**30},
                                   None])
def test_litellm_usage_that_is_no_token_count_is_estimated(usage: Any) -> None:
    res, _, _ = ask("litellm", lambda r: http(200, answer(usage=usage)))
    assert_answer(res)
    u = res.usage
    assert 0 < u.prompt_tokens < 1000 and 0 < u.completion_tokens < 1000, u


@litellm_needed
@pytest.mark.parametrize("body", [
    sse(event("Answer"), event(": 4")),  # closed cleanly before its finish_reason
    sse(DONE),  # [DONE] before any choice
    http(200, b"<html>oops</html>", ctype="text/html"),
])
def test_litellm_a_stream_without_a_finish_reason_is_malformed_not_an_answer(
        body: bytes) -> None:
    """litellm ends every stream with finish_reason "stop", even one that stopped short:
    half an answer, or an empty one, was returned as the answer."""
    res, reqs, _ = ask("litellm", lambda r: body, stream=True)
    assert_infra_error(res, reqs, "malformed", "stream ended before its finish_reason",
                       backend="litellm")


@litellm_needed
@pytest.mark.parametrize("reason", ["error", "abort"])
def test_litellm_a_stream_the_server_ended_with_a_failure_is_a_server_error(
        reason: str) -> None:
    """litellm raises on "error" itself; "abort" (vLLM's) it passed on as an answer's end.
    (Without a stream it maps both to "stop": that case is out of reach.)"""
    res, reqs, _ = ask("litellm", lambda r: sse(event("Answer"), event(None, reason), DONE),
                       stream=True)
    assert_infra_error(res, reqs, "server", "finish_reason", backend="litellm")


@litellm_needed
def test_litellm_a_stream_keeps_only_the_choice_asked_for() -> None:
    both = (b'data: {"choices": [{"index": 0, "delta": {"content": "Answer: 4"}}, '
            b'{"index": 1, "delta": {"content": "Answer: 5"}}]}\n\n')
    res, _, _ = ask("litellm", lambda r: sse(both, event(None, "stop"), DONE), stream=True)
    assert_answer(res)


@litellm_needed
def test_litellm_errors_name_the_model_without_tracebacks() -> None:
    res, reqs, _ = ask("litellm", lambda r: http(200, answer(message=None)))
    err = assert_infra_error(res, reqs, "server", "Invalid response object",
                             backend="litellm")
    assert "Traceback" not in err and ".py" not in err, err


# ------------------------------------------------------------------------------- the key


@pytest.mark.parametrize("backend", ["openai", *(["litellm"] if __import__(
    "importlib.util").util.find_spec("litellm") else [])])
@pytest.mark.parametrize("status", [200, 500, 502])
def test_a_server_that_echoes_the_key_never_gets_it_into_errors(
        backend: str, status: int, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-upstream-" + "q" * 24
    monkeypatch.setenv("UPSTREAM_KEY", key)

    def reply(req: Request) -> bytes:
        auth = req.headers.get("authorization", "")
        assert key in auth  # it was sent
        if status == 502:  # not JSON: the message is the start of the body, cut in the key
            return http(status, b"x" * 180 + auth.encode(), ctype="text/plain")
        # the key where the message is cut: at 200 characters (an error in a 200), at 500
        # (the line); the line starts "model 'm' at http://HOST/v1: HTTP 500: "
        pad = 180 if status == 200 else 500 - len(f"model 'm' at http://{req.headers['host']}"
                                                  f"/v1: HTTP {status}: ") - 21
        return http(status, {"error": {"message": "y" * pad + auth}})

    caplog.set_level(logging.DEBUG)
    res, _, _ = ask(backend, reply, extra="\n    api_key_env: UPSTREAM_KEY")
    assert res.status == "error"
    assert key not in json.dumps(res.to_dict())
    out, err = capfd.readouterr()
    assert key not in out + err + caplog.text  # nor in what litellm prints or logs
    # nor a part of it: a message cut in the middle of the key kept its first characters
    assert key[:12] not in json.dumps(res.to_dict()), res.error


# --------------------------------------------------------------------------- no timeout_s


@pytest.mark.parametrize("backend", ["openai", *(["litellm"] if __import__(
    "importlib.util").util.find_spec("litellm") else [])])
@pytest.mark.parametrize("stream", [False, True])
def test_without_timeout_s_a_slow_server_is_a_timeout_not_a_hang(
        backend: str, stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """No timeout_s on the model entry: the backend's default bounds the call. litellm's
    own default is 6000 s, and its timeout bounds each read: a stream of keep-alives ran
    for as long as the server kept sending them. (The default, 600 s, is 1 s here.)"""
    from tts_graph.backends import litellm_backend, openai_backend

    module = openai_backend if backend == "openai" else litellm_backend
    monkeypatch.setattr(module, "DEFAULT_TIMEOUT_S", 1.0)

    def reply(req: Request) -> Iterator[bytes]:
        if not stream:
            time.sleep(6)
            yield http(200, answer())
            return
        yield b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        for _ in range(30):  # keep-alives, each well within a read timeout, for 6 s
            yield b": keep-alive\n\n"
            time.sleep(0.2)
        yield GOOD_EVENTS + DONE

    res, reqs, _ = ask(backend, reply, stream=stream, timeout=None)
    err = res.steps["solve"].error or ""
    assert res.status == "error" and res.answer is None, res
    assert err.startswith("m: timeout: model "), err
    assert "no answer within 1 s" in err and "gave up after 2 attempts" in err, err
    assert len(reqs) == 2


# ------------------------------------------------------------- openai: how a stream is cut


def test_openai_streams_with_cr_line_ends_and_events_over_several_data_lines() -> None:
    """SSE ends lines with CRLF, LF or a lone CR, and an event's data may span lines
    (joined by LF): both were 'malformed stream event', twice."""
    cr = (GOOD_EVENTS + DONE).replace(b"\n", b"\r")
    spanning = (b'data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "Answer: 4"}}]}'
                b"\n\n" + event(None, "stop") + DONE)
    no_blank_lines = (GOOD_EVENTS + DONE).replace(b"\n\n", b"\n")
    for body in (cr, spanning, no_blank_lines):
        res, reqs, streamed = ask("openai", lambda r, body=body: sse(body), stream=True)
        assert_answer(res)
        assert streamed == ANSWER and len(reqs) == 1


def test_openai_a_crlf_split_between_two_reads_ends_one_line() -> None:
    """The CR at the end of one TCP read and the LF at the start of the next are one line
    end, not two (an empty line would end the event spanning them)."""
    body = (b'data: {"choices": [{"index": 0,\r\ndata:  "delta": {"content": "Answer: 4"}}]}'
            b"\r\n\r\n" + (event(None, "stop") + DONE).replace(b"\n", b"\r\n"))
    head, _, rest = sse(body).partition(b"\r\n\r\n")

    def reply(req: Request) -> Iterator[bytes]:
        yield head + b"\r\n\r\n"
        lines = rest.split(b"\r\n")
        for i, line in enumerate(lines):
            time.sleep(0.02)  # each piece its own read: "...\r" then "\n..."
            yield (b"\n" if i else b"") + line + (b"\r" if i < len(lines) - 1 else b"")

    res, reqs, _ = ask("openai", reply, stream=True)
    assert_answer(res)
    assert len(reqs) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_openai_a_server_that_sends_without_end_is_cut_at_the_size_limit(
        stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body (or stream) without end filled memory until the timeout: it is cut at
    MAX_RESPONSE_BYTES (128 MiB; 1 MiB here)."""
    from tts_graph.backends import openai_backend

    monkeypatch.setattr(openai_backend, "MAX_RESPONSE_BYTES", 1 << 20)

    def reply(req: Request) -> Iterator[bytes]:
        ctype = b"text/event-stream" if stream else b"application/json"
        yield b"HTTP/1.0 200 OK\r\nContent-Type: " + ctype + b"\r\n\r\n"
        if stream:
            yield event("Answer")
        filler = (b": keep-alive\n\n" if stream else b" ") * 4096
        for _ in range((8 << 20) // len(filler)):  # 8 MiB, then it gives up
            yield filler

    res, reqs, _ = ask("openai", reply, stream=stream)
    assert_infra_error(res, reqs, "malformed", f"{'stream' if stream else 'response'} over 1 MiB")


def test_openai_a_small_gzip_body_that_inflates_past_the_limit_is_cut(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph.backends import openai_backend

    monkeypatch.setattr(openai_backend, "MAX_RESPONSE_BYTES", 1 << 20)
    bomb = gzip.compress(b" " * (8 << 20))  # 8 KiB that inflate to 8 MiB
    res, reqs, _ = ask("openai", lambda r: http(200, bomb, headers=("Content-Encoding: gzip",)))
    assert_infra_error(res, reqs, "malformed", "response over 1 MiB")
