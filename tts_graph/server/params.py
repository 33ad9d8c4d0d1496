"""The request fields a graph accepts and ignores, checked as OpenAI checks them: a client
that sends ``temperature: 5``, ``max_tokens: -1`` or ``seed: "7"`` gets OpenAI's 400 (same
message shape and ``code``), not a silent answer that hides its bug until it meets OpenAI.
``null`` is accepted for every field, as OpenAI does."""

from __future__ import annotations

import math
from typing import Any

from .api_error import APIError

#: decimals: their inclusive range
_DECIMALS: dict[str, tuple[float, float]] = {
    "temperature": (0, 2), "top_p": (0, 1),
    "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2),
}
#: integers: their inclusive range (None: unbounded); seeds are 64-bit
_INTEGERS: dict[str, tuple[int | None, int | None]] = {
    "max_tokens": (1, None), "max_completion_tokens": (1, None), "top_logprobs": (0, 20),
    "seed": (-(2 ** 63), 2 ** 63 - 1), "n": (1, 128),
}
_STRINGS = ("user", "service_tier", "reasoning_effort", "verbosity", "prompt_cache_key",
            "safety_identifier")
_BOOLEANS = ("store", "parallel_tool_calls", "logprobs")


def check_params(body: dict[str, Any]) -> None:
    """Raise ``APIError`` 400 for the first field of ``body`` of a wrong type or range."""
    for key, (low, high) in _DECIMALS.items():
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise _wrong_type(key, "a decimal", value)
        if math.isnan(value) or value < low:
            raise _out_of_range(key, "decimal", "below minimum", f">= {low}", value)
        if value > high:
            raise _out_of_range(key, "decimal", "above maximum", f"<= {high}", value)
    for key, (ilow, ihigh) in _INTEGERS.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(key, "an integer", value)
        if ilow is not None and value < ilow:
            raise _out_of_range(key, "integer", "below minimum", f">= {ilow}", value)
        if ihigh is not None and value > ihigh:
            raise _out_of_range(key, "integer", "above maximum", f"<= {ihigh}", value)
    for key in _STRINGS:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _wrong_type(key, "a string", body[key])
    for key in _BOOLEANS:
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise _wrong_type(key, "a boolean", body[key])
    _check_stop(body.get("stop"))
    _check_map("metadata", body.get("metadata"), lambda v: isinstance(v, str), "a string")
    _check_map("logit_bias", body.get("logit_bias"),
               lambda v: _is_number(v) and -100 <= v <= 100, "a number from -100 to 100")
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise _wrong_type("stream_options", "an object", opts)
        for key in ("include_usage", "include_obfuscation"):
            if opts.get(key) is not None and not isinstance(opts[key], bool):
                raise _wrong_type(f"stream_options.{key}", "a boolean", opts[key])


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list):
        raise _wrong_type("stop", "a string or an array of strings", stop)
    for i, s in enumerate(stop):
        if not isinstance(s, str):
            raise _wrong_type(f"stop[{i}]", "a string", s)


def _check_map(key: str, value: Any, ok: Any, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type(key, "an object", value)
    for k, v in value.items():
        if not ok(v):
            raise APIError(400, f"Invalid '{key}.{k}': expected {what}.", param=key,
                           code="invalid_value")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"  # OpenAI's word: 256.0 is no integer to it either
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _wrong_type(key: str, expected: str, value: Any) -> APIError:
    return APIError(400, f"Invalid type for '{key}': expected {expected}, but got "
                    f"{_json_type(value)} instead.", param=key, code="invalid_type")


def _out_of_range(key: str, kind: str, side: str, bound: str, value: float) -> APIError:
    code = f"{kind}_{side.replace(' ', '_').replace('minimum', 'min').replace('maximum', 'max')}"
    return APIError(400, f"Invalid '{key}': {kind} {side} value. Expected a value {bound}, "
                    f"but got {value} instead.", param=key, code=f"{code}_value")
