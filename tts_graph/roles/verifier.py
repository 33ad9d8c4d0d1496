"""verifier: a yes/no verdict per candidate; keeps the passing ones (all if none pass)."""

from __future__ import annotations

import re
from typing import ClassVar

from ..spec import VerifierNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext, clip

_VERDICT = re.compile(r"\b(yes|no|correct|incorrect|wrong)\b", re.IGNORECASE)


def verdict(text: str) -> bool | None:
    m = _VERDICT.search(text)
    if not m:
        return None
    return m.group(1).lower() in ("yes", "correct")


class Verifier(Role):
    name = "verifier"
    placeholders: ClassVar[dict[str, set[str]]] = {"main": {"question", "context", "candidate"}}
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "You are a verifier. Check whether the solution's final answer is correct."
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "Problem: {question}\n\nSolution:\n{candidate}\n\n"
        "Is the final answer correct? Reply 'Verdict: yes' or 'Verdict: no'."
    }

    def calls(self, ctx: StepContext) -> list[Call]:
        return [
            Call(ctx.model, self.messages(ctx, {"candidate": clip(c.text)}), seed_offset=i,
                 key=str(i))
            for i, c in enumerate(ctx.candidates())
        ]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        node = ctx.node
        assert isinstance(node, VerifierNode)
        # each distinct text was checked once; every sample keeps its verdict, so a vote
        # downstream still counts duplicates
        verdicts: dict[str, bool | None] = {}
        for cand, comps in zip(ctx.candidates(), results, strict=False):
            verdicts[cand.text] = verdict(comps[0].text) if comps else None
        checked: list[Candidate] = []
        for cand in ctx.candidates(unique=False):
            ok = verdicts.get(cand.text)
            score = 1.0 if ok else 0.0 if ok is False else 0.5
            checked.append(Candidate(cand.text, cand.answer, score, cand.model,
                                     {**cand.meta, "verdict": ok}))
        passing = [c for c in checked if c.meta["verdict"]]
        passed = len(passing)
        if node.first_k is not None:  # Archon's first_k: the first k that pass
            passing = passing[:node.first_k]
        if node.keep == "passing" and passing:
            return self.output(ctx, passing, passed=passed)
        order = sorted(range(len(checked)), key=lambda j: -(checked[j].score or 0.0))
        return self.output(ctx, [checked[j] for j in order], passed=passed)
