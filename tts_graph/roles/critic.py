"""critic: one critique per input candidate (up to ``limit``), passed on as feedback."""

from __future__ import annotations

from typing import ClassVar

from ..spec import CriticNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext, clip

CRITIC_SYSTEM = (
    "You are a strict reviewer. Check the solution step by step and point out any error, "
    "briefly. If it is correct, say 'No errors.'"
)
CRITIC_USER = "Problem: {question}\n\nSolution:\n{candidate}\n\nCritique:"


class Critic(Role):
    name = "critic"
    output_kind = "critique"
    placeholders: ClassVar[dict[str, set[str]]] = {"main": {"question", "context", "candidate"}}
    system_prompt: ClassVar[dict[str, str]] = {"main": CRITIC_SYSTEM}
    user_prompt: ClassVar[dict[str, str]] = {"main": CRITIC_USER}

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, CriticNode)
        cands = ctx.candidates()[: node.limit]
        return [
            Call(ctx.model, self.messages(ctx, {"candidate": clip(c.text)}), seed_offset=i,
                 key=str(i))
            for i, c in enumerate(cands)
        ]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        targets = ctx.candidates()
        cands = [
            Candidate(text=comps[0].text.strip(), model=ctx.model,
                      meta={"target": targets[i].text})
            for i, comps in enumerate(results) if comps
        ]
        return self.output(ctx, cands)
