"""refiner: critique-then-revise on the best input candidate, ``rounds`` times (Self-Refine).

Each round is two steps in the compiled DAG: ``NODE@rK.critique`` and ``NODE@rK.revise``
(the last revise step is named ``NODE``).
"""

from __future__ import annotations

from typing import ClassVar

from ..spec import BaseNode, RefinerNode
from ..types import Candidate, Completion, StepOutput
from .base import ANSWER_INSTRUCTION, Call, Role, StepContext, StepPlan, clip
from .critic import CRITIC_SYSTEM, CRITIC_USER


class Refiner(Role):
    name = "refiner"
    streams = True
    override_phases: ClassVar[frozenset[str]] = frozenset({"revise"})
    placeholders: ClassVar[dict[str, set[str]]] = {
        "critique": {"question", "context", "candidate"},
        "revise": {"question", "context", "candidate", "critique"},
    }
    system_prompt: ClassVar[dict[str, str]] = {
        "critique": CRITIC_SYSTEM,
        "revise": "Improve the solution using the critique. " + ANSWER_INSTRUCTION,
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "critique": CRITIC_USER,
        "revise": "Problem: {question}\n\nPrevious solution:\n{candidate}\n\n"
        "Critique:\n{critique}\n\nImproved solution:",
    }

    def unroll(self, node: BaseNode) -> list[StepPlan]:
        assert isinstance(node, RefinerNode)
        plans: list[StepPlan] = []
        for r in range(1, node.rounds + 1):
            plans.append(StepPlan(f"@r{r}.critique", "critique", r))
            last = r == node.rounds
            plans.append(StepPlan("" if last else f"@r{r}.revise", "revise", r))
        return plans

    def node_models(self, node: BaseNode, default: str | None) -> list[str]:
        assert isinstance(node, RefinerNode)
        models = super().node_models(node, default)
        return [*models, node.critic_model] if node.critic_model else models

    def _critic_model(self, ctx: StepContext) -> str:
        return ctx.models[1] if len(ctx.models) > 1 else ctx.models[0]

    def calls(self, ctx: StepContext) -> list[Call]:
        if ctx.phase == "critique":
            cands = ctx.candidates()
            if not cands:
                return []
            msgs = self.messages(ctx, {"candidate": clip(cands[0].text)})
            return [Call(self._critic_model(ctx), msgs)]
        crit = ctx.inputs[0]
        if not crit.candidates:
            return []
        values = {"context": "", "candidate": clip(crit.candidates[0].meta["target"]),
                  "critique": clip(crit.candidates[0].text)}
        return [Call(ctx.model, self.messages(ctx, values))]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        if ctx.phase == "critique":
            cands = ctx.candidates()
            if not results or not results[0]:
                return StepOutput(step="", node=ctx.node_name, kind="critique")
            crit = Candidate(text=results[0][0].text.strip(), model=self._critic_model(ctx),
                             meta={"target": cands[0].text, "target_candidate": cands[0]})
            return StepOutput(step="", node=ctx.node_name, kind="critique", candidates=[crit])
        if not results or not results[0]:
            return self.passthrough(ctx)
        return self.output(ctx, [self.answer(ctx, results[0][0])], round=ctx.round)

    def passthrough(self, ctx: StepContext) -> StepOutput:
        if ctx.phase == "critique":
            cands = ctx.candidates()
            meta = {"target": cands[0].text, "target_candidate": cands[0]} if cands else {}
            crit = [Candidate(text="", meta=meta)] if cands else []
            return StepOutput(step="", node=ctx.node_name, kind="critique", candidates=crit)
        crit = ctx.inputs[0]
        if crit.candidates and "target_candidate" in crit.candidates[0].meta:
            return self.output(ctx, [crit.candidates[0].meta["target_candidate"]])
        return self.output(ctx, [])
