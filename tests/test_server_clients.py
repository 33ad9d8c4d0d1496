"""``tts-graph serve`` against clients nobody here wrote: raw HTTP on sockets (faulty bodies,
clients that stall or leave mid-request, odd methods and headers) and the ``openai`` client
with every parameter a real application sends.

Each test goes through the real server on loopback (uvicorn in a thread, as in
test_server.py) and checks three things: the answer has OpenAI's status and error shape, the
log holds no traceback, and the server still answers the next client.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from test_server import SlowBackend, aclient, client, graph, scripted_graphs, serve_app, user

from tts_graph.server import create_app

OK_BODY = json.dumps({"model": "echo", "messages": user("q")}).encode()


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a loopback server's ``http://host:port`` URL."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    app = create_app(scripted_graphs(), max_concurrency=8)
    with serve_app(app) as url:
        yield address(url)


def exchange(addr: tuple[str, int], data: bytes, *, shut: bool = False,
             timeout: float = 20.0) -> bytes:
    """Send ``data`` on a fresh connection (then close the sending half when ``shut``) and
    read until the server closes it."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def post(body: bytes, *, path: str = "/v1/chat/completions",
         headers: dict[str, str] | None = None) -> bytes:
    head = {"Host": "x", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the first response in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, body


def api_error(raw: bytes, status: int) -> dict[str, Any]:
    """The ``error`` object of an answer that must be ``status`` in OpenAI's format."""
    code, headers, body = response(raw)
    assert code == status, raw[:500]
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def still_serves(addr: tuple[str, int]) -> None:
    status, _, body = response(exchange(addr, post(OK_BODY)))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "ECHO:q"


class Records(logging.Handler):
    """Every record of the server's loggers (uvicorn's own handlers write to the stream they
    found when the server started, which neither capfd nor caplog sees)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def failures(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records
                if r.exc_info or r.levelno >= logging.ERROR]


@pytest.fixture
def log() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "tts_graph")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


# ------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(("body", "param", "needle"), [
    # Python's json takes these; JSON (RFC 8259) does not
    (b'{"model": "echo", "messages": [{"role": "user", "content": "q"}], "temperature": NaN}',
     None, "NaN is not a JSON value"),
    (b'{"model": "echo", "messages": [{"role": "user", "content": "q"}], "seed": -Infinity}',
     None, "-Infinity is not a JSON value"),
    # past Python's 4300-digit limit: a ValueError that was a 500 with a traceback
    (b'{"model": "echo", "messages": [{"role": "user", "content": "q"}], "max_tokens": '
     + b"9" * 5000 + b"}", None, "more than 100 digits"),
    # past the C parser's recursion limit (a RecursionError inside json)
    (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
    # lone surrogates: valid JSON escapes, no Unicode; the answer (or the error naming them)
    # could not be encoded: a 500, or a stream cut after its first chunk
    (b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800 q"}]}',
     "messages", "lone UTF-16 surrogate"),
    (b'{"model": "echo", "stream": true, "messages": [{"role": "user", "content": "\\udfff"}]}',
     "messages", "lone UTF-16 surrogate"),
    (b'{"model": "\\ud83d", "messages": [{"role": "user", "content": "q"}]}',
     "model", "lone UTF-16 surrogate"),
    (b'{"model": "echo", "\\ud83d": 1, "messages": [{"role": "user", "content": "q"}]}',
     None, "lone UTF-16 surrogate"),
])
def test_json_that_python_reads_but_json_is_not_is_400(
        server: tuple[str, int], log: Records, body: bytes, param: str | None, needle: str
        ) -> None:
    err = api_error(exchange(server, post(body)), 400)
    assert needle in err["message"] and err["param"] == param
    assert err["type"] == "invalid_request_error"
    still_serves(server)
    assert log.failures() == []


def test_a_surrogate_pair_is_one_character_and_fine(server: tuple[str, int]) -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    status, _, out = response(exchange(server, post(body)))
    assert status == 200 and json.loads(out)["choices"][0]["message"]["content"] == "ECHO:😀"


# ------------------------------------------------------------- clients that leave


@pytest.mark.parametrize("sent", [0, 10, len(OK_BODY) - 1])
def test_client_gone_mid_body_leaves_no_traceback(
        server: tuple[str, int], log: Records, sent: int) -> None:
    # the declared length is never reached: the client closes its side instead
    assert exchange(server, post(OK_BODY)[:len(post(OK_BODY)) - len(OK_BODY) + sent],
                    shut=True) == b""
    still_serves(server)
    assert log.failures() == []



# --------------------------------------------------------- clients that stall


@pytest.fixture(scope="module")
def impatient() -> Iterator[tuple[str, int]]:
    """A server that waits 0.5 s for a body once its headers are in."""
    app = create_app(scripted_graphs(), body_timeout_s=0.5)
    with serve_app(app) as url:
        yield address(url)


@pytest.fixture(scope="module")
def hasty() -> Iterator[tuple[str, int]]:
    """A server that waits 0.5 s for a request head once a connection opens or is answered."""
    app = create_app(scripted_graphs())
    with serve_app(app, head_timeout_s=0.5) as url:
        yield address(url)


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/comp",
                                  b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"])
def test_a_connection_without_a_whole_request_head_is_closed(
        hasty: tuple[str, int], log: Records, sent: bytes) -> None:
    # nothing yet, half a request line, headers without their blank line: uvicorn alone
    # kept each such connection open for ever
    assert exchange(hasty, sent) == b""
    still_serves(hasty)
    assert log.failures() == []


def test_the_next_request_head_on_a_kept_alive_connection_is_timed_too(
        hasty: tuple[str, int]) -> None:
    with socket.create_connection(hasty, timeout=20) as s:
        request = post(OK_BODY, headers={"Connection": ""})  # keep-alive
        s.sendall(request)
        raw = b""
        while b"ECHO:q" not in raw:
            raw += s.recv(65536)
        assert response(raw)[0] == 200
        s.sendall(b"GET /v1/mo")  # stops uvicorn's own keep-alive timer, not this one
        while chunk := s.recv(65536):
            raw += chunk
    assert raw.count(b"HTTP/1.1 ") == 1


def test_a_run_longer_than_the_head_deadline_still_answers() -> None:
    app = create_app({"slow": graph("slow", SlowBackend(1.0))})
    with serve_app(app, head_timeout_s=0.2) as url:
        for stream in (False, True):
            body = json.dumps({"model": "slow", "stream": stream,
                               "messages": user("q")}).encode()
            raw = exchange(address(url), post(body))
            assert response(raw)[0] == 200 and b"Answer: 4" in raw, raw[:300]


@pytest.mark.parametrize("expect", [False, True])
def test_client_stalled_mid_body_gets_408_and_the_connection_closes(
        impatient: tuple[str, int], log: Records, expect: bool) -> None:
    headers = {"Expect": "100-continue"} if expect else {}
    request = post(OK_BODY, headers=headers)
    # the socket stays open: the server, not the client, has to end this
    sent = request[:len(request) - len(OK_BODY)] if expect else request[:-10]
    raw = exchange(impatient, sent)
    if expect:
        assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), raw[:200]
        raw = raw.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    err = api_error(raw, 408)
    assert err["code"] == "request_timeout" and "did not arrive within 0.5 s" in err["message"]
    assert response(raw)[1]["connection"] == "close"
    still_serves(impatient)
    assert log.failures() == []



# ---------------------------------------------------- parameters as OpenAI checks them


def test_every_parameter_a_real_client_sends_is_accepted(server: tuple[str, int]) -> None:
    """The ``openai`` client with every ignored parameter at its bounds, plain and streamed,
    sync and async: the checks below refuse nothing OpenAI takes."""
    url = "http://{}:{}".format(*server)
    kwargs: dict[str, Any] = dict(
        model="echo", messages=user("q"), temperature=2, top_p=0, presence_penalty=-2,
        frequency_penalty=2.0, max_tokens=1, max_completion_tokens=10 ** 30,
        seed=-(2 ** 63), stop="x", user="u", metadata={"k": "v"}, store=False,
        logit_bias={"50256": -100}, service_tier="auto", reasoning_effort="low",
        parallel_tool_calls=True, n=1, logprobs=False, extra_body={"top_logprobs": None})
    r = client(url).chat.completions.create(**kwargs)
    assert r.choices[0].message.content == "ECHO:q"
    chunks = list(client(url).chat.completions.create(
        **{**kwargs, "stop": ["a", "b"], "seed": 2 ** 63 - 1}, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ECHO:q"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    async def both() -> list[str | None]:
        c = aclient(url)
        rs = await asyncio.gather(c.chat.completions.create(**kwargs),
                                  c.chat.completions.create(**{**kwargs, "stop": None}))
        return [x.choices[0].message.content for x in rs]

    assert asyncio.run(both()) == ["ECHO:q", "ECHO:q"]


@pytest.mark.parametrize(("extra", "param", "code", "needle"), [
    ({"temperature": 5}, "temperature", "decimal_above_max_value",
     "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 5"),
    ({"temperature": -1}, "temperature", "decimal_below_min_value", "Expected a value >= 0"),
    ('"temperature": 1e400', "temperature", "decimal_above_max_value", "got inf"),
    ({"temperature": "hot"}, "temperature", "invalid_type",
     "Invalid type for 'temperature': expected a decimal, but got a string instead."),
    ({"top_p": 10}, "top_p", "decimal_above_max_value", "<= 1"),
    ({"top_p": True}, "top_p", "invalid_type", "got a boolean"),
    ({"presence_penalty": -3}, "presence_penalty", "decimal_below_min_value", ">= -2"),
    ({"max_tokens": -1}, "max_tokens", "integer_below_min_value",
     "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -1"),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value", "got 0"),
    ({"max_tokens": 10.5}, "max_tokens", "invalid_type", "expected an integer"),
    ({"max_tokens": 256.0}, "max_tokens", "invalid_type", "but got a decimal instead."),
    ({"user": 7}, "user", "invalid_type", "but got an integer instead."),
    ({"max_completion_tokens": "100"}, "max_completion_tokens", "invalid_type", "a string"),
    ({"seed": 2 ** 63}, "seed", "integer_above_max_value", "<= 9223372036854775807"),
    ({"stop": 3}, "stop", "invalid_type", "a string or an array of strings"),
    ({"stop": ["a", None]}, "stop[1]", "invalid_type", "got null"),
    ({"user": 42}, "user", "invalid_type", "expected a string"),
    ({"metadata": {"k": 1}}, "metadata", "invalid_value", "'metadata.k'"),
    ({"metadata": "x"}, "metadata", "invalid_type", "expected an object"),
    ({"logit_bias": {"1": 101}}, "logit_bias", "invalid_value", "-100 to 100"),
    ({"store": "yes"}, "store", "invalid_type", "a boolean"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage",
     "invalid_type", "a boolean"),
    ({"stream_options": []}, "stream_options", "invalid_type", "an object"),
])
def test_out_of_range_and_mistyped_parameters_are_openais_400(
        server: tuple[str, int], extra: dict[str, Any] | str, param: str, code: str,
        needle: str) -> None:
    fields = extra if isinstance(extra, str) else json.dumps(extra)[1:-1]
    body = ('{"model": "echo", "messages": [{"role": "user", "content": "q"}], ' + fields
            + "}").encode()
    err = api_error(exchange(server, post(body)), 400)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
    assert needle in err["message"], err["message"]


def test_the_openai_client_raises_bad_request_with_the_param(server: tuple[str, int]) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client("http://{}:{}".format(*server)).chat.completions.create(
            model="echo", messages=user("q"), temperature=3.5)  # type: ignore[arg-type]
    assert exc.value.code == "decimal_above_max_value" and exc.value.param == "temperature"


@pytest.mark.parametrize(("n", "code"), [
    (0, "integer_below_min_value"), (-1, "integer_below_min_value"),
    (129, "integer_above_max_value"), (10 ** 30, "integer_above_max_value"),
    (1.5, "invalid_type"), ("1", "invalid_type"), (True, "invalid_type"),
    (2, "unsupported_value"), (128, "unsupported_value")])
def test_n_other_than_1_is_400_streamed_or_not(server: tuple[str, int], n: Any,
                                               code: str) -> None:
    for stream in (False, True):
        body = json.dumps({"model": "echo", "messages": user("q"), "n": n,
                           "stream": stream}).encode()
        err = api_error(exchange(server, post(body)), 400)
        assert (err["param"], err["code"]) == ("n", code), err
        if code == "unsupported_value":  # what OpenAI takes and a graph cannot give
            assert "'n' must be 1" in err["message"]


# ----------------------------------------------------------- methods and headers


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_body_that_is_not_declared_json_is_415(server: tuple[str, int],
                                                 content_type: str) -> None:
    # what fetch() sends for a string body, curl -d, and an HTML form: the three types a
    # browser sends cross-site without a CORS preflight
    err = api_error(exchange(server, post(OK_BODY, headers={"Content-Type": content_type})),
                    415)
    assert err["code"] == "unsupported_content_type" and content_type in err["message"]


@pytest.mark.parametrize("encoding", ["gzip", "br, gzip"])
def test_a_compressed_body_is_415_naming_the_encoding(server: tuple[str, int],
                                                      encoding: str) -> None:
    body = gzip.compress(OK_BODY)
    err = api_error(exchange(server, post(body, headers={"Content-Encoding": encoding})), 415)
    assert err["code"] == "unsupported_content_encoding" and encoding in err["message"]


@pytest.mark.parametrize("content_type", [None, "application/json",
                                          "Application/JSON; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_or_no_content_type_is_read(server: tuple[str, int],
                                         content_type: str | None) -> None:
    raw = exchange(server, post(OK_BODY, headers={"Content-Type": content_type or ""}))
    assert response(raw)[0] == 200, raw[:300]


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/v1/models/echo"])
def test_head_works_wherever_get_does(server: tuple[str, int], path: str) -> None:
    raw = exchange(server, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   .encode())
    status, headers, body = response(raw)
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/chat/completions", "POST"), ("OPTIONS", "/v1/chat/completions", "POST"),
    ("DELETE", "/v1/models", "GET, HEAD"), ("POST", "/v1/models/echo", "GET, HEAD")])
def test_405_says_which_methods_the_route_has(server: tuple[str, int], method: str,
                                              path: str, allow: str) -> None:
    raw = exchange(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                   "Connection: close\r\n\r\n".encode())
    err = api_error(raw, 405)
    assert err["code"] == "method_not_allowed"
    assert sorted(response(raw)[1]["allow"].split(", ")) == sorted(allow.split(", "))


@pytest.mark.parametrize(("message", "param", "needle"), [
    # a list or object as the role was a TypeError (unhashable), a 500 with a traceback
    ({"role": ["user"], "content": "q"}, "messages[0].role", "is not supported"),
    ({"role": {"user": 1}, "content": "q"}, "messages[0].role", "is not supported"),
    ({"role": "user", "content": "q", "name": ["bob"]}, "messages[0].name",
     "expected a string"),
])
def test_mistyped_message_fields_are_400(server: tuple[str, int], log: Records,
                                         message: dict[str, Any], param: str, needle: str
                                         ) -> None:
    body = json.dumps({"model": "echo", "messages": [message]}).encode()
    err = api_error(exchange(server, post(body)), 400)
    assert err["param"] == param and needle in err["message"], err
    assert log.failures() == []


def test_error_messages_quote_a_clients_long_names_clipped(server: tuple[str, int]) -> None:
    long = "a" * 100_000
    for raw in (
            exchange(server, f"GET /v1/models/{long} HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode()),
            exchange(server, f"GET /{long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode()),
            exchange(server, post(json.dumps({"model": long, "messages": user("q")}).encode())),
            exchange(server, post(json.dumps({"model": "echo", "messages": user("q"),
                                              **{f"{long}{i}": 1 for i in range(20)}}
                                             ).encode()))):
        err = api_error(raw, response(raw)[0])
        assert response(raw)[0] in (400, 404)
        assert len(err["message"]) < 2000 and "100,00" in err["message"], err["message"][:300]
        assert err["param"] is None or len(err["param"]) < 200


# ----------------------------------------------------------------- large bodies


def test_a_large_body_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing MBs of JSON takes seconds of CPU (measured on 2 shared cores: a 2.9 MB body
    of small lists stalled every other client 2.6 s; parsed in a thread, 0.6 s, the time
    json's C parser holds the GIL): such bodies are parsed in a worker thread, small ones on
    the loop. What is checked is where each was parsed, not how fast."""
    module = importlib.import_module("tts_graph.server.app")
    where: list[str] = []
    real = module.parse_chat_request

    def spy(raw: bytes) -> Any:
        where.append(threading.current_thread().name)
        return real(raw)

    monkeypatch.setattr(module, "parse_chat_request", spy)
    app = create_app(scripted_graphs())
    with serve_app(app) as url:
        addr = address(url)
        small = json.dumps({"model": "echo", "messages": user("q")}).encode()
        big = json.dumps({"model": "echo", "messages": user("q" * 100_000)}).encode()
        assert len(big) >= module.THREADED_PARSE_BYTES > len(small)
        for body in (small, big):
            assert response(exchange(addr, post(body)))[0] == 200
        bad = (b'{"model": "echo", "messages": ' + b"[" * 70 + b"]" * 70
               + b" " * module.THREADED_PARSE_BYTES + b"}")
        assert "nested too deeply" in api_error(exchange(addr, post(bad)), 400)["message"]
    assert where[0] == "tts-graph-server"  # serve_app's thread: the event loop's
    assert where[1] != "tts-graph-server" and where[2] != "tts-graph-server", where


@pytest.mark.parametrize("raw", [
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n",  # HTTP/1.1 without Host
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 100,  # TLS to a plain port
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
])
def test_http_that_does_not_parse_is_openais_400(server: tuple[str, int], log: Records,
                                                 raw: bytes) -> None:
    # uvicorn answered these in plain text ("Invalid HTTP request received.")
    out = exchange(server, raw)
    err = api_error(out, 400)
    assert err["code"] == "invalid_http_request"
    assert response(out)[1]["connection"] == "close"
    still_serves(server)
    assert log.failures() == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/chat/completions/", OK_BODY), ("GET", "/v1/models/", b""),
    ("GET", "/v1/models/echo/", b""), ("GET", "/health/", b"")])
def test_a_trailing_slash_is_the_same_route_not_a_redirect(
        server: tuple[str, int], method: str, path: str, body: bytes) -> None:
    # it was a 307 with an empty body to a URL built from the Host header
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    status, headers, out = response(exchange(server, head + body))
    assert status == 200 and "location" not in headers and json.loads(out)


# ----------------------------------------------------------------------- browsers


def preflight(addr: tuple[str, int], path: str = "/v1/chat/completions") -> bytes:
    return exchange(addr, f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example"
                    "\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: "
                    "authorization, content-type\r\nConnection: close\r\n\r\n".encode())


def test_with_a_key_browsers_may_call_from_any_page() -> None:
    key = "sk-cors-test"
    app = create_app(scripted_graphs(), api_key=key)
    with serve_app(app) as url:
        addr = address(url)
        status, headers, _ = response(preflight(addr))
        assert status == 200 and headers["access-control-allow-origin"] == "*"
        assert "POST" in headers["access-control-allow-methods"]
        assert "authorization" in headers["access-control-allow-headers"].lower()
        raw = exchange(addr, post(OK_BODY, headers={"Origin": "https://app.example",
                                                    "Authorization": f"Bearer {key}"}))
        status, headers, _ = response(raw)
        assert status == 200 and headers["access-control-allow-origin"] == "*"
        # the key still guards it
        err = api_error(exchange(addr, post(OK_BODY, headers={"Origin": "https://x"})), 401)
        assert err["code"] == "invalid_api_key"


def test_without_a_key_no_page_may_read_the_answers_or_run_a_graph(
        server: tuple[str, int]) -> None:
    raw = preflight(server)
    assert response(raw)[0] == 405 and "access-control-allow-origin" not in response(raw)[1]
    # what a page's fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})
    # sends: no Content-Type, no preflight; it ran the graph
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
        raw = exchange(server, post(OK_BODY, headers={"Origin": origin, "Content-Type": ""}))
        err = api_error(raw, 403)
        assert err["code"] == "cross_origin_forbidden" and err["type"] == "permission_error"
        assert "access-control-allow-origin" not in response(raw)[1]
    # a page served by the server's own origin, and every client that is no browser, may
    raw = exchange(server, post(OK_BODY, headers={"Origin": f"http://{server[0]}:{server[1]}",
                                                  "Host": f"{server[0]}:{server[1]}"}))
    assert response(raw)[0] == 200


def inner_graph(url: str, model: str, *, vote: bool) -> Any:
    """A graph sampling 3 from ``model`` of the tts-graph server at ``url`` (openai backend)."""
    from tts_graph import loads_graph

    tail = "  vote: {role: vote, inputs: [solve]}\noutput: vote\n" if vote else "output: solve\n"
    return loads_graph(f"""
version: 1
name: outer
models:
  inner: {{backend: openai, model: {model}, api_base: "{url}/v1", max_retries: 0}}
nodes:
  solve: {{role: solver, model: inner, samples: 3}}
""" + tail)


def test_our_openai_backend_samples_from_a_server_that_refuses_n() -> None:
    """A graph whose model is another tts-graph server (or Groq: servers that refuse n > 1
    with a 400): its samples failed as 'n must be 1'; now the first refusal is answered by
    one request per sample, and later calls go one at a time at once."""
    from tts_graph import Executor

    app = create_app(scripted_graphs())
    with serve_app(app) as url:
        outer = inner_graph(url, "echo", vote=True)
        ex = Executor(outer)
        first, second = ex.run_many(["What is 2 + 2?", "What is 3 + 3?"], concurrency=1)
    for res in (first, second):
        assert res.status == "ok", res.error
        assert res.steps["solve"].meta["samples"] == 3 and res.usage.samples == 3
    backend = ex.bindings()["inner"].backend
    assert backend.splits_samples()  # asked one sample at a time from now on


def test_a_request_refused_for_another_reason_is_still_its_error() -> None:
    from tts_graph import Executor

    app = create_app(scripted_graphs())
    with serve_app(app) as url:
        outer = inner_graph(url, "no-such-graph", vote=False)
        res = Executor(outer).run("What is 2 + 2?")
    assert res.status == "error"
    assert "no-such-graph" in (res.error or "") and "'n'" not in (res.error or "")


@pytest.mark.parametrize("size", [20_000, 200_000])
def test_a_long_request_head_is_answered_whatever_the_kernel_split(
        server: tuple[str, int], size: int) -> None:
    """h11 refuses a head longer than its buffer only while it is incomplete: a 100 KB
    request line got the app's answer when it came in one read and a 400 when it came in
    two (a flaky test showed it). Heads under ``HEAD_MAX_BYTES`` now always reach the app;
    sent in pieces here, so that they arrive incomplete."""
    path = "/v1/models/" + "a" * size
    with socket.create_connection(server, timeout=20) as s:
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        for i in range(0, len(head), 8192):
            s.sendall(head[i:i + 8192])
            time.sleep(0.001)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    err = api_error(out, 404)
    assert f"{size:,}" in err["message"], err["message"][:300]


def test_a_head_over_the_limit_gets_its_400_not_a_reset(server: tuple[str, int]) -> None:
    """Past ``HEAD_MAX_BYTES`` the 400 is sent and the rest of the request read and
    dropped before the connection closes: closing with the request still arriving reset
    the connection, which could destroy the answer before the client read it."""
    from tts_graph.server import serving

    assert getattr(serving, "HEAD_MAX_BYTES", 16 * 1024) < 600_000
    for _ in range(5):
        out = exchange(server, f"GET /{'a' * 600_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert api_error(out, 400)["code"] == "invalid_http_request"
    still_serves(server)
