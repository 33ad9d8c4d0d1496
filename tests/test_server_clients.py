"""``tts-graph serve`` against clients nobody here wrote: raw HTTP on sockets (faulty bodies,
clients that stall or leave mid-request, odd methods and headers) and the ``openai`` client
with every parameter a real application sends.

Each test goes through the real server on loopback (uvicorn in a thread, as in
test_server.py) and checks three things: the answer has OpenAI's status and error shape, the
log holds no traceback, and the server still answers the next client.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from test_server import scripted_graphs, serve_app, user

from tts_graph.server import create_app

OK_BODY = json.dumps({"model": "echo", "messages": user("q")}).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    app = create_app(scripted_graphs(), max_concurrency=8)
    with serve_app(app) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


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

