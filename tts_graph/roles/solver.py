"""solver: answers the question with N samples (fixed, or adaptive width)."""

from __future__ import annotations

from typing import ClassVar

from ..spec import AdaptiveSamples, SolverNode
from ..types import Completion, StepOutput
from .base import ANSWER_INSTRUCTION, Call, Role, StepContext


class Solver(Role):
    name = "solver"
    streams = True
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "Solve the problem. Reason briefly, step by step. " + ANSWER_INSTRUCTION
    }
    user_prompt: ClassVar[dict[str, str]] = {"main": "{context}{question}"}

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, SolverNode)
        msgs = self.messages(ctx, {})
        if isinstance(node.samples, AdaptiveSamples):
            return [Call(ctx.model, msgs, n=node.samples.max, adaptive=node.samples)]
        return [Call(ctx.model, msgs, n=node.samples)]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        comps = results[0] if results else []
        return self.output(ctx, [self.answer(ctx, c) for c in comps], samples=len(comps))
