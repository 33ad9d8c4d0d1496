"""The loopback fault server itself: deterministic answers, and each fault kind as specified."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tts_graph.testing import FaultConfig, fault_stats, serve_fault_server, spawn_fault_server
from tts_graph.testing.fault_server import prompt_tokens, request_key, sample_text

MESSAGES = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "2 + 2?"}]


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "fault", "messages": MESSAGES, "max_tokens": 64, "seed": 7, **kw}


def chat(url: str, payload: dict[str, Any], timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=timeout)


def test_answers_are_deterministic_per_seed_and_index() -> None:
    with serve_fault_server() as url:
        r = chat(url, body(n=3))
        assert r.status_code == 200
        data = r.json()
        texts = [c["message"]["content"] for c in data["choices"]]
        assert [c["index"] for c in data["choices"]] == [0, 1, 2]
        assert len(set(texts)) == 3
        assert texts == [sample_text(MESSAGES, 7 + i) for i in range(3)]
        assert all(t.splitlines()[-1].startswith("Answer: ") for t in texts)
        # choice i of seed s is choice 0 of seed s + i: n=3 equals three fanned-out calls
        singles = [chat(url, body(seed=7 + i)).json()["choices"][0]["message"]["content"]
                   for i in range(3)]
        assert singles == texts
        again = chat(url, body(n=3)).json()
        assert again["choices"] == data["choices"]
        usage = data["usage"]
        assert usage["prompt_tokens"] == prompt_tokens(MESSAGES)
        assert usage["completion_tokens"] == sum(len(t.split()) for t in texts)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        # other messages, other answers
        other = chat(url, {**body(), "messages": [{"role": "user", "content": "3 + 3?"}]})
        assert other.json()["choices"][0]["message"]["content"] != texts[0]
        stats = fault_stats(url)
        assert stats["requests"] == stats["answered"] == 6
        assert stats["answered_twice"] == 1  # body(n=3) was sent twice on purpose
        assert stats["answers_per_key"][request_key(body(n=3))] == 2


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    with serve_fault_server() as url:
        choice = chat(url, body(max_tokens=2)).json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert len(choice["message"]["content"].split()) == 2


def test_models_health_and_bad_requests() -> None:
    with serve_fault_server(FaultConfig(model="m1")) as url:
        models = httpx.get(f"{url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["m1"]
        assert httpx.post(f"{url}/v1/chat/completions", content=b"{nope").status_code == 400
        assert chat(url, {"model": "m1"}).status_code == 400
        assert chat(url, {"model": "m1", "messages": "hi"}).status_code == 400
        assert httpx.get(f"{url}/v2/other").status_code == 404
        stats = fault_stats(url)
        assert stats["bad_requests"] == 3 and stats["requests"] == 0


def test_latency_is_applied() -> None:
    with serve_fault_server(FaultConfig(latency_ms=120)) as url, httpx.Client() as client:
        client.get(f"{url}/health")  # connect first
        t0 = time.perf_counter()
        assert client.post(f"{url}/v1/chat/completions", json=body()).status_code == 200
        assert time.perf_counter() - t0 >= 0.12


def test_rate_limit_has_retry_after() -> None:
    with serve_fault_server(FaultConfig(faults={"rate_limit": 1.0}, retry_after_s=0.05)) as url:
        r = chat(url, body())
        assert r.status_code == 429
        assert r.headers["retry-after"] == "0.05"
        assert r.headers["retry-after-ms"] == "50"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert fault_stats(url)["faults"]["rate_limit"] == 1
    with serve_fault_server(FaultConfig(faults={"429": 1.0}, retry_after_s=2)) as url:
        assert chat(url, body()).headers["retry-after"] == "2"


def test_server_error_is_a_500_with_an_error_body() -> None:
    with serve_fault_server(FaultConfig(faults={"server_error": 1.0})) as url:
        r = chat(url, body())
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"


def test_malformed_is_a_200_with_broken_json() -> None:
    with serve_fault_server(FaultConfig(faults={"malformed": 1.0})) as url:
        r = chat(url, body())
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            r.json()
        stats = fault_stats(url)
        assert stats["faults"]["malformed"] == 1 and stats["answered"] == 0


def _raw_request(url: str, payload: dict[str, Any], timeout: float = 5.0) -> bytes:
    """Send one request on a bare socket and return every byte the server sent back."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(payload).encode()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_drop_closes_the_connection_without_a_response() -> None:
    with serve_fault_server(FaultConfig(faults={"drop": 1.0})) as url:
        assert _raw_request(url, body()) == b""  # not a single byte: no 500, no headers
        with pytest.raises(httpx.TransportError) as info:  # a connection error, not a status
            chat(url, body(seed=8))
        assert isinstance(info.value, httpx.RemoteProtocolError)
        stats = fault_stats(url)
        assert stats["faults"]["drop"] == 2 and stats["answered"] == 0


def test_hang_outlasts_the_client_timeout_then_ends_when_the_client_leaves() -> None:
    cfg = FaultConfig(faults={"hang": 1.0}, hang_s=5.0)
    with serve_fault_server(cfg) as url:
        t0 = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            chat(url, body(), timeout=0.3)
        assert time.perf_counter() - t0 < 2.0
        deadline = time.monotonic() + 3.0
        while (stats := fault_stats(url))["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stats["in_flight"] == 0  # the server noticed the client left
        assert stats["hangs_abandoned"] == 1 and stats["faults"]["hang"] == 1
        assert stats["answered"] == 0


def test_a_hang_that_ends_drops_the_connection_never_answers() -> None:
    with serve_fault_server(FaultConfig(faults={"hang": 1.0}, hang_s=0.2)) as url:
        t0 = time.perf_counter()
        assert _raw_request(url, body()) == b""
        assert time.perf_counter() - t0 >= 0.2
        assert fault_stats(url)["answered"] == 0


def test_fault_draws_are_deterministic_per_request_attempt() -> None:
    cfg = FaultConfig.mixed(0.5, ("rate_limit", "server_error", "malformed"), seed=3)

    def outcomes(url: str) -> list[tuple[int, str]]:
        out = []
        with httpx.Client() as client:
            for i in range(200):
                for _ in range(2):  # a retry is a new attempt: a new draw
                    r = client.post(f"{url}/v1/chat/completions", json=body(seed=i))
                    out.append((r.status_code, r.headers.get("x-fault", "")))
        return out

    with serve_fault_server(cfg) as url:
        first = outcomes(url)
    with serve_fault_server(cfg) as url:
        assert outcomes(url) == first
    kinds = Counter(kind for _, kind in first)
    assert 0.4 < (len(first) - kinds[""]) / len(first) < 0.6
    assert all(kinds[k] > 40 for k in ("rate_limit", "server_error", "malformed"))
    retry_differs = sum(first[2 * i] != first[2 * i + 1] for i in range(200))
    assert retry_differs > 50  # attempts draw independently
    with serve_fault_server(FaultConfig.mixed(0.5, ("rate_limit", "server_error",
                                                    "malformed"), seed=4)) as url:
        assert outcomes(url) != first


def test_max_faults_per_request_lets_the_next_attempt_through() -> None:
    cfg = FaultConfig(faults={"server_error": 1.0}, max_faults_per_request=2)
    with serve_fault_server(cfg) as url:
        assert [chat(url, body()).status_code for _ in range(4)] == [500, 500, 200, 200]
        stats = fault_stats(url)
        key = request_key(body())
        assert stats["attempts_per_key"][key] == 4
        assert stats["answers_per_key"][key] == 2
        httpx.post(f"{url}/reset")
        assert fault_stats(url)["requests"] == 0


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultConfig(faults={"teapot": 0.1})
    with pytest.raises(ValueError, match="add up"):
        FaultConfig(faults={"hang": 0.6, "drop": 0.6})
    assert FaultConfig.mixed(0.2).faults == pytest.approx(
        {"rate_limit": 0.04, "server_error": 0.04, "hang": 0.04, "drop": 0.04,
         "malformed": 0.04})


def test_separate_process_and_command_line() -> None:
    with spawn_fault_server(FaultConfig(latency_ms=1)) as url:
        assert chat(url, body()).status_code == 200
        assert fault_stats(url, keys=False)["answered"] == 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "tts_graph.testing.fault_server", "--port", "0",
         "--latency-ms", "1", "--fault", "429=1", "--retry-after", "0.5"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        r = chat(url, body())
        assert r.status_code == 429 and r.headers["retry-after"] == "0.5"
    finally:
        proc.terminate()
        proc.wait(10)


def sse_events(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded (``[DONE]`` kept as a string)."""
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_a_streamed_answer_is_the_unstreamed_one_word_by_word() -> None:
    with serve_fault_server() as url:
        plain = chat(url, body(n=2)).json()
        r = chat(url, body(n=2, stream=True, stream_options={"include_usage": True}))
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        events = sse_events(r.content)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        for i in range(2):
            deltas = [ch["delta"] for c in chunks for ch in c["choices"] if ch["index"] == i]
            assert deltas[0] == {"role": "assistant", "content": ""}
            text = "".join(d.get("content") or "" for d in deltas)
            assert text == plain["choices"][i]["message"]["content"]
            assert len(deltas) > 5  # word by word, not in one piece
            finish = [ch["finish_reason"] for c in chunks for ch in c["choices"]
                      if ch["index"] == i and ch["finish_reason"]]
            assert finish == ["stop"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
        # without include_usage no usage event
        quiet = sse_events(chat(url, body(stream=True)).content)
        assert all("usage" not in c for c in quiet[:-1])


@pytest.mark.parametrize("stream", [True, False])
def test_cut_closes_the_connection_mid_answer(stream: bool) -> None:
    with serve_fault_server(FaultConfig(faults={"cut": 1.0})) as url:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body(stream=stream),
                timeout=5.0) as r:
            assert r.status_code == 200 and r.headers["x-fault"] == "cut"
            for part in r.iter_raw():
                got += part
        assert got  # part of an answer came before the cut
        if stream:
            events = sse_events(got)
            assert events and "[DONE]" not in events
            text = "".join(ch["delta"].get("content") or "" for e in events
                           for ch in e["choices"])
            assert text and sample_text(MESSAGES, 7).startswith(text)
            assert "Answer:" not in text
        stats = fault_stats(url)
        assert stats["faults"]["cut"] == 1 and stats["answered"] == 0


def test_a_malformed_stream_breaks_off_inside_an_event() -> None:
    with serve_fault_server(FaultConfig(faults={"malformed": 1.0})) as url:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
                "POST", f"{url}/v1/chat/completions", json=body(stream=True),
                timeout=5.0) as r:
            for part in r.iter_raw():
                got += part
        assert got.startswith(b"data: {") and b"[DONE]" not in got
        with pytest.raises(json.JSONDecodeError):
            sse_events(got)


def test_cut_is_asked_for_by_name_only() -> None:
    from tts_graph.testing import ALL_KINDS, FAULT_KINDS

    assert "cut" in ALL_KINDS and "cut" not in FAULT_KINDS
    assert "cut" not in FaultConfig.mixed(0.5).faults
    assert FaultConfig(faults={"truncate": 0.1}).faults == {"cut": 0.1}
    with pytest.raises(ValueError, match=r"unknown fault kind 'chop'.*cut"):
        FaultConfig(faults={"chop": 0.1})
