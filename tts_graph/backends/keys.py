"""API keys of the HTTP backends (``openai``, ``litellm``) and of ``validate``'s model checks:
read from the variable a model entry names, checked, and the forms a server may echo them
in (to redact)."""

from __future__ import annotations

import json
import os
import urllib.parse


def env_key(var: str) -> str:
    """The key in environment variable ``var`` ("" when unset), its ends trimmed: a key kept
    in an env file or a secret mount often ends in a line break, which no HTTP header may
    carry (every call failed, as a retried "Connection error" through litellm)."""
    return os.environ.get(var, "").strip()


def key_problem(var: str, key: str) -> str | None:
    """What makes ``env_key(var)`` no usable key: unset, or a control character inside it
    (two keys pasted into one variable), which no call could carry."""
    if not key:
        return f"environment variable {var} (api_key_env) is not set"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return (f"environment variable {var} (api_key_env) holds a line break or another "
                "control character: not one key")
    return None


def key_forms(key: str) -> tuple[str, ...]:
    """``key`` as a server may echo it: raw, JSON-escaped (with and without "/" escaped, as
    PHP's json_encode does), URL-encoded; the longest first, each once."""
    quoted = json.dumps(key)[1:-1]
    forms = {key, quoted, quoted.replace("/", "\\/"), json.dumps(key, ensure_ascii=False)[1:-1],
             urllib.parse.quote(key, safe=""), urllib.parse.quote(key),
             urllib.parse.quote_plus(key)}
    return tuple(sorted(forms, key=len, reverse=True))
