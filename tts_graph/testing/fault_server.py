"""A loopback OpenAI-compatible server that injects faults: for fault-tolerance tests and
throughput benchmarks of the remote backends.

It answers ``POST /v1/chat/completions`` and ``GET /v1/models``. Answers are deterministic
functions of the messages and the sample's seed (choice ``i`` of a request with seed ``s`` is
the text of seed ``s + i``, so ``n=3`` in one request and three ``n=1`` requests with seeds
``s, s+1, s+2`` get the same three texts), with token usage counted deterministically. A faulty
run can therefore be compared, text for text, with a fault-free one.

Faults are injected per request *attempt*, deterministically: the decision for the k-th
arrival of a request body is a hash of (fault seed, body, k), so it does not depend on the
order in which concurrent requests arrive. Kinds:

- ``rate_limit``: 429 with ``Retry-After`` (seconds, may be fractional) and ``retry-after-ms``
- ``server_error``: 500 with an OpenAI-style JSON error body
- ``hang``: no answer; the connection is dropped after ``hang_s`` (or when the client gives up)
- ``drop``: the connection is closed without a single byte of response
- ``malformed``: 200 with a truncated JSON body (streamed: an event whose JSON breaks off)
- ``cut`` (only when asked for by name; not in ``FAULT_KINDS`` nor ``mixed``): the answer
  starts (200, part of the body or, streamed, the first half of the text's events) and the
  connection closes mid-answer
- ``empty`` (only when asked for by name, like ``cut``): 200 with a well-formed answer
  whose ``choices`` list is empty (streamed: no choice events, then ``[DONE]``)

``"stream": true`` is answered as server-sent events the way OpenAI streams: a role delta,
the text word by word, a finish event, a usage event when ``stream_options.include_usage``
is set, then ``data: [DONE]``; the text and usage are those of the same request unstreamed.

``GET /stats`` reports requests received, faults injected by kind, and answers and attempts
per request key (a hash of the request body), so a test can check that no call was lost or
answered twice. ``POST /reset`` clears the counters.

Run it in-process with ``serve_fault_server(config)`` (a uvicorn thread), in another process
with ``spawn_fault_server(config)``, or from a shell::

    python -m tts_graph.testing.fault_server --port 8099 --latency-ms 50 --fault-rate 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

#: fault kinds, in the order in which a draw is mapped onto them
FAULT_KINDS = ("rate_limit", "server_error", "hang", "drop", "malformed")
#: every kind; the ones asked for by name only come last, so adding one moves no draw of
#: the others
ALL_KINDS = (*FAULT_KINDS, "cut", "empty")
_ALIASES = {"429": "rate_limit", "500": "server_error", "timeout": "hang",
            "disconnect": "drop", "json": "malformed", "truncate": "cut"}
CREATED = 1_700_000_000  # a fixed timestamp: answers are byte-for-byte reproducible

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class FaultConfig:
    """What the server does. ``faults`` maps a kind (see ``FAULT_KINDS``) to the probability
    that an attempt gets it; ``mixed(rate)`` spreads one rate evenly over every kind."""

    latency_ms: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after_s: float = 0.05
    hang_s: float = 30.0
    #: after this many faults for one request body, its attempts always succeed (None: never)
    max_faults_per_request: int | None = None
    model: str = "fault"
    #: answers are ``Answer: k`` with k in [0, answer_range): small, so votes can agree
    answer_range: int = 10
    #: at most this many choices an answer, whatever ``n`` asks (1: a server that ignores
    #: ``n``, as llama.cpp's does); None: as many as asked
    max_choices: int | None = None

    def __post_init__(self) -> None:
        norm: dict[str, float] = {}
        for kind, rate in self.faults.items():
            k = _ALIASES.get(kind, kind)
            if k not in ALL_KINDS:
                raise ValueError(f"unknown fault kind {kind!r} (kinds: {', '.join(ALL_KINDS)})")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {kind}={rate} is not in [0, 1]")
            norm[k] = norm.get(k, 0.0) + float(rate)
        if sum(norm.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {sum(norm.values()):g} > 1")
        self.faults = norm
        if self.answer_range < 1:
            raise ValueError("answer_range must be >= 1")
        if self.max_choices is not None and self.max_choices < 1:
            raise ValueError("max_choices must be >= 1")

    @classmethod
    def mixed(cls, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, **kw: Any) -> FaultConfig:
        return cls(faults={k: rate / len(kinds) for k in kinds}, **kw)


def request_key(body: dict[str, Any]) -> str:
    """Identity of a request: a hash of its body (a retry sends the same body)."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    h = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def _message_text(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out.append(f"{m.get('role', '')}\x1f{content or ''}")
    return "\x1e".join(out)


def sample_text(messages: list[dict[str, Any]], seed: int, answer_range: int = 10) -> str:
    """The text the server answers for ``messages`` with sample seed ``seed``."""
    h = hashlib.sha256(f"{_message_text(messages)}\x1d{seed}".encode()).hexdigest()
    answer = int(h[:8], 16) % answer_range
    return f"Working {h[8:16]} out, the result is {answer}.\nAnswer: {answer}"


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(_message_text([m])) + 3 for m in messages) + 3


class FaultApp:
    """The ASGI app (raw ASGI: a dropped connection must close the socket before any byte of
    a response, which a framework's error handling would turn into a 500)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.answered = 0
        self.faults: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.faults_per_key: Counter[str] = Counter()
        self.hangs_abandoned = 0
        self.bad_requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        #: (host, port) of each client connection a chat request came on
        self.clients: set[tuple[Any, ...]] = set()

    def stats(self, keys: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "answered": self.answered,
            "faults": {k: self.faults.get(k, 0) for k in ALL_KINDS},
            "faults_total": sum(self.faults.values()),
            "distinct_requests": len(self.attempts),
            "answered_twice": sum(1 for v in self.answers.values() if v > 1),
            "hangs_abandoned": self.hangs_abandoned,
            "bad_requests": self.bad_requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "connections": len(self.clients),
            "pid": os.getpid(),
            "process_cpu_s": time.process_time(),  # the server's CPU (for benchmarks)
            "config": asdict(self.config),
        }
        if keys:
            out["answers_per_key"] = dict(self.answers)
            out["attempts_per_key"] = dict(self.attempts)
        return out

    # ------------------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if path.endswith("/chat/completions") and method == "POST":
            await self._chat(scope, receive, send)
        elif path.endswith("/models") and method == "GET":
            await _json(send, 200, {"object": "list", "data": [
                {"id": self.config.model, "object": "model", "created": CREATED,
                 "owned_by": "tts-graph-fault-server"}]})
        elif path == "/stats" and method == "GET":
            keys = b"keys=0" not in scope.get("query_string", b"")
            await _json(send, 200, self.stats(keys=keys))
        elif path == "/reset" and method == "POST":
            self.reset()
            await _json(send, 200, {"ok": True})
        elif path == "/health":
            await _json(send, 200, {"ok": True})
        else:
            await _json(send, 404, _error(f"no route {method} {scope['path']}", "not_found"))

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
            messages = body["messages"]
            n = int(body.get("n") or 1)
            int(body.get("seed") or 0)  # a seed that is not a number: a 400, not a 500
            if not isinstance(messages, list) or n < 1:
                raise ValueError("messages must be a list and n >= 1")
            stream = bool(body.get("stream"))
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_requests += 1
            await _json(send, 400, _error(f"bad request: {exc}", "invalid_request_error"))
            return
        cfg = self.config
        key = request_key(body)
        self.requests += 1
        self.clients.add(tuple(scope.get("client") or ()))
        self.attempts[key] += 1
        attempt = self.attempts[key]
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if cfg.latency_ms > 0:
                await asyncio.sleep(cfg.latency_ms / 1000.0)
            kind = self._draw(key, attempt)
            headers = [(b"x-fault-key", key.encode()), (b"x-fault-attempt", str(attempt).encode())]
            if kind is not None:
                self.faults[kind] += 1
                self.faults_per_key[key] += 1
                headers.append((b"x-fault", kind.encode()))
                await self._fault(kind, receive, send, headers,
                                  lambda: self._answer(body, key, attempt), stream)
                return
            answer = self._answer(body, key, attempt)
            self.answers[key] += 1
            self.answered += 1
            if stream:
                await _sse(send, _events(answer, body), headers)
            else:
                await _json(send, 200, answer, headers)
        finally:
            self.in_flight -= 1

    def _draw(self, key: str, attempt: int) -> str | None:
        cfg = self.config
        if not cfg.faults:
            return None
        if (cfg.max_faults_per_request is not None
                and self.faults_per_key[key] >= cfg.max_faults_per_request):
            return None
        u = _unit(cfg.seed, key, attempt)
        acc = 0.0
        for kind in ALL_KINDS:
            acc += cfg.faults.get(kind, 0.0)
            if u < acc:
                return kind
        return None

    def _answer(self, body: dict[str, Any], key: str, attempt: int) -> dict[str, Any]:
        """The chat completion this request gets (a function of its messages and seed)."""
        cfg = self.config
        messages, seed = body["messages"], int(body.get("seed") or 0)
        choices, completion_tokens = [], 0
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        n = int(body.get("n") or 1)
        for i in range(n if cfg.max_choices is None else min(n, cfg.max_choices)):
            text = sample_text(messages, seed + i, cfg.answer_range)
            finish = "stop"
            if max_tokens is not None and count_tokens(text) > int(max_tokens):
                text = " ".join(text.split()[: int(max_tokens)])
                finish = "length"
            completion_tokens += count_tokens(text)
            choices.append({"index": i, "finish_reason": finish, "logprobs": None,
                            "message": {"role": "assistant", "content": text}})
        pt = prompt_tokens(messages)
        return {
            "id": f"chatcmpl-{key[:24]}-{attempt}",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", cfg.model),
            "system_fingerprint": "fault-server",
            "choices": choices,
            "usage": {"prompt_tokens": pt, "completion_tokens": completion_tokens,
                      "total_tokens": pt + completion_tokens},
        }

    async def _fault(self, kind: str, receive: Receive, send: Send,
                     headers: list[tuple[bytes, bytes]],
                     answer: Callable[[], dict[str, Any]], stream: bool) -> None:
        """Inject ``kind``; ``answer`` makes the answer a ``cut`` sends part of."""
        cfg = self.config
        if kind == "rate_limit":
            ra = cfg.retry_after_s
            headers += [(b"retry-after", _num(ra).encode()),
                        (b"retry-after-ms", _num(ra * 1000.0).encode())]
            await _json(send, 429, _error("rate limited by the fault server",
                                          "rate_limit_exceeded"), headers)
        elif kind == "server_error":
            await _json(send, 500, _error("injected server error", "server_error"), headers)
        elif kind == "malformed" and stream:  # an event whose JSON breaks off
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*_SSE_HEADERS, *headers]})
            await send({"type": "http.response.body", "more_body": True,
                        "body": b'data: {"id": "chatcmpl-broken", "object": "chat.completi'
                                b'on.chunk", "choices": [{"index": 0, "delta": {"cont\n\n'})
            await _drop(receive, send)
        elif kind == "malformed":
            await _send(send, 200, b'{"id": "chatcmpl-broken", "object": "chat.completion", '
                                   b'"choices": [{"index": 0, "message": {"role": "assis',
                        headers)
        elif kind == "hang":
            try:
                await asyncio.wait_for(_until_disconnect(receive), cfg.hang_s)
            except TimeoutError:
                await _drop(receive, send)
            else:
                self.hangs_abandoned += 1
        elif kind == "drop":
            await _drop(receive, send)
        elif kind == "cut" and stream:  # the first half of the answer's events
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*_SSE_HEADERS, *headers]})
            events = _events(answer(), {})
            for event in events[: max(2, len(events) // 2)]:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await _drop(receive, send)
        elif kind == "empty" and stream:
            await _sse(send, _events({**answer(), "choices": []}, {}), headers)
        elif kind == "empty":
            await _json(send, 200, {**answer(), "choices": []}, headers)
        elif kind == "cut":  # the whole length announced, half of the body sent
            data = json.dumps(answer()).encode("utf-8")
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()), *headers]})
            await send({"type": "http.response.body", "body": data[: len(data) // 2],
                        "more_body": True})
            await _drop(receive, send)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, obj: Any,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(obj).encode("utf-8"), headers)


_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _events(answer: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
    """``answer`` (a chat completion) as the SSE events of its stream."""
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": answer["id"], "object": "chat.completion.chunk",
                 "created": answer["created"], "model": answer["model"],
                 "system_fingerprint": "fault-server", "choices": choices, **extra}
        return b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n"

    out = []
    for c in answer["choices"]:
        i = c["index"]
        out.append(event([{"index": i, "delta": {"role": "assistant", "content": ""},
                           "finish_reason": None}]))
        # word by word, each piece keeping the whitespace after it: the pieces join to the text
        for piece in re.findall(r"\S+\s*|\s+", c["message"]["content"]):
            out.append(event([{"index": i, "delta": {"content": piece},
                               "finish_reason": None}]))
        out.append(event([{"index": i, "delta": {}, "finish_reason": c["finish_reason"]}]))
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage") and "usage" in answer:
        out.append(event([], usage=answer["usage"]))
    out.append(b"data: [DONE]\n\n")
    return out


async def _sse(send: Send, events: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_SSE_HEADERS, *headers]})
    for e in events:
        await send({"type": "http.response.body", "body": e, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _drop(receive: Receive, send: Send) -> None:
    """Close the connection without sending a byte. ASGI has no message for that: reach the
    server's transport through the ``send`` callable (uvicorn's request cycle holds it), then
    wait for the server to notice the disconnect, so it does not answer a 500 in our place."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("fault server: cannot drop the connection under this ASGI server "
                           "(run it with uvicorn)")
    transport.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_until_disconnect(receive), 5.0)


# ----------------------------------------------------------------------------- serving


def _bind(host: str, port: int) -> socket.socket:
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it Nagle holds each response body back ~40 ms behind its headers
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)  # clients may connect (queued) as soon as the URL is known
    return sock


def _uvicorn_server(app: FaultApp, log_level: str) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            backlog=4096, timeout_graceful_shutdown=2, timeout_keep_alive=30)
    return uvicorn.Server(config)


@contextlib.contextmanager
def serve_fault_server(config: FaultConfig | None = None, *, host: str = "127.0.0.1",
                       port: int = 0, log_level: str = "error") -> Iterator[str]:
    """Serve the fault server from a background thread of this process; yields its base URL
    (``http://127.0.0.1:PORT``; the OpenAI API is under ``/v1``). ``port=0`` picks a free
    port. Read its counters with ``fault_stats(url)``."""
    app = FaultApp(config)
    sock = _bind(host, port)
    server = _uvicorn_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="fault-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("fault server did not start")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10.0)
        sock.close()


@contextlib.contextmanager
def spawn_fault_server(config: FaultConfig | None = None, *, host: str = "127.0.0.1",
                       python: str = sys.executable) -> Iterator[str]:
    """Serve the fault server from a separate process (its own core and GIL: for
    benchmarks); yields its base URL."""
    cfg = config or FaultConfig()
    cmd = [python, "-m", "tts_graph.testing.fault_server", "--host", host, "--port", "0",
           "--config-json", json.dumps(asdict(cfg))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"fault server did not start (said {line!r})")
        yield line
    finally:
        proc.terminate()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fault_stats(base_url: str, *, keys: bool = True) -> dict[str, Any]:
    """``GET /stats`` of a running fault server."""
    import httpx

    r = httpx.get(f"{base_url.rstrip('/')}/stats", params={} if keys else {"keys": "0"},
                  timeout=10.0)
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tts_graph.testing.fault_server",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0,
                   help="total fault rate, spread evenly over every kind")
    p.add_argument("--fault", action="append", default=[], metavar="KIND=RATE",
                   help=f"rate of one kind ({', '.join(ALL_KINDS)}); repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=0.05, help="seconds, for 429s")
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--max-faults-per-request", type=int, default=None)
    p.add_argument("--model", default="fault")
    p.add_argument("--max-choices", type=int, default=None,
                   help="at most this many choices an answer (1: a server that ignores n)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.config_json:
        cfg = FaultConfig(**json.loads(a.config_json))
    else:
        faults = {k: a.fault_rate / len(FAULT_KINDS) for k in FAULT_KINDS} if a.fault_rate else {}
        for item in a.fault:
            kind, _, rate = item.partition("=")
            faults[_ALIASES.get(kind, kind)] = float(rate)
        try:
            cfg = FaultConfig(latency_ms=a.latency_ms, faults=faults, seed=a.seed,
                              retry_after_s=a.retry_after, hang_s=a.hang_s,
                              max_faults_per_request=a.max_faults_per_request, model=a.model,
                              max_choices=a.max_choices)
        except ValueError as exc:
            p.error(str(exc))
    sock = _bind(a.host, a.port)
    server = _uvicorn_server(FaultApp(cfg), a.log_level)
    print(f"http://{a.host}:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
