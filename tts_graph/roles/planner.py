"""planner: writes a short plan that downstream nodes receive as context."""

from __future__ import annotations

from typing import ClassVar

from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext


class Planner(Role):
    name = "planner"
    output_kind = "plan"
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "Write a short numbered plan (at most 4 steps) for solving the problem. "
        "Do not solve it."
    }
    user_prompt: ClassVar[dict[str, str]] = {"main": "{context}{question}"}

    def calls(self, ctx: StepContext) -> list[Call]:
        return [Call(ctx.model, self.messages(ctx, {}))]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        cands = [Candidate(text=c.text.strip(), model=ctx.model) for c in results[0]]
        return self.output(ctx, cands)
