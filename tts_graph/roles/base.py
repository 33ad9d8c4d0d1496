"""The role interface. A role is pure: (question, input outputs, node config) → calls, and
(the calls' completions) → a step output. It knows nothing of backends, HTTP, threads or caches.

To add a role, subclass ``Role`` and register it under the ``tts_graph.roles`` entry point
(or call ``tts_graph.roles.registry.register_role``). Its node uses ``role: <name>`` and puts
its own settings under ``params:``, which the role validates with ``params_model``.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from ..answers import extract_answer
from ..prompts import TemplateError, render
from ..spec import AdaptiveSamples, BaseNode
from ..types import Candidate, Completion, Message, OutputKind, StepOutput
from ..types import Role as MessageRole

MAX_CANDIDATE_CHARS = 1500


@dataclass(frozen=True, slots=True)
class Call:
    """One request for ``n`` samples of ``messages`` from the model bound as ``model``.

    ``adaptive`` draws between ``adaptive.min`` and ``adaptive.max`` samples and stops when
    the leading answer is settled; ``first_k`` keeps the first ``k`` samples that finish and
    cancels the rest. ``seed_offset`` keeps seeds distinct between calls of one step.
    """

    model: str
    messages: tuple[Message, ...]
    n: int = 1
    adaptive: AdaptiveSamples | None = None
    first_k: int | None = None
    seed_offset: int = 0
    key: str = ""


@dataclass(frozen=True)
class StepPlan:
    """One step of an unrolled node: ``suffix`` names it (``""`` for the node's last step)."""

    suffix: str
    phase: str = "main"
    round: int = 1
    #: later steps depend on the step before; ``with_inputs`` adds the node's inputs too
    with_inputs: bool = False


@dataclass
class StepContext:
    """What a role sees when it runs one step."""

    question: str
    node_name: str
    node: BaseNode
    phase: str
    round: int
    models: tuple[str, ...]
    extract: str
    inputs: list[StepOutput]
    params: BaseModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.models[0]

    def candidates(self, unique: bool = True) -> list[Candidate]:
        """Answer candidates of all inputs. ``unique`` keeps the first of identical texts
        (a judge needs to see each solution once; a vote must count every sample)."""
        seen: set[str] = set()
        out: list[Candidate] = []
        for inp in self.inputs:
            if inp.kind != "answer":
                continue
            for cand in inp.candidates:
                if unique and cand.text in seen:
                    continue
                seen.add(cand.text)
                out.append(cand)
        return out

    def context_text(self) -> str:
        """Plans, critiques and unit tests from inputs, as a block to put before the
        question."""
        if not self.inputs:  # a first step: nothing to quote
            return ""
        parts: list[str] = []
        for inp in self.inputs:
            if inp.kind == "plan" and inp.candidates:
                parts.append("Plan:\n" + inp.candidates[0].text.strip())
            elif inp.kind == "critique" and inp.candidates:
                notes = "\n".join("- " + c.text.strip() for c in inp.candidates)
                parts.append("Feedback on earlier attempts:\n" + notes)
            elif inp.kind == "tests" and inp.candidates:
                tests = "\n".join("- " + t for t in inp.candidates[0].meta.get("tests", []))
                parts.append("Your response should pass the following unit tests:\n" + tests)
        return "".join(p + "\n\n" for p in parts)


def format_candidates(cands: list[Candidate], label: str = "Solution") -> str:
    return "\n\n".join(
        f"[{label} {i}]\n{clip(c.text)}" for i, c in enumerate(cands, start=1)
    )


def clip(text: str, limit: int = MAX_CANDIDATE_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Role(ABC):
    """Base of every role. Subclasses set ``name`` and the default prompts, and implement
    ``calls`` and ``finish``."""

    name: ClassVar[str]
    output_kind: ClassVar[OutputKind] = "answer"
    calls_model: ClassVar[bool] = True
    #: placeholders the role's templates may use, per phase
    placeholders: ClassVar[dict[str, set[str]]] = {"main": {"question", "context"}}
    system_prompt: ClassVar[dict[str, str]] = {}
    user_prompt: ClassVar[dict[str, str]] = {}
    #: validates ``params:`` of a custom-role node
    params_model: ClassVar[type[BaseModel] | None] = None
    #: the phases that ``prompts:`` overrides apply to
    override_phases: ClassVar[frozenset[str]] = frozenset({"main"})
    #: the step's answer text is the text of its completion when it makes one call for one
    #: sample, so the graph's answer may stream token by token when this is its output step
    streams: ClassVar[bool] = False

    def unroll(self, node: BaseNode) -> list[StepPlan]:
        """Steps this node becomes; the last one carries the node's name."""
        return [StepPlan("")]

    def node_models(self, node: BaseNode, default: str | None) -> list[str]:
        """Model bindings this node calls (empty for roles without model calls)."""
        if not (self.calls_model and node.calls_model):
            return []
        model = getattr(node, "model", None) or default
        return [model] if model else []

    def override_placeholders(self, node: BaseNode) -> set[str]:
        """Placeholders a ``prompts:`` override of this node may use."""
        names: set[str] = set()
        for phase in self.override_phases:
            names |= self.placeholders.get(phase, {"question", "context"})
        return names

    @abstractmethod
    def calls(self, ctx: StepContext) -> list[Call]:
        """Requests to send for this step (may be empty)."""

    @abstractmethod
    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        """Turn the completions (one list per call, in call order) into the step's output."""

    # ----------------------------------------------------------------- helpers for subclasses

    def messages(self, ctx: StepContext, values: dict[str, str], phase: str | None = None
                 ) -> tuple[Message, ...]:
        phase = phase or ctx.phase
        values = {"question": ctx.question, "context": ctx.context_text(), **values}
        system = self.system_prompt.get(phase)
        user = self.user_prompt[phase]
        if phase in self.override_phases and ctx.node.prompts is not None:
            system = ctx.node.prompts.system if ctx.node.prompts.system is not None else system
            user = ctx.node.prompts.user if ctx.node.prompts.user is not None else user
        msgs: list[Message] = []
        if system:
            msgs.append(_fixed_message("system", system)
                        or Message("system", render(system, values)))
        msgs.append(Message("user", render(user, values)))
        return tuple(msgs)

    def output(self, ctx: StepContext, cands: list[Candidate], **meta: Any) -> StepOutput:
        # ``meta`` is this call's own dict (keyword arguments always are): no copy
        return StepOutput(step="", node=ctx.node_name, kind=self.output_kind,
                          candidates=cands, meta=meta)

    def answer(self, ctx: StepContext, comp: Completion, model: str | None = None) -> Candidate:
        return Candidate(text=comp.text, answer=extract_answer(comp.text, ctx.extract),
                         model=model or ctx.model)

    def passthrough(self, ctx: StepContext) -> StepOutput:
        """The output when this step cannot call its model (budget spent, timeout): the
        best that the inputs already hold."""
        if self.output_kind != "answer":
            return self.output(ctx, [])
        return self.output(ctx, ctx.candidates())


@functools.lru_cache(maxsize=1024)
def _fixed_message(role: MessageRole, template: str) -> Message | None:
    """The message of a template without placeholders (most system prompts), made once and
    shared (a message is immutable); None for a template that needs values."""
    try:
        return Message(role, render(template, {}))
    except TemplateError:
        return None


ANSWER_INSTRUCTION = "End with the final answer on its own line as 'Answer: <answer>'."
