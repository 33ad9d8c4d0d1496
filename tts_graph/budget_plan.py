"""Plan a whole graph under a per-query budget, then spend it in waves.

At query start the planner dry-runs the graph: every step's calls are built by its role from
synthetic worst-case inputs (each candidate counted as exactly its step's ``max_tokens`` in the
prompts that quote it), so a step's worst case counts how many candidates its inputs will
really have. Every step starts at its narrowest width and steps widen, upstream first, only
while the worst case of the *whole* graph still fits: what downstream steps (above all the
output) need is reserved before anything upstream widens. Prompt tokens are estimated from what
the query has drawn (``prompt_estimate``): once replies come back with the server's usage,
later waves reserve what is really needed.

While the query runs, the same dry run, fed the real outputs of finished steps and the real
completions of running ones, is the "plan hold": budget kept for steps not yet reserved. A draw
is granted only if its own worst case fits beside that hold, so the output can always run.
As calls return and are settled against what they really used, a narrowed step draws further
samples (the next seeds in order) while they still fit: the budget granted is spent. Once a
running step's first replies are back, its unseen samples are quoted in the dry runs at what
those replies cost there (``QUOTE_MARGIN``), not at ``max_tokens``; one that runs longer is
left out of later prompts when its step ends, if the plan no longer fits with it.

Where no plan fits by the counter's first estimate, ranged steps draw their narrowest first
and the query plans again with each reply (the estimate learns the server's usage): a plan
found then is run as one found at the start ("late"); until then calls are only guarded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from .budget import Costing, QueryBudget
from .compile import CompiledGraph, Step
from .prompt_estimate import PromptEstimate, synthetic_text
from .roles.base import Call, StepContext
from .spec import AdaptiveSamples, FirstFinishNode, FuserNode, SolverNode
from .types import Completion, Message, StepOutput

Counter = Callable[[str, tuple[Message, ...]], int]  # (model, messages) -> prompt tokens
CostingOf = Callable[[str], Costing]

#: a sample drawn beyond the plan with a cut ``max_tokens`` gets at least this much over the
#: longest reply its step has drawn (all of which ended by themselves): on the replies seen
#: here a reply rarely runs a quarter longer than the longest of its step's first ones
CUT_MARGIN = 1.25

#: where a planned query's running step has drawn replies, a sample it has yet to return is
#: reserved in the prompts that quote it at this much over the costliest quote of its step
#: so far (plus ``QUOTE_SLACK`` tokens), not at ``max_tokens``: a reply's text is often far
#: shorter than its cap, and shorter still than its completion tokens where a model reasons
#: in tokens it does not return (the simulated models). One that runs longer is left out of
#: those prompts when its step ends, if the plan no longer fits with it (``keep_fitting``)
QUOTE_MARGIN = 1.25
QUOTE_SLACK = 2


@dataclass
class Amount:
    """Tokens, dollars and FLOPs together (one per budget dimension)."""

    tokens: int = 0
    cost: float = 0.0
    flops: float = 0.0

    def add(self, n: int, prompt: int, max_tokens: int, costing: Costing) -> None:
        self.tokens += n * (prompt + max_tokens)
        self.cost += n * costing.cost(prompt, max_tokens)
        self.flops += n * costing.flops(prompt, max_tokens)

    def plus(self, other: Amount) -> None:
        self.tokens += other.tokens
        self.cost += other.cost
        self.flops += other.flops

    def to_dict(self) -> dict[str, float | int]:
        return {"tokens": self.tokens, "cost_usd": self.cost, "flops": self.flops}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Amount:
        return cls(int(data["tokens"]), float(data["cost_usd"]), float(data["flops"]))


def width_range(step: Step) -> tuple[int, int] | None:
    """(narrowest, widest) samples per call of a step that the budget may choose between;
    None where the width is fixed by the graph (one sample, debate agents, judge scores)."""
    node = step.spec
    if isinstance(node, SolverNode):
        if isinstance(node.samples, AdaptiveSamples):
            return node.samples.min, node.samples.max
        return (1, node.samples) if node.samples > 1 else None
    if isinstance(node, FirstFinishNode):
        return (node.k, node.samples) if node.samples > node.k else None
    if isinstance(node, FuserNode) and node.samples > 1:
        return 1, node.samples
    return None


def call_width(call: Call, width: int | None) -> int:
    """Samples one call draws at a step width (the whole call's worst case)."""
    if width is None:
        return call.n
    if call.first_k is not None:
        return max(call.first_k, min(call.n, width))
    return max(1, min(call.n, width))


def synthetic(n: int, max_tokens: int, start: int, tag: int) -> list[Completion]:
    """``n`` worst-case completions of step ``tag``, distinct (a judge sees each text once),
    each counted as ``max_tokens`` wherever a later prompt quotes it."""
    return [Completion(text=synthetic_text(tag, start + i, max_tokens),
                       completion_tokens=max_tokens) for i in range(n)]


@dataclass
class CallState:
    """What one running call has drawn, holds in flight, and has yet to reserve."""

    model: str
    messages: tuple[Message, ...]
    prompt_tokens: int
    max_tokens: int
    unreserved: int
    #: a first-finish call keeps this many of its samples: all that reach later steps
    keeps: int | None = None
    inflight: int = 0
    #: the ``max_tokens`` of in-flight samples drawn below the step's (a "cut" draw, or one
    #: the budget narrowed when it was sent): their worst case is that, not ``max_tokens``
    inflight_caps: list[int] = field(default_factory=list)
    #: the ``max_tokens`` of in-flight samples sent while their place in later prompts was
    #: reserved at their cap, not at ``quote_of``'s lower figure: they stay quoted at it until
    #: they return (``keep_fitting`` never leaves them out); ``inflight_caps`` has the others
    inflight_fixed: list[int] = field(default_factory=list)
    drawn: list[Completion] = field(default_factory=list)


@dataclass
class StepState:
    """One step's place in the plan and what it did."""

    wanted: int
    planned: int
    lo: int
    drawn: int = 0
    phase: str = "pending"  # pending → running → done
    ctx: StepContext | None = None
    calls: list[CallState] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: a short code for each reason (``WHY``), for counting them over many queries
    why: list[str] = field(default_factory=list)
    #: a draw beyond the plan was wanted and did not fit
    short: bool = False
    #: the budget gave a call fewer samples or tokens than granted when it was sent, or
    #: refused it (an adaptive step that settles early is not narrowed)
    narrowed: bool = False
    #: samples drawn beyond the plan with ``max_tokens`` cut to fit (``BudgetLedger.grant``),
    #: the lowest cap given, and how many of them the cap cut off
    cut_draws: int = 0
    cut_cap: int = 0
    cut_off: int = 0
    #: ids of drawn completions whose place in later prompts was reserved below their
    #: ``max_tokens`` (``QUOTE_MARGIN``), and how many of them ``keep_fitting`` left out
    lean: set[int] = field(default_factory=set)
    dropped: int = 0

    def note(self, code: str, reason: str) -> None:
        self.why.append(code)
        self.reasons.append(reason)


class GraphPlanner:
    """Dry runs of one query's graph (the question fixed), under given step widths."""

    def __init__(self, graph: CompiledGraph, question: str, count: PromptEstimate,
                 costing: CostingOf) -> None:
        self.graph = graph
        self.question = question
        self.count = count
        self.costing = costing
        self.tags = {sid: i for i, sid in enumerate(graph.order)}
        #: what an unseen sample of a running call costs where a later prompt quotes it,
        #: as the ``max_tokens`` its synthetic reply says; None: its step's ``max_tokens``
        #: (the ledger of a planned query sets it: ``BudgetLedger.quote_of``)
        self.quote_of: Callable[[str, CallState], int | None] = lambda _sid, _c: None
        #: calls each pending step made in the last dry run
        self.calls_made: dict[str, int] = {}
        # dry runs repeat (every grant and wave re-runs the graph): a running step's output
        # is a function of how many samples each call drew and has left (drawn only grows),
        # a pending step's of its width, its inputs (the same objects) and the estimate
        self._running: dict[tuple[Any, ...], StepOutput] = {}
        self._pending: dict[tuple[Any, ...],
                            tuple[StepOutput, Amount, int | None, list[StepOutput]]] = {}

    def context(self, step: Step, inputs: list[StepOutput]) -> StepContext:
        return StepContext(
            question=self.question, node_name=step.node, node=step.spec, phase=step.phase,
            round=step.round, models=step.models, extract=step.extract, inputs=inputs,
            params=step.params,
        )

    def worst_case(self, states: dict[str, StepState], outputs: dict[str, StepOutput],
                   widths: dict[str, int | None], only: str | None = None) -> Amount:
        """What the steps not yet reserved may still cost: pending steps at ``widths``,
        and the calls of running steps not yet sent. Finished steps feed downstream prompts
        with their real outputs; running ones with what they drew plus worst-case samples
        for what is in flight or still to draw. ``only``: what that one step may cost."""
        need = Amount()
        total = need
        outs: dict[str, StepOutput] = {}
        for sid in self.graph.order:
            step = self.graph.steps[sid]
            st = states[sid]
            need = total if only in (None, sid) else Amount()
            if st.phase == "done" and sid in outputs:
                outs[sid] = outputs[sid]
                continue
            if st.phase == "running" and st.ctx is not None:
                for c in st.calls:
                    need.add(c.unreserved, c.prompt_tokens, c.max_tokens, self.costing(c.model))
                quotes = [self.quote_of(sid, c) for c in st.calls]
                rkey = (sid, *((len(c.drawn), c.inflight + c.unreserved, q,
                                tuple(c.inflight_fixed), *c.inflight_caps)
                               for c, q in zip(st.calls, quotes, strict=True)))
                done = self._running.get(rkey)
                if done is not None:
                    outs[sid] = done
                    continue
                results = []
                for i, (c, q) in enumerate(zip(st.calls, quotes, strict=True)):
                    more = c.inflight + c.unreserved
                    drawn = c.drawn
                    if c.keeps is not None:
                        # a first-finish call keeps only ``keeps`` samples (the first to
                        # finish): the others never reach a later step; count the longest
                        drawn = sorted(drawn, key=lambda d: -d.completion_tokens)[: c.keeps]
                        more = min(more, max(0, c.keeps - len(drawn)))
                    start = 1000 * i + len(c.drawn)
                    # in-flight samples sent before their step's replies said what they cost
                    # are quoted at the cap they were sent with; the others, and those still
                    # to draw, at what those replies suggest where the ledger says (and at
                    # their own lower cap, a cut draw's, at most)
                    top = c.max_tokens if q is None else min(q, c.max_tokens)
                    quoted = ([*c.inflight_fixed, *(min(cap, top) for cap in c.inflight_caps)]
                              [:more] if c.keeps is None else [])
                    results.append([*drawn, *(s for j, cap in enumerate(quoted) for s in
                                              synthetic(1, cap, start + j, self.tags[sid])),
                                    *synthetic(more - len(quoted), top,
                                               start + len(quoted), self.tags[sid])])
                outs[sid] = self._running[rkey] = self._finish(step, st.ctx, results)
                continue
            inputs = [outs[d] for d in step.deps]
            pkey = (sid, widths.get(sid), self.count.version, *map(id, inputs))
            hit = self._pending.get(pkey)
            if hit is None:
                hit = self._pending[pkey] = self._dry(step, inputs, widths.get(sid))
            out, amount, made, _ = hit
            outs[sid] = out
            need.plus(amount)
            if made is not None:
                self.calls_made[sid] = made
        return total

    def _dry(self, step: Step, inputs: list[StepOutput], width: int | None
             ) -> tuple[StepOutput, Amount, int | None, list[StepOutput]]:
        """A pending step's dry run at ``width``: its output on worst-case replies, their
        worst case, and how many calls it makes (None: the role failed). The inputs are kept
        with it, so the ids in its memo key stay theirs."""
        role = step.role
        ctx = self.context(step, inputs)
        need = Amount()
        try:
            calls = role.calls(ctx)
        except Exception:  # the real run reports a role's failure; a plan skips the step
            return role.passthrough(ctx), need, None, inputs
        results = []
        mt = step.sampling.max_tokens
        for i, call in enumerate(calls):
            n = call_width(call, width)
            need.add(n, self.count(call.model, call.messages), mt, self.costing(call.model))
            kept = n if call.first_k is None else min(n, call.first_k)
            results.append(synthetic(kept, mt, 1000 * i, self.tags[step.id]))
        return self._finish(step, ctx, results), need, len(calls), inputs

    @staticmethod
    def _finish(step: Step, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        try:
            if any(results):
                return step.role.finish(ctx, results)
        except Exception:  # a role that cannot read synthetic text: its inputs pass on
            pass
        return step.role.passthrough(ctx)


def fits(need: Amount, budget: QueryBudget) -> bool:
    """Whether ``need`` fits in what the budget has not spent or reserved."""
    b = budget.budget
    if b.max_tokens_per_query is not None and \
            need.tokens > b.max_tokens_per_query - budget.used_tokens - budget.held_tokens:
        return False
    if b.max_cost_usd_per_query is not None and \
            need.cost > b.max_cost_usd_per_query - budget.used_cost - budget.held_cost:
        return False
    return not (b.max_flops_per_query is not None and
                need.flops > b.max_flops_per_query - budget.used_flops - budget.held_flops)


def plan_widths(planner: GraphPlanner, budget: QueryBudget, states: dict[str, StepState],
                outputs: dict[str, StepOutput] | None = None) -> bool:
    """Choose each pending step's planned width; False when not even the narrowest graph
    fits (steps already running or done count as they stand, with ``outputs``).

    Widening goes round the steps in graph order, one sample at a time, so upstream steps
    share what is left after the narrowest whole graph (output included) is reserved."""
    outputs = outputs if outputs is not None else {}
    widths: dict[str, int | None] = {
        sid: (st.lo if st.wanted > 1 or st.lo > 1 else None) for sid, st in states.items()
    }
    ranged = [sid for sid in planner.graph.order
              if widths[sid] is not None and states[sid].phase == "pending"]
    if not fits(planner.worst_case(states, outputs, widths), budget):
        return False
    out = planner.graph.output
    if planner.graph.steps[out].calls_model and not planner.calls_made.get(out):
        # the output would make no call (a judge shown one candidate): widen upstream until
        # it does, if any plan that fits lets it, so the graph's last step really runs
        trial = dict(widths)
        grow = [sid for sid in ranged if states[sid].lo < states[sid].wanted]
        reached = False
        while grow and not reached:
            still = []
            for sid in grow:
                w = trial[sid]
                assert w is not None
                trial[sid] = w + 1
                if not fits(planner.worst_case(states, outputs, trial), budget):
                    trial[sid] = w
                    continue
                reached = bool(planner.calls_made.get(out))
                if reached:
                    break
                if w + 1 < states[sid].wanted:
                    still.append(sid)
            grow = still
        if reached:
            widths = trial
            for sid in ranged:  # the output's call needs these widths: never narrower
                w = widths[sid]
                assert w is not None
                states[sid].lo = w
        else:
            full = {sid: (st.wanted if w is not None else None)
                    for (sid, w), st in zip(widths.items(), states.values(), strict=True)}
            planner.worst_case(states, outputs, full)
            if planner.calls_made.get(out):
                return False  # the output calls at full width, but no plan that fits lets it
    open_ = [sid for sid in ranged if states[sid].lo < states[sid].wanted]
    # every open step L samples wider fits for L up to some level (more samples never need
    # less): bisect it, then widen one sample at a time from there, as round by round from
    # the narrowest would (no step stops short of that level: every narrower mix fits)
    base = dict(widths)

    def level(n: int) -> dict[str, int | None]:
        return {**base, **{sid: min(cast(int, base[sid]) + n, states[sid].wanted)
                           for sid in open_}}

    lo_l, hi_l = 0, max((states[sid].wanted - cast(int, base[sid]) for sid in open_),
                        default=0)
    if hi_l and fits(planner.worst_case(states, outputs, level(hi_l)), budget):
        lo_l = hi_l
    while hi_l - lo_l > 1:
        mid = (lo_l + hi_l) // 2
        lo_l, hi_l = (mid, hi_l) if fits(planner.worst_case(states, outputs, level(mid)),
                                         budget) else (lo_l, mid)
    widths = level(lo_l)
    open_ = [sid for sid in open_ if cast(int, widths[sid]) < states[sid].wanted]
    while open_:
        still: list[str] = []
        for sid in open_:
            w = widths[sid]
            assert w is not None
            widths[sid] = w + 1
            if fits(planner.worst_case(states, outputs, widths), budget):
                if w + 1 < states[sid].wanted:
                    still.append(sid)
            else:
                widths[sid] = w
        open_ = still
    for sid in ranged:
        w = widths[sid]
        assert w is not None
        states[sid].planned = w
    return True


def initial_states(graph: CompiledGraph) -> dict[str, StepState]:
    out: dict[str, StepState] = {}
    for sid in graph.order:
        rng = width_range(graph.steps[sid])
        lo, hi = rng if rng is not None else (1, 1)
        out[sid] = StepState(wanted=hi, planned=hi, lo=lo)
    return out


def plan_budget_fits(graph: CompiledGraph, question: str = "") -> bool | None:
    """Whether the narrowest whole graph fits the declared budget, counted with the default
    token estimate (``validate`` uses it); None when the graph declares no cap."""
    need = narrowest_need(graph, question)
    return None if need is None else fits(need, QueryBudget(graph.spec.budget))


def narrowest_need(graph: CompiledGraph, question: str = "") -> Amount | None:
    """The worst case of the whole graph at its narrowest, with the default token estimate
    (about 3 characters a token); None when the graph declares no cap."""
    b = graph.spec.budget
    if b.max_tokens_per_query is None and b.max_cost_usd_per_query is None \
            and b.max_flops_per_query is None:
        return None
    from .backends.base import Backend  # the default counter, without a backend instance

    def count(_model: str, messages: tuple[Message, ...]) -> int:
        return Backend.count_tokens(cast(Backend, None), messages)

    costings = {name: costing_of(m) for name, m in graph.spec.models.items()}
    planner = GraphPlanner(graph, question, PromptEstimate(count), costings.__getitem__)
    states = initial_states(graph)
    widths: dict[str, int | None] = {
        sid: (st.lo if st.wanted > 1 or st.lo > 1 else None) for sid, st in states.items()}
    return planner.worst_case(states, {}, widths)


def costing_of(model_spec: Any) -> Costing:
    """The declared price and parameter count of a model entry (as its binding uses)."""
    price = getattr(model_spec, "price", None)
    return Costing(
        price_in=(price.input_per_mtok / 1e6) if price is not None else 0.0,
        price_out=(price.output_per_mtok / 1e6) if price is not None else 0.0,
        params=getattr(model_spec, "params", None),
    )


class BudgetLedger:
    """One query's plan, kept current while it runs: which steps hold what, and the plan
    hold for the rest. Methods are synchronous, so a check and the reservation it allows
    happen with no other task in between."""

    def __init__(self, graph: CompiledGraph, question: str, budget: QueryBudget,
                 count: Counter, costing: CostingOf, outputs: dict[str, StepOutput]) -> None:
        self.graph = graph
        self.budget = budget
        #: prompt tokens as the server counts them, learnt from the query's replies
        self.estimate = PromptEstimate(count)
        self.planner = GraphPlanner(graph, question, self.estimate, costing)
        self.costing = costing
        self.states = initial_states(graph)
        self.outputs = outputs  # the query's finished outputs (shared, filled by the executor)
        #: False: not even the narrowest whole graph fits; calls are only guarded (each
        #: reserves its worst case, narrowed or refused when it does not fit, beside the
        #: output's own share) until, with the replies' usage known, a plan fits (``_replan``)
        self.fits = plan_widths(self.planner, budget, self.states)
        #: whether a plan fitted when the query started (``fits`` may turn True later)
        self.fitted_at_start = self.fits
        self.planner.quote_of = self.quote_of
        self.in_flight = 0
        self._changed: asyncio.Future[None] | None = None
        if self.fits:
            self._hold(self.planner.worst_case(self.states, outputs, self._widths()))
            budget.note_peak()
        else:
            self._hold(self._output_share() or Amount())
        for st in self.states.values():
            if st.planned < st.wanted:
                st.note("planned_narrower", f"planned {st.planned} of {st.wanted} samples: the "
                                  "worst case of more does not fit beside what later steps need")

    def _widths(self) -> dict[str, int | None]:
        return {sid: (st.planned if st.wanted > 1 or st.lo > 1 else None)
                for sid, st in self.states.items()}

    def _hold(self, need: Amount) -> None:
        self.budget.hold_for_plan(need.tokens, need.cost, need.flops)

    # ------------------------------------------------------------------ step life cycle

    def start_step(self, sid: str, ctx: StepContext, calls: list[Call]) -> list[int]:
        """Mark a step running; returns how many samples each call draws in its first wave."""
        st = self.states[sid]
        st.phase, st.ctx = "running", ctx
        width = self._widths()[sid] if self.fits else None
        mt = self.graph.steps[sid].sampling.max_tokens
        st.calls = [CallState(call.model, call.messages,
                              self.estimate(call.model, call.messages), mt,
                              call_width(call, width), keeps=call.first_k) for call in calls]
        if not self.fits and width_range(self.graph.steps[sid]) is not None:
            # no plan fits by the counter's estimate: draw the narrowest first, so that once
            # the server's usage is known a plan may fit after all (``returned``)
            for c, call in zip(st.calls, calls, strict=True):
                if call.first_k is None:
                    c.unreserved = call_width(call, st.lo)
        if width is not None and width < st.wanted:
            # re-plan with the real inputs, often shorter than their worst case: the first
            # wave takes as many samples as now fit (a first-finish step has no later waves)
            def fits_at(w: int) -> bool:
                for c, call in zip(st.calls, calls, strict=True):
                    c.unreserved = call_width(call, w)
                self._hold(self.planner.worst_case(self.states, self.outputs, self._widths()))
                return fits(Amount(), self.budget)

            lo, hi = width, st.wanted
            if fits_at(hi):
                lo = hi
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits_at(mid) else (lo, mid)
            fits_at(lo)
        return [c.unreserved for c in st.calls]

    def finish_step(self, sid: str, refused: bool) -> None:
        """The step is done; ``refused``: the budget refused every call it had to make."""
        st = self.states[sid]
        st.phase = "done"
        if refused:
            st.note("skipped", "skipped: the budget refused its calls (its inputs pass on)")

    # ------------------------------------------------------------------------- drawing

    def grant(self, sid: str, index: int, want: int, required: bool) -> tuple[int, int]:
        """How many of ``want`` further samples of call ``index`` to reserve now, and their
        ``max_tokens``, the plan hold set to match. A required draw (within the plan) asks
        for all ``want`` with the hold as if all were drawn, and lets ``QueryBudget.reserve``
        narrow or refuse it when the plan's estimate fell short; an optional one (beyond the
        plan) gets what fits whole, maybe 0, or, when not one sample fits at the step's
        ``max_tokens``, one sample with a lower cap that its replies so far suggest it will
        not reach (``_cut_cap``). Where no plan fits, every draw asks for all ``want``."""
        st = self.states[sid]
        c = st.calls[index]
        costing = self.costing(c.model)

        def hold_for(n: int, cap: int | None = None, strict: bool = False) -> Amount | None:
            """The hold were ``n`` more samples (of ``cap`` tokens) drawn; where guarded and
            ``strict``, None when the output's share they leave does not fit."""
            saved = c.inflight, c.unreserved
            c.inflight, c.unreserved = c.inflight + n, max(0, c.unreserved - n)
            if cap is not None:
                c.inflight_caps.extend([cap] * n)
            try:
                if not self.fits:
                    return self._output_share(strict)
                return self.planner.worst_case(self.states, self.outputs, self._widths())
            finally:
                c.inflight, c.unreserved = saved
                if cap is not None:
                    del c.inflight_caps[len(c.inflight_caps) - n:]

        def need(n: int, cap: int | None = None) -> Amount:
            return hold_for(n, cap) or Amount()

        if not self.fits:
            # guarded (no plan of the whole graph fits): a draw leaves the output's own share
            # (when that alone fits), which grows with the samples drawn (the output's prompt
            # quotes them): as many whole samples as fit beside the share they leave, else one
            # cut to fit beside it; where none can, ``reserve`` narrows, cuts or refuses the
            # draw for the share, except the query's first draw when refused (the output
            # needs some input more than its share)
            def ok_g(n: int) -> bool:
                share = hold_for(n, strict=True)  # None: the share those n leave does not fit
                if share is None:
                    return False
                self._hold(share)
                return self.budget.covers(c.prompt_tokens, c.max_tokens, n, costing)

            take = want
            if not ok_g(want):
                if ok_g(1):
                    lo, hi = 1, want  # ok_g(lo) holds, ok_g(hi) does not: bisect
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        lo, hi = (mid, hi) if ok_g(mid) else (lo, mid)
                    take = lo
                else:
                    # not one whole sample: one cut to the tokens left beside its share, where
                    # any are, so the output can still run on what was drawn
                    one = hold_for(1, strict=True)
                    self._hold(one or Amount())
                    if one is not None and self.budget.covers(c.prompt_tokens, 1, 1, costing):
                        take = 1
                self.budget.exhausted = self.budget.exhausted or take < want
            self._hold(need(take))
            if self.in_flight == 0 and not any(s.drawn for s in self.states.values()) \
                    and not self.budget.covers(c.prompt_tokens, 1, 1, costing):
                self._hold(Amount())
            return take, c.max_tokens

        def ok(n: int) -> bool:
            self._hold(need(n))
            return self.budget.covers(c.prompt_tokens, c.max_tokens, n, costing)

        if ok(want):
            return want, c.max_tokens
        lo, hi = 0, want  # ok(lo) holds (0 always does), ok(hi) does not: bisect
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        if required:
            self._hold(need(want))
            return want, c.max_tokens
        if lo == 0:
            floor = self._cut_floor(sid, c)

            def ok_cap(m: int) -> bool:
                self._hold(need(1, m))
                return self.budget.covers(c.prompt_tokens, m, 1, costing)

            if floor is not None and ok_cap(floor):
                lo_m, hi_m = floor, c.max_tokens  # ok at lo_m, not at hi_m (full size)
                while hi_m - lo_m > 1:
                    mid = (lo_m + hi_m) // 2
                    lo_m, hi_m = (mid, hi_m) if ok_cap(mid) else (lo_m, mid)
                self._hold(need(1, lo_m))
                st.cut_draws += 1
                st.cut_cap = min(st.cut_cap or lo_m, lo_m)
                return 1, lo_m
        self._hold(need(lo))
        if lo < want:
            st.short = True
        return lo, c.max_tokens

    def _cut_floor(self, sid: str, c: CallState) -> int | None:
        """The lowest ``max_tokens`` a sample beyond the plan may be drawn with when one at
        the step's own does not fit: CUT_MARGIN over the longest reply the step has drawn,
        where every reply so far ended by itself (None where one was cut off at its cap,
        where the server reported no usage, or where the cut would not be below the cap).
        Such a sample is the seeded one a full draw would give wherever it ends in time; the
        worst case reserved for it, and for its place in later prompts, is the lower cap."""
        if c.keeps is not None:
            return None  # a first-finish call draws within its plan only
        drawn = [d for call in self.states[sid].calls for d in call.drawn]
        if not drawn or any(d.finish_reason == "length" or d.completion_tokens <= 0
                            for d in drawn):
            return None
        floor = math.ceil(CUT_MARGIN * max(d.completion_tokens for d in drawn)) + 1
        return floor if floor < c.max_tokens else None

    def quote_of(self, sid: str, c: CallState) -> int | None:
        """What an unseen sample of call ``c`` is reserved at where a later prompt quotes
        it (as the ``max_tokens`` of its synthetic reply; its cost there is one more):
        ``QUOTE_MARGIN`` over the costliest quote its step has drawn, plus ``QUOTE_SLACK``,
        where the whole graph is planned and every reply came with the server's usage;
        None (its ``max_tokens``) otherwise, or where that is no less."""
        if not self.fits or c.keeps is not None:
            return None  # guarded calls leave the output its worst case; first-finish: kept
        costs = []
        for call in self.states[sid].calls:
            for d in call.drawn:
                if d.completion_tokens <= 0:
                    return None  # no usage: nothing known of what its replies cost
                costs.append(self.estimate.quote_size(c.model, d.text))
        if not costs:
            return None
        q = math.ceil(QUOTE_MARGIN * max(costs)) + QUOTE_SLACK - 1
        return q if q < c.max_tokens else None

    def sent(self, sid: str, index: int, n: int, max_tokens: int) -> bool:
        """``n`` samples of call ``index`` were sent; True when their place in later prompts
        is reserved below their ``max_tokens`` (``quote_of``): pass it to ``returned``."""
        c = self.states[sid].calls[index]
        q = self.quote_of(sid, c)
        lean = q is not None and q < max_tokens
        c.inflight += n
        if not lean:
            c.inflight_fixed.extend([max_tokens] * n)
        elif max_tokens < c.max_tokens:
            c.inflight_caps.extend([max_tokens] * n)
        c.unreserved = max(0, c.unreserved - n)
        self.in_flight += 1
        return lean

    def returned(self, sid: str, index: int, n: int, comps: list[Completion],
                 max_tokens: int, lean: bool = False) -> None:
        st = self.states[sid]
        c = st.calls[index]
        c.inflight -= n
        if lean:
            st.lean.update(map(id, comps))
        # as ``sent`` listed them: lean ones below the step's cap in ``inflight_caps``
        held = c.inflight_fixed if not lean else \
            c.inflight_caps if max_tokens < c.max_tokens else None
        for _ in range(n if held is not None else 0):
            held.remove(max_tokens)
        if max_tokens < c.max_tokens:
            st.cut_off += sum(d.finish_reason == "length" for d in comps)
        c.drawn.extend(comps)
        for comp in comps:  # what the server reported: later estimates learn from it
            self.estimate.reply(comp.text, comp.completion_tokens)
            self.estimate.observed(c.model, c.messages, comp.prompt_tokens)
        c.prompt_tokens = self.estimate(c.model, c.messages)
        if not self.fits:
            self._replan()
        st.drawn += len(comps)
        self.in_flight -= 1
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    def keep_fitting(self, sid: str, results: list[list[Completion]],
                     finish: Callable[[list[list[Completion]]], StepOutput]
                     ) -> list[list[Completion]]:
        """The replies of a finished step that go on to later steps: all of them, unless a
        sample reserved in later prompts below its ``max_tokens`` (``quote_of``) ran longer
        and the rest of the plan no longer fits with it; then such samples are left out,
        the last drawn first, until it fits (none where even leaving all out would not
        fit: the estimate fell short elsewhere, and the budget narrows at send as before),
        and never so many that the output, which would have made its call, makes none.
        ``finish`` makes the step's output from replies (the role's ``finish``)."""
        st = self.states[sid]
        if not self.fits or not st.lean:
            return results
        # the lean replies, the last of each call's first (a call's replies are in the
        # seeded order: leaving out its last is as if it had drawn fewer)
        order = sorted(((pos, i) for i, comps in enumerate(results)
                        for pos, d in enumerate(comps) if id(d) in st.lean), reverse=True)
        if not order:
            return results
        saved = self.budget.plan_hold
        phase = st.phase
        st.phase = "done"
        self.budget.hold_for_plan(0, 0.0, 0.0)  # what the rest needs, against what is free

        out_id = self.graph.output
        watch = out_id != sid and self.graph.steps[out_id].calls_model

        def fit(res: list[list[Completion]]) -> tuple[bool, bool]:
            """Whether the rest fits with these replies, and whether the output then makes
            its call (a judge shown one candidate makes none)."""
            try:
                out = finish(res)
            except Exception:  # the real finish reports it; no trimming on a guess
                return True, True
            self.planner.calls_made.pop(out_id, None)
            need = self.planner.worst_case(self.states, {**self.outputs, sid: out},
                                           self._widths())
            return fits(need, self.budget), bool(self.planner.calls_made.get(out_id))

        try:
            ok, reaches = fit(results)
            if ok:
                return results
            keep = [list(comps) for comps in results]
            for k, (pos, i) in enumerate(order, 1):
                del keep[i][pos]
                ok, still = fit(keep)
                if ok and (still or not reaches or not watch):
                    st.dropped += k
                    return keep
                if watch and reaches and not still:
                    break  # fewer would leave the output no call: better it narrowed
            return results
        finally:
            st.phase = phase
            self.budget.hold_for_plan(*saved)

    def fit_output_inputs(self, sid: str, ctx: StepContext, calls: list[Call],
                          make_calls: Callable[[StepContext], list[Call]]
                          ) -> tuple[StepContext, list[Call]]:
        """Where no plan fits (calls only guarded), the output step's inputs as its call is
        made: when its prompt quotes more candidates than the budget left can pay for (a step
        upstream was skipped and its inputs passed on whole, or took more than its share),
        the last candidates of the widest inputs are left out until one sample of each call
        fits whole, else until it fits with ``max_tokens`` cut; unchanged where neither is
        reached. Better a judge shown fewer candidates than no judge."""
        if self.fits or sid != self.graph.output or not calls:
            return ctx, calls
        mt = self.graph.steps[sid].sampling.max_tokens
        saved = self.budget.plan_hold
        self.budget.hold_for_plan(0, 0.0, 0.0)  # the output is the last step: nothing to keep

        def fit(cs: list[Call], tokens: int) -> bool:
            need = Amount()
            for c in cs:
                need.add(1, self.estimate(c.model, c.messages), tokens, self.costing(c.model))
            return fits(need, self.budget)

        def noted(trimmed: StepContext, cs: list[Call]) -> tuple[StepContext, list[Call]]:
            shown = sum(len(o.candidates) for o in trimmed.inputs)
            total = sum(len(o.candidates) for o in ctx.inputs)
            self.states[sid].note("inputs_trimmed", f"quoted {shown} of its {total} input "
                                  "candidates: no plan fitted, and the budget left could not "
                                  "pay for a prompt quoting them all")
            return trimmed, cs

        try:
            if fit(calls, mt):
                return ctx, calls
            trims: list[tuple[StepContext, list[Call]]] = []
            inputs = list(ctx.inputs)
            while True:
                widest = max(range(len(inputs)), key=lambda i: (len(inputs[i].candidates), i),
                             default=None)
                if widest is None or len(inputs[widest].candidates) <= 1:
                    break
                out = inputs[widest]
                inputs[widest] = dataclasses.replace(out, candidates=out.candidates[:-1])
                trimmed = dataclasses.replace(ctx, inputs=list(inputs))
                try:
                    cs = make_calls(trimmed)
                except Exception:  # the real run reports a role's failure
                    break
                if not cs:
                    break
                if fit(cs, mt):
                    return noted(trimmed, cs)
                trims.append((trimmed, cs))
            for trimmed, cs in trims:  # none whole: the fewest left out that a cut call fits
                if fit(cs, 1):
                    return noted(trimmed, cs)
            return ctx, calls
        finally:
            self.budget.hold_for_plan(*saved)

    def _output_share(self, strict: bool = False) -> Amount | None:
        """What the output step may cost at the narrowest widths upstream, with the samples
        running steps drew or hold; when that alone does not fit, nothing (then calls are
        only guarded), or None where ``strict``."""
        narrowest = {sid: (st.lo if st.wanted > 1 or st.lo > 1 else None)
                     for sid, st in self.states.items()}
        share = self.planner.worst_case(self.states, self.outputs, narrowest,
                                        only=self.graph.output)
        self.budget.hold_for_plan(0, 0.0, 0.0)
        if fits(share, self.budget):
            return share
        return None if strict else Amount()

    def _replan(self) -> None:
        """A guarded query plans again with what its replies taught the estimate: when the
        rest of the graph now fits, it runs as planned (the output's share held, waves).
        Not once the output has started: nothing is left to plan (and the report would say
        the graph ran as planned when it did not)."""
        if self.states[self.graph.output].phase != "pending":
            return
        self.budget.hold_for_plan(0, 0.0, 0.0)  # the plan is checked against what is free
        if not plan_widths(self.planner, self.budget, self.states, self.outputs):
            self._hold(self._output_share() or Amount())
            return
        need = self.planner.worst_case(self.states, self.outputs, self._widths())
        out = self.graph.output
        if self.graph.steps[out].calls_model and self.states[out].phase == "pending" \
                and not self.planner.calls_made.get(out):
            # the output would make no call (a judge shown one candidate): running steps draw
            # more, one sample at a time, while that fits, until it does; else stay guarded
            added: list[CallState] = []
            for sid in self.graph.order:
                st = self.states[sid]
                if st.phase != "running" or width_range(self.graph.steps[sid]) is None:
                    continue
                for c in st.calls:
                    while c.keeps is None and not self.planner.calls_made.get(out) and \
                            len(c.drawn) + c.inflight + c.unreserved < st.wanted:
                        c.unreserved += 1
                        need = self.planner.worst_case(self.states, self.outputs,
                                                       self._widths())
                        if not fits(need, self.budget):
                            c.unreserved -= 1
                            break
                        added.append(c)
            need = self.planner.worst_case(self.states, self.outputs, self._widths())
            if not self.planner.calls_made.get(out):
                for c in added:
                    c.unreserved -= 1
                self._hold(self._output_share() or Amount())
                return
        self.fits = True
        self._hold(need)
        self.budget.note_peak()
        for st in self.states.values():
            if st.phase == "pending" and st.planned < st.wanted:
                st.note("planned_narrower", f"planned {st.planned} of {st.wanted} samples once "
                        "replies came back: the worst case of more does not fit beside what "
                        "later steps need")
        for sid, st in self.states.items():
            if st.phase != "pending" and width_range(self.graph.steps[sid]) is not None:
                if st.phase == "running":  # the plan's width for it: what it has and will draw
                    st.planned = max((len(c.drawn) + c.inflight + c.unreserved
                                      for c in st.calls), default=st.planned)
                st.note("planned_late", "planned once replies came back (by the counter's "
                        "estimate no plan fitted when the query started)")

    def narrowed(self, sid: str) -> None:
        """The budget sent a call of ``sid`` narrower than granted (fewer samples or tokens),
        or refused it: the report's ``narrowed_at_send`` (an adaptive step that settles
        before its plan's width was not narrowed)."""
        self.states[sid].narrowed = True

    def prompt_tokens(self, sid: str, index: int) -> int:
        """The prompt tokens call ``index`` of a running step reserves per sample now."""
        return self.states[sid].calls[index].prompt_tokens

    def abandon(self, sid: str, index: int) -> None:
        """The call draws no more (stopped, or cut short): nothing left to reserve for it."""
        self.states[sid].calls[index].unreserved = 0

    async def settled(self) -> bool:
        """Wait until some call in flight returns; False at once when none is in flight."""
        if self.in_flight == 0:
            return False
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)
        return True

    # ------------------------------------------------------------------------ reporting

    def report(self) -> BudgetReport:
        b = self.budget
        steps = {}
        for sid, st in self.states.items():
            if st.wanted <= 1 and st.lo <= 1 and not st.reasons:
                continue
            extra: list[tuple[str, str]] = []  # (code, reason) found when the step ended
            if st.drawn > st.planned:
                extra.append(("widened", f"widened in waves to {st.drawn}: calls returned "
                              "under their worst case"))
            if st.cut_draws:
                extra.append(("cut_draws", f"drew {st.cut_draws} beyond the plan with "
                              f"max_tokens cut to {st.cut_cap} or more (the worst case at the "
                              "step's own did not fit; its replies so far had ended sooner)"
                              + (f", {st.cut_off} of them cut off" if st.cut_off else "")))
            if st.dropped:
                extra.append(("dropped", f"left {st.dropped} of its samples out of later "
                              "prompts: their replies ran longer than reserved for them there "
                              "and the rest of the plan did not fit with them"))
            if st.short and st.drawn < st.wanted:
                extra.append(("stopped_short", f"stopped at {st.drawn}: the worst case of "
                              "another sample did not fit beside what later steps need"))
            elif st.narrowed and 0 < st.drawn < st.planned:
                extra.append(("narrowed_at_send", f"drew {st.drawn} of {st.planned} planned: "
                              "the budget narrowed the call when it was sent"))
            steps[sid] = {"wanted": st.wanted, "planned": st.planned, "drawn": st.drawn,
                          "cut_draws": st.cut_draws, "dropped": st.dropped,
                          "reasons": [*st.reasons, *(r for _, r in extra)],
                          "why": [*st.why, *(c for c, _ in extra)]}
        out = self.states[self.graph.output]
        return BudgetReport(
            granted=granted(b), spent=Amount(b.used_tokens, b.used_cost, b.used_flops),
            reserved_peak=Amount(b.peak_tokens, b.peak_cost, b.peak_flops),
            plan_fits=self.fitted_at_start, steps=steps,
            planned_late=self.fits and not self.fitted_at_start,
            # the output made its call (a step whose role calls no model, a vote, just ran)
            output_reached=out.phase == "done" and (
                out.drawn > 0 or not self.graph.steps[self.graph.output].calls_model),
        )


def granted(b: QueryBudget) -> dict[str, float | int | None]:
    s = b.budget
    return {"tokens": s.max_tokens_per_query, "cost_usd": s.max_cost_usd_per_query,
            "flops": s.max_flops_per_query}


@dataclass
class BudgetReport:
    """How one query used its budget: granted, most committed at once (spent plus
    reserved), spent, and each step whose width the budget chose, with why."""

    granted: dict[str, float | int | None]
    spent: Amount
    reserved_peak: Amount
    plan_fits: bool
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: no plan fitted at the start, by the counter's estimate, but one did once replies came
    #: back with the server's usage (the rest of the graph ran as planned)
    planned_late: bool = False
    #: the output step ran (drew a sample, or had no call to make)
    output_reached: bool = False

    def share_spent(self) -> float | None:
        """Spent over granted, on the tightest declared cap (None when none is declared)."""
        shares = [used / cap for used, cap in (
            (self.spent.tokens, self.granted["tokens"]),
            (self.spent.cost, self.granted["cost_usd"]),
            (self.spent.flops, self.granted["flops"])) if cap]
        return max(shares) if shares else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetReport:
        """A report back from ``to_dict()`` (``share_spent`` is worked out again)."""
        return cls(granted=dict(data["granted"]), spent=Amount.from_dict(data["spent"]),
                   reserved_peak=Amount.from_dict(data["reserved_peak"]),
                   plan_fits=bool(data["plan_fits"]), steps=dict(data.get("steps") or {}),
                   planned_late=bool(data.get("planned_late", False)),
                   output_reached=bool(data.get("output_reached", False)))

    def to_dict(self) -> dict[str, Any]:
        return {"granted": self.granted, "spent": self.spent.to_dict(),
                "reserved_peak": self.reserved_peak.to_dict(), "plan_fits": self.plan_fits,
                "planned_late": self.planned_late, "output_reached": self.output_reached,
                "share_spent": self.share_spent(), "steps": self.steps}
