"""``APIError``: an error answered in OpenAI's format ``{"error": {"message", "type", "param",
"code"}}``."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}, **self.extra}


def clip(text: str, limit: int = 100) -> str:
    """``text`` as an error message quotes it: at most ``limit`` characters (a client's
    100 KB model name is not sent back whole)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"
