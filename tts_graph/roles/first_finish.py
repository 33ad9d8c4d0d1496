"""first_finish: start N samples, keep the first k that finish, cancel the rest."""

from __future__ import annotations

from typing import ClassVar

from ..spec import FirstFinishNode
from ..types import Completion, StepOutput
from .base import ANSWER_INSTRUCTION, Call, Role, StepContext


class FirstFinish(Role):
    name = "first_finish"
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "Solve the problem concisely. " + ANSWER_INSTRUCTION
    }
    user_prompt: ClassVar[dict[str, str]] = {"main": "{context}{question}"}

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, FirstFinishNode)
        return [Call(ctx.model, self.messages(ctx, {}), n=node.samples, first_k=node.k)]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        comps = results[0] if results else []
        return self.output(ctx, [self.answer(ctx, c) for c in comps], kept=len(comps))
