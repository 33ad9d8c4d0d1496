"""No secret in a trace: the values of the graph's ``api_key_env`` variables, and anything
shaped like an API key or a bearer token, replaced with ``***``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..compile import CompiledGraph

REDACTED = "***"

_SECRET_PATTERNS = (
    # OpenAI/Anthropic/most providers: sk-..., sk-proj-..., sk-ant-...
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    # an Authorization header or a bearer token quoted in an error
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    # key=value / "key": "value" for the usual names
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token|auth[_-]?token|secret|"
               r"password|authorization)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]{6,})"),
    # AWS access key ids, Google API keys
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),
)


def graph_secrets(graph: CompiledGraph | None) -> list[str]:
    """The values of the environment variables that the graph's models name in
    ``api_key_env`` (set ones only)."""
    if graph is None:
        return []
    out = []
    for mspec in graph.spec.models.values():
        name = getattr(mspec, "api_key_env", None)
        value = os.environ.get(name) if name else None
        if value:
            out.append(value)
    return out


def redact(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` with every known secret value and anything shaped like a key replaced by
    ``***``."""
    if text is None:
        return None
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    for pat in _SECRET_PATTERNS:
        if pat.groups == 2:  # keep the "api_key=" / "Bearer " part, hide the value
            text = pat.sub(lambda m: m.group(1) + (" " if m.group(1).lower() in (
                "bearer", "basic") else "") + REDACTED, text)
        else:
            text = pat.sub(REDACTED, text)
    return text
