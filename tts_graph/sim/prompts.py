"""Prompt reading: what one request asks (its ``Situation``), recognised from the built-in
role prompts of ``tts_graph/roles``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..answers import normalize_number
from ..errors import BackendError
from ..types import Message
from .questions import SimQuestion, parse_tag


@dataclass(frozen=True)
class Situation:
    """What one request asks, read from its prompt."""

    kind: str  # solve concise fuse debate refine select score verify rank critic plan
    q: SimQuestion
    shown: tuple[str | None, ...] = ()  # candidates' answers, in prompt order
    own: str | None = None  # debate: own previous answer; refine: the previous answer
    plan_bonus: float = 0.0
    feedback: bool = False
    flagged: frozenset[str] = frozenset()  # answers a critique flagged as wrong
    critique_flags: bool = False  # refine: the critique says the answer is wrong

    @property
    def signature(self) -> str:
        """What the prompt shows besides the question (part of every draw's key)."""
        return repr((self.shown, self.own, round(self.plan_bonus, 4), self.feedback,
                     sorted(self.flagged), self.critique_flags))


_ANSWER = re.compile(r"Answer:\s*(\S+)")
_SOLUTION = re.compile(r"^\[Solution \d+\]$", re.MULTILINE)
_AGENT = re.compile(r"^\[Agent \d+\]$", re.MULTILINE)
_PLAN = re.compile(r"simulated plan, solver bonus \+(\d+(?:\.\d+)?)")
_FLAG = re.compile(r"the final answer (\S+) looks wrong")


def answer_of(text: str) -> str | None:
    """The number after the last "Answer:" of ``text``, normalized (None without one)."""
    found = _ANSWER.findall(text)
    return normalize_number(found[-1]) if found else None


def _blocks(text: str, marker: re.Pattern[str], end: str | None) -> list[str]:
    if end is not None and end in text:
        text = text[: text.rindex(end)]
    found = list(marker.finditer(text))
    ends = [*(m.start() for m in found[1:]), len(text)]
    return [text[m.end():e] for m, e in zip(found, ends, strict=True)]


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:] if j < 0 else text[i:j]


def _critique_flags(critique: str) -> bool:
    if "(simulated)" in critique:
        return "looks wrong" in critique
    return "no error" not in critique.lower()


def read_prompt(messages: tuple[Message, ...]) -> Situation:
    system = "\n".join(m.content for m in messages if m.role == "system")
    user = "\n".join(m.content for m in messages if m.role != "system")
    q = parse_tag(user) or parse_tag(system)
    if q is None:
        raise BackendError("the sim backend (a simulation) answers only simulated questions "
                           "tagged [sim:ID]: run it on the `sim` task (sim_task)")
    plan = [float(x) for x in _PLAN.findall(user)]
    plan_bonus = max(plan) if plan else 0.0
    feedback = "Feedback on earlier attempts:" in user
    flagged = frozenset(a for x in _FLAG.findall(user) if (a := normalize_number(x)))
    ctx = {"plan_bonus": plan_bonus, "feedback": feedback, "flagged": flagged}
    if "'Ranking:" in user:
        return Situation("rank", q, _shown(user, "\n\nRank the"))
    if "'Best: <number>'" in user:
        return Situation("select", q, _shown(user, "\n\nWhich solution is correct?"))
    if "'Score: <number>'" in user:
        return Situation("score", q, (answer_of(_between(user, "Solution:\n", "\n\nRate")),))
    if "'Verdict: yes'" in user:
        return Situation("verify", q, (answer_of(_between(user, "Solution:\n", "\n\nIs the")),))
    if "Improved solution:" in user:
        prev = answer_of(_between(user, "Previous solution:\n", "\n\nCritique:\n"))
        crit = _between(user, "\n\nCritique:\n", "\n\nImproved solution:")
        return Situation("refine", q, own=prev, critique_flags=_critique_flags(crit), **ctx)
    if user.rstrip().endswith("Critique:"):
        return Situation("critic", q, (answer_of(_between(user, "Solution:\n", "\n\nCritique:")),))
    if "numbered plan" in system:
        return Situation("plan", q)
    if "Other agents' solutions:" in user:
        own = answer_of(_between(user, "Your previous solution:\n", "\n\nOther agents'"))
        others = _between(user, "Other agents' solutions:\n", "\n\nYour updated solution:")
        shown = tuple(answer_of(b) for b in _blocks(others, _AGENT, None))
        return Situation("debate", q, shown, own=own, **ctx)
    if _SOLUTION.search(user):
        return Situation("fuse", q, _shown(user, "\n\nYour solution:"), **ctx)
    return Situation("concise" if "concisely" in system else "solve", q, **ctx)


def _shown(user: str, end: str) -> tuple[str | None, ...]:
    return tuple(answer_of(b) for b in _blocks(user, _SOLUTION, end))
