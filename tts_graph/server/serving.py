"""Serving an app: a listening socket, and uvicorn on it until interrupted."""

from __future__ import annotations

import contextlib
import socket

from fastapi import FastAPI


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


def serve(app: FastAPI, sock: socket.socket, *, log_level: str = "info",
          access_log: bool = True) -> None:
    """Serve ``app`` on ``sock`` until interrupted (blocking). SIGINT (Ctrl-C) and SIGTERM
    shut down gracefully; after SIGINT this returns normally."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=5)
    # uvicorn raises the captured signal again once it has shut down: for SIGINT that is a
    # KeyboardInterrupt, which here means "stopped as asked"
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
