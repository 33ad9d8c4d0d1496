"""The conversation → the question a graph gets (see the package docstring for the
transcript format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def conversation_to_question(messages: Sequence[Mapping[str, Any]]) -> str:
    """The question a graph gets for a (validated) conversation: the last message's text,
    after a transcript of the earlier ones when there are any (see the module docstring)."""
    texts = [(_ROLES[str(m["role"])], _text(m.get("content"))) for m in messages]
    question = texts[-1][1]
    if len(texts) == 1:
        return question
    lines = [f"{role}: {text}" for role, text in texts[:-1]]
    return "Conversation so far:\n" + "\n".join(lines) + f"\n\nQuestion: {question}"


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content)
