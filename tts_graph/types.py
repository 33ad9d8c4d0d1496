"""Plain data passed between layers: messages, completions, candidates, step outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled completion, with the tokens it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


@dataclass(slots=True)
class Candidate:
    """An answer (or a plan/critique) produced by a step."""

    text: str
    answer: str | None = None
    score: float | None = None
    model: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


OutputKind = Literal["answer", "plan", "critique", "tests"]
StepStatus = Literal["ok", "budget", "timeout", "error", "skipped"]


@dataclass(slots=True)
class StepOutput:
    step: str
    node: str
    kind: OutputKind = "answer"
    candidates: list[Candidate] = field(default_factory=list)
    status: StepStatus = "ok"
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None
