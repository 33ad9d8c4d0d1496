"""vote: majority (or score-weighted) vote over extracted answers. No model call."""

from __future__ import annotations

from ..answers import extract_answer
from ..spec import VoteNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext


def tally(cands: list[Candidate], weighted: bool = False) -> list[tuple[str, float, Candidate]]:
    """(answer, weight, first candidate with it), most votes first; ties keep first-seen order."""
    weights: dict[str, float] = {}
    first: dict[str, Candidate] = {}
    for cand in cands:
        if cand.answer is None:
            continue
        w = (cand.score if cand.score is not None else 1.0) if weighted else 1.0
        weights[cand.answer] = weights.get(cand.answer, 0.0) + w
        first.setdefault(cand.answer, cand)
    ranked = sorted(weights, key=lambda a: -weights[a])  # stable: ties keep first-seen order
    return [(a, weights[a], first[a]) for a in ranked]


class Vote(Role):
    name = "vote"
    calls_model = False

    def calls(self, ctx: StepContext) -> list[Call]:
        return []

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        node = ctx.node
        assert isinstance(node, VoteNode)
        cands = ctx.candidates(unique=False)
        if node.extract is not None:
            cands = [Candidate(c.text, extract_answer(c.text, node.extract), c.score, c.model,
                               c.meta) for c in cands]
        ranked = tally(cands, weighted=node.method == "weighted")
        total = sum(w for _, w, _ in ranked) or 1.0
        out = [
            Candidate(c.text, answer, weight / total, c.model, {**c.meta, "votes": weight})
            for answer, weight, c in ranked
        ]
        if not out:
            out = cands[:1]
        return self.output(ctx, out, votes={a: w for a, w, _ in ranked}, voters=len(cands))

    def passthrough(self, ctx: StepContext) -> StepOutput:
        return self.finish(ctx, [])
