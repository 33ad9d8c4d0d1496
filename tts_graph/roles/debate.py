"""debate: ``agents`` agents answer independently, then for ``rounds - 1`` more rounds each
sees the others' latest answers and revises (multi-agent debate). Agents take the listed
models in turn. With ``stop: consensus`` a round is skipped once all agents agree.

Each round is one step in the compiled DAG (``NODE@rK``; the last round is named ``NODE``).
The output lists every agent's final answer, the majority answer first.
"""

from __future__ import annotations

from typing import ClassVar

from ..spec import BaseNode, DebateNode
from ..types import Candidate, Completion, StepOutput
from .base import ANSWER_INSTRUCTION, Call, Role, StepContext, StepPlan, clip
from .vote import tally


class Debate(Role):
    name = "debate"
    placeholders: ClassVar[dict[str, set[str]]] = {
        "main": {"question", "context"},
        "revise": {"question", "context", "others", "own"},
    }
    override_phases: ClassVar[frozenset[str]] = frozenset({"main"})
    system_prompt: ClassVar[dict[str, str]] = {
        "main": "Solve the problem. Reason briefly, step by step. " + ANSWER_INSTRUCTION,
        "revise": "Solve the problem. Other agents' solutions are given as extra evidence; "
        "they may be wrong. " + ANSWER_INSTRUCTION,
    }
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "{context}{question}",
        "revise": "{context}{question}\n\nYour previous solution:\n{own}\n\n"
        "Other agents' solutions:\n{others}\n\nYour updated solution:",
    }

    def unroll(self, node: BaseNode) -> list[StepPlan]:
        assert isinstance(node, DebateNode)
        return [
            StepPlan("" if r == node.rounds else f"@r{r}", "main" if r == 1 else "revise", r,
                     with_inputs=True)
            for r in range(1, node.rounds + 1)
        ]

    def node_models(self, node: BaseNode, default: str | None) -> list[str]:
        assert isinstance(node, DebateNode)
        if node.models:
            return list(node.models)
        return super().node_models(node, default)

    def _agent_model(self, ctx: StepContext, agent: int) -> str:
        return ctx.models[agent % len(ctx.models)]

    def _previous(self, ctx: StepContext) -> StepOutput | None:
        for inp in ctx.inputs:
            if inp.meta.get("debate_of") == ctx.node_name:
                return inp
        return None

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, DebateNode)
        if ctx.round == 1:
            msgs = self.messages(ctx, {}, "main")
            return [
                Call(self._agent_model(ctx, a), msgs, seed_offset=a, key=str(a))
                for a in range(node.agents)
            ]
        prev = self._previous(ctx)
        if prev is None or not prev.candidates:
            return []
        if node.stop == "consensus" and prev.meta.get("consensus"):
            return []
        # agents whose first call failed (error, budget) are absent: go by each one's id
        agents: list[Candidate] = prev.meta["agents"]
        calls = []
        for j, own in enumerate(agents):
            a = _agent_id(own, j)
            others = "\n\n".join(
                f"[Agent {_agent_id(other, b) + 1}]\n{clip(other.text, 800)}"
                for b, other in enumerate(agents) if b != j
            )
            msgs = self.messages(ctx, {"own": clip(own.text, 800), "others": others},
                                 "revise")
            calls.append(Call(self._agent_model(ctx, a), msgs, seed_offset=a, key=str(a)))
        return calls

    def _output(self, ctx: StepContext, agents: list[Candidate], **meta: object) -> StepOutput:
        ranked = tally(agents)
        consensus = len(ranked) == 1 and all(c.answer is not None for c in agents)
        leaders = {a for a, _, _ in ranked[:1]}
        ordered = [c for c in agents if c.answer in leaders] + [
            c for c in agents if c.answer not in leaders
        ]
        out = self.output(ctx, ordered, round=ctx.round, consensus=consensus,
                          debate_of=ctx.node_name, agents=agents, **meta)
        return out

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        prev = self._previous(ctx)
        if not results and prev is not None:  # consensus reached earlier: carry it forward
            return self._output(ctx, list(prev.meta["agents"]), stopped_early=True)
        # one result per call: per agent in round 1, per surviving agent after
        before: list[Candidate] | None = prev.meta["agents"] if prev is not None else None
        agents = []
        for j, comps in enumerate(results):
            a = _agent_id(before[j], j) if before is not None else j
            if comps:
                cand = self.answer(ctx, comps[0], self._agent_model(ctx, a))
                cand.meta["agent"] = a
                agents.append(cand)
            elif before is not None:
                agents.append(before[j])
        return self._output(ctx, agents)

    def passthrough(self, ctx: StepContext) -> StepOutput:
        prev = self._previous(ctx)
        if prev is not None:
            return self._output(ctx, list(prev.meta["agents"]), stopped_early=True)
        return self.output(ctx, ctx.candidates())


def _agent_id(cand: Candidate, default: int) -> int:
    agent = cand.meta.get("agent", default)
    return agent if isinstance(agent, int) else default
