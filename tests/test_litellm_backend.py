"""The litellm backend's own logic, with litellm's acompletion replaced by a fake.
The real wire (a llama.cpp server on loopback) is tested in test_wire.py, faults in
test_fault_tolerance.py."""

from __future__ import annotations

import json
import urllib.parse
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.litellm_backend import (
    LitellmBackend,
    _retry_after,
    _split_usage,
    classify,
    import_litellm,
)
from tts_graph.bindings import ModelBinding
from tts_graph.errors import BackendError, TransientBackendError, TTSGraphError
from tts_graph.spec import ModelSpec
from tts_graph.types import Message

litellm = import_litellm()
REQ = GenerationRequest((Message("user", "2+2?"),), max_tokens=16, seed=10, n=3)


def response(texts: list[str], prompt: int = 9, completion: int = 12) -> Any:
    return SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content=t), finish_reason="stop")
                 for t in texts],
        usage=SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion),
    )


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def fake(**kwargs: Any) -> Any:
        seen.append(kwargs)
        n = kwargs.get("n", 1)
        return response([f"seed {kwargs.get('seed')} #{i}" for i in range(n)])

    monkeypatch.setattr(litellm, "acompletion", fake)
    return seen


async def test_native_n_when_the_provider_supports_it(calls: list[dict[str, Any]]) -> None:
    b = LitellmBackend(ModelSpec(backend="litellm", model="openai/gpt-4o-mini"))
    out = await b.generate(REQ)
    assert len(calls) == 1 and calls[0]["n"] == 3
    assert calls[0]["num_retries"] == 0 and calls[0]["max_retries"] == 0
    assert "drop_params" not in calls[0]
    assert len(out) == 3
    assert sum(c.prompt_tokens for c in out) == 9
    assert sum(c.completion_tokens for c in out) == 12


async def test_fan_out_with_distinct_seeds_without_native_n(
        calls: list[dict[str, Any]]) -> None:
    spec = ModelSpec(backend="litellm", model="anthropic/claude-3-5-sonnet-20240620")
    b = LitellmBackend(spec)
    b._prepare(litellm)
    assert b._native_n is False and b.splits_samples()
    # the binding sends the samples a request each
    parts = await ModelBinding("m", spec, b).generate(REQ, 100)
    assert len(calls) == 3 and all("n" not in c for c in calls)
    assert all("seed" not in c for c in calls)  # anthropic takes no seed: none is sent
    # a part (a record) each: its own latency and retries, as it went on the wire
    assert [(p.start, len(p.completions)) for p in parts] == [(0, 1), (1, 1), (2, 1)]
    # asked directly for three, the backend asks the server for one
    calls.clear()
    assert len(await b.generate(REQ)) == 1 and len(calls) == 1


async def test_fewer_choices_than_asked_are_topped_up(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    async def one_choice_only(**kwargs: Any) -> Any:  # like a server that ignores n
        seen.append(kwargs)
        return response([f"seed {kwargs['seed']}"])

    monkeypatch.setattr(litellm, "acompletion", one_choice_only)
    spec = ModelSpec(backend="litellm", model="openai/local", api_base="http://127.0.0.1:1/v1")
    b = LitellmBackend(spec)
    # the backend returns what the server gave and learns that n is not native ...
    assert [c.text for c in await b.generate(REQ)] == ["seed 10"]
    assert b.splits_samples()
    # ... and the binding asks for the rest, a request each (under the model's limits)
    seen.clear()
    b = LitellmBackend(spec)
    parts = await ModelBinding("m", spec, b).generate(REQ, 100)
    assert [c.text for p in parts for c in p.completions] == ["seed 10", "seed 11", "seed 12"]
    assert [k.get("n") for k in seen] == [3, None, None]


def test_split_usage_adds_up() -> None:
    comps = _split_usage(["a", "bbbb", "cc"], ["stop"] * 3, prompt=10, completion=7)
    assert sum(c.prompt_tokens for c in comps) == 10
    assert sum(c.completion_tokens for c in comps) == 7


def _status_error(cls: type, status: int, headers: dict[str, str] | None = None) -> Exception:
    resp = httpx.Response(status, headers=headers or {},
                          request=httpx.Request("POST", "http://x/v1/chat/completions"))
    return cls(message="boom", llm_provider="openai", model="m", response=resp)


def test_classify_maps_transient_and_permanent_failures() -> None:
    rl = classify(_status_error(litellm.RateLimitError, 429, {"retry-after": "2"}), litellm)
    assert isinstance(rl, TransientBackendError) and rl.kind == "rate_limit"
    assert rl.retry_after == 2.0
    five = classify(_status_error(litellm.InternalServerError, 500), litellm)
    assert isinstance(five, TransientBackendError) and five.kind == "server"
    timeout = classify(litellm.Timeout(message="slow", model="m", llm_provider="openai"),
                       litellm)
    assert isinstance(timeout, TransientBackendError) and timeout.kind == "timeout"
    conn = classify(litellm.APIConnectionError(message="reset", llm_provider="openai",
                                               model="m"), litellm)
    assert isinstance(conn, TransientBackendError)
    bad_json = classify(json.JSONDecodeError("x", "{", 0), litellm)
    assert isinstance(bad_json, TransientBackendError) and bad_json.kind == "malformed"
    auth = classify(_status_error(litellm.AuthenticationError, 401), litellm)
    assert type(auth) is BackendError


def test_retry_after_forms() -> None:
    assert _retry_after(SimpleNamespace(headers={"retry-after-ms": "250"})) == 0.25
    assert _retry_after(SimpleNamespace(headers={"retry-after": "3"})) == 3.0
    assert _retry_after(SimpleNamespace(headers={})) is None


def test_api_key_never_in_identity_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    b = LitellmBackend(ModelSpec(backend="litellm", model="openai/x", api_key_env="MY_KEY"))
    assert "sk-secret" not in b.info.identity
    err = classify(RuntimeError("bad key sk-secret-123 given"), litellm, redact="sk-secret-123")
    assert "sk-secret" not in str(err)


def test_missing_key_env_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(TTSGraphError, match="NOT_SET_KEY"):
        LitellmBackend(ModelSpec(backend="litellm", model="openai/x", api_key_env="NOT_SET_KEY"))


def test_options_cannot_override_reserved_fields() -> None:
    with pytest.raises(TTSGraphError, match="may not set"):
        LitellmBackend(ModelSpec(backend="litellm", model="openai/x", options={"n": 4}))


async def test_price_comes_from_the_cost_map(calls: list[dict[str, Any]]) -> None:
    b = LitellmBackend(ModelSpec(backend="litellm", model="openai/gpt-4o-mini"))
    await b.generate(GenerationRequest((Message("user", "q"),), max_tokens=4))
    assert b.info.price is not None and b.info.price[0] > 0


def test_the_price_is_known_when_the_binding_is_made() -> None:
    # the binding fixes its costing when it is made: a price looked up at the first call
    # (as this backend once did) came too late, and every call cost 0
    from tts_graph.backends.pricing import mapped_price
    from tts_graph.bindings import ModelBinding

    spec = ModelSpec(backend="litellm", model="openai/gpt-4o-mini")
    binding = ModelBinding("m", spec, LitellmBackend(spec))
    price = mapped_price("gpt-4o-mini")
    assert price is not None and price[0] > 0
    assert binding.costing.price_in == pytest.approx(price[0] / 1e6)
    assert binding.costing.price_out == pytest.approx(price[1] / 1e6)
    unknown = ModelSpec(backend="litellm", model="openai/no-such-model-anywhere")
    assert ModelBinding("u", unknown, LitellmBackend(unknown)).costing.price_in == 0.0


def test_classify_redacts_the_key_in_every_form_a_server_may_echo() -> None:
    key = "sk-proj/a+b c"
    body = (f'{{"error": {{"message": "bad key {json.dumps(key)[1:-1]}"}}}}, '
            f'escaped {key.replace("/", chr(92) + "/")}, in a URL ?key='
            f'{urllib.parse.quote_plus(key)}, and plain {key}')
    text = str(classify(RuntimeError(body), litellm, redact=key))
    for form in (key, key.replace("/", "\\/"), urllib.parse.quote_plus(key), "proj/a"):
        assert form not in text, text
    assert text.count("***") == 4
