"""ranker: one listwise call orders the candidates; keeps the top ``top_k``. Critiques (and
plans, unit tests) among its inputs go before the problem, as ``{context}``."""

from __future__ import annotations

import re
from typing import ClassVar

from ..spec import RankerNode
from ..types import Completion, StepOutput
from .base import Call, Role, StepContext, format_candidates


def parse_ranking(text: str, n: int) -> list[int]:
    """Candidate indices (0-based) in the order the text names them; unnamed ones follow."""
    order: list[int] = []
    for m in re.finditer(r"\d+", text):
        i = int(m.group(0)) - 1
        if 0 <= i < n and i not in order:
            order.append(i)
    return order + [i for i in range(n) if i not in order]


class Ranker(Role):
    name = "ranker"
    placeholders: ClassVar[dict[str, set[str]]] = {
        "main": {"question", "context", "candidates", "n"}
    }
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "You are a judge. Rank solutions from most to least likely correct."
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "{context}Problem: {question}\n\n{candidates}\n\n"
        "Rank the {n} solutions, best first, as 'Ranking: 2 > 1 > 3'."
    }

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, RankerNode)
        cands = ctx.candidates()
        if len(cands) <= node.top_k and len(cands) <= 1:
            return []
        values = {"candidates": format_candidates(cands), "n": str(len(cands))}
        return [Call(ctx.model, self.messages(ctx, values))]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        node = ctx.node
        assert isinstance(node, RankerNode)
        cands = ctx.candidates()
        if not results or not results[0]:
            return self.output(ctx, cands[: node.top_k], ranked=False)
        order = parse_ranking(results[0][0].text, len(cands))
        return self.output(ctx, [cands[i] for i in order[: node.top_k]], ranked=True)
