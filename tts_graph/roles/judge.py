"""judge: picks the best candidate. ``select``: one listwise call naming the best;
``score``: one call per candidate giving a 1-10 score."""

from __future__ import annotations

import re
from typing import ClassVar

from ..spec import BaseNode, JudgeNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext, clip, format_candidates

_NUM = re.compile(r"\d+(?:\.\d+)?")


def first_number(text: str, lo: float, hi: float) -> float | None:
    for m in _NUM.finditer(text):
        value = float(m.group(0))
        if lo <= value <= hi:
            return value
    return None


class Judge(Role):
    name = "judge"
    placeholders: ClassVar[dict[str, set[str]]] = {
        "select": {"question", "context", "candidates", "n"},
        "score": {"question", "context", "candidate"},
    }
    system_prompt: ClassVar[dict[str, str]] = {
        "select": "You are a judge. Decide which solution is correct.",
        "score": "You are a judge. Rate how likely the solution is correct.",
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "select": "Problem: {question}\n\n{candidates}\n\n"
        "Which solution is correct? Reply with its number (1 to {n}) as 'Best: <number>'.",
        "score": "Problem: {question}\n\nSolution:\n{candidate}\n\n"
        "Rate its correctness from 1 to 10. Reply as 'Score: <number>'.",
    }

    def _mode(self, ctx: StepContext) -> str:
        node = ctx.node
        assert isinstance(node, JudgeNode)
        return node.mode

    override_phases: ClassVar[frozenset[str]] = frozenset({"select", "score"})

    def override_placeholders(self, node: BaseNode) -> set[str]:
        assert isinstance(node, JudgeNode)
        return self.placeholders[node.mode]

    def calls(self, ctx: StepContext) -> list[Call]:
        cands = ctx.candidates()
        if len(cands) <= 1:
            return []  # nothing to choose between
        if self._mode(ctx) == "select":
            values = {"candidates": format_candidates(cands), "n": str(len(cands))}
            return [Call(ctx.model, self.messages(ctx, values, "select"))]
        return [
            Call(ctx.model, self.messages(ctx, {"candidate": clip(c.text)}, "score"),
                 seed_offset=i, key=str(i))
            for i, c in enumerate(cands)
        ]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        cands = ctx.candidates()
        if not results:
            return self.output(ctx, cands, judged=False)
        if self._mode(ctx) == "select":
            pick = first_number(results[0][0].text, 1, len(cands)) if results[0] else None
            if pick is None or pick != int(pick):
                return self.output(ctx, cands, judged=False, raw=results[0][0].text)
            i = int(pick) - 1
            chosen = Candidate(cands[i].text, cands[i].answer, 1.0, cands[i].model,
                               dict(cands[i].meta))
            return self.output(ctx, [chosen, *cands[:i], *cands[i + 1 :]], judged=True,
                               pick=i + 1)
        scored: list[Candidate] = []
        for cand, comps in zip(cands, results, strict=True):
            score = first_number(comps[0].text, 1, 10) if comps else None
            scored.append(Candidate(cand.text, cand.answer, score, cand.model, dict(cand.meta)))
        order = sorted(range(len(scored)), key=lambda j: -(scored[j].score or 0.0))
        return self.output(ctx, [scored[j] for j in order], judged=True)
