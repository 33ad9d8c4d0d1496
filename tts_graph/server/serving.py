"""Serving an app: a listening socket, and uvicorn on it until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from .api_error import APIError

if TYPE_CHECKING:
    import uvicorn

#: a connection must send a whole request head (request line and headers) this long after it
#: opens or after the previous response: uvicorn times only connections that send nothing
#: after a response, so one that sent nothing yet, or half a head, was held for ever
HEAD_TIMEOUT_S = 30.0
#: the longest request head (request line and headers) read: h11 refuses a head longer than
#: its buffer only while it is incomplete (16 KB by default), so a longer one passed or got
#: a 400 by how the kernel happened to split it; under this it always passes (one read of
#: the event loop takes at most 256 KB), over it gets the 400
HEAD_MAX_BYTES = 256 * 1024
#: after refusing a request it could not read, the server reads and drops what the client
#: still sends, at most this long, before it closes (RFC 9112 §9.6, "lingering close")
LINGER_S = 2.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``OSError`` when the address is taken or invalid)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, _, proto, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: FastAPI, *, log_level: str = "info", access_log: bool = True,
                   head_timeout_s: float = HEAD_TIMEOUT_S,
                   timeout_graceful_shutdown: int = 5) -> uvicorn.Config:
    """uvicorn's settings for ``app``: its h11 protocol, with connections closed when no
    whole request head has arrived ``head_timeout_s`` after they opened or were last
    answered (the request *body* has its own limit: ``create_app``'s ``body_timeout_s``)."""
    import uvicorn

    if not head_timeout_s > 0:
        raise ValueError("head_timeout_s must be > 0")
    return uvicorn.Config(app, log_level=log_level, access_log=access_log,
                          timeout_graceful_shutdown=timeout_graceful_shutdown,
                          http=_timed_h11(head_timeout_s),
                          h11_max_incomplete_event_size=HEAD_MAX_BYTES)


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info",
          access_log: bool = True) -> None:
    """Serve ``app`` on ``sock`` until interrupted (blocking). SIGINT (Ctrl-C) and SIGTERM
    shut down gracefully; after SIGINT this returns normally."""
    import uvicorn

    config = uvicorn_config(app, log_level=log_level, access_log=access_log)
    # uvicorn raises the captured signal again once it has shut down: for SIGINT that is a
    # KeyboardInterrupt, which here means "stopped as asked"
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def _timed_h11(head_timeout_s: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request head."""

        _head_timer: asyncio.TimerHandle | None = None
        _linger_timer: asyncio.TimerHandle | None = None
        _lingering = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            if self._lingering:  # the rest of a request that was refused: dropped
                return
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # a request head is in: stop timing
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_head_timer()  # the next request's head is timed from now

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers a request h11 cannot parse (a bad Content-Length, a TLS
            # handshake, a header section past h11's limit...) in plain text: here in
            # OpenAI's error format like every other answer
            body = json.dumps(APIError(400, "invalid HTTP request: the server could not "
                                       "parse it (a malformed request line, headers or "
                                       "framing, or headers too large)",
                                       code="invalid_http_request").body()).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self._linger()

        def _linger(self) -> None:
            """Close after a 400 as RFC 9112 §9.6 asks: closing at once, with the client's
            request still arriving, resets the connection, and a reset can destroy the
            answer before the client has read it (a long request line, a large body after
            bad framing). The sending half is closed now; what still arrives is dropped; the
            connection closes when the client closes its half (``eof_received``) or after
            ``LINGER_S``."""
            self._lingering = True
            self._disarm_head_timer()
            self.flow.resume_reading()  # h11 may have paused it (pipelined requests)
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no request to answer yet: h11 cannot send a 408

    return TimedH11Protocol
