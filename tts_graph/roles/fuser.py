"""fuser: synthesizes one answer from the candidates (Mixture-of-Agents aggregator,
Fusion-of-N)."""

from __future__ import annotations

from typing import ClassVar

from ..spec import FuserNode
from ..types import Completion, StepOutput
from .base import ANSWER_INSTRUCTION, Call, Role, StepContext, format_candidates


class Fuser(Role):
    name = "fuser"
    streams = True
    placeholders: ClassVar[dict[str, set[str]]] = {
        "main": {"question", "context", "candidates", "n"}
    }
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "You are given several solutions to a problem; some may be wrong. Write one "
        "correct solution, using their best parts. " + ANSWER_INSTRUCTION
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "{context}Problem: {question}\n\n{candidates}\n\nYour solution:"
    }

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, FuserNode)
        cands = ctx.candidates()
        values = {"candidates": format_candidates(cands), "n": str(len(cands))}
        return [Call(ctx.model, self.messages(ctx, values), n=node.samples)]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        comps = results[0] if results else []
        return self.output(ctx, [self.answer(ctx, c) for c in comps])
