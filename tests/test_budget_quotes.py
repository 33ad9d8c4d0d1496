"""Replies quoted in later prompts at what their step's replies really cost there, not at
their ``max_tokens`` (``budget_plan.QUOTE_MARGIN``), and the rare reply that runs longer
than that left out of those prompts (``BudgetLedger.keep_fitting``); and, where no plan fits,
an output that quotes fewer inputs rather than none (``BudgetLedger.fit_output_inputs``)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_budget_plan import ISSUE_GRAPH as GRAPH
from test_budget_plan import ExactScorer, Item, words

from tts_graph import Executor, QueryResult, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.cli.eval import budget_lines
from tts_graph.evaluate.runner import run_items
from tts_graph.evaluate.store import ResultStore
from tts_graph.evaluate.summary import summarize
from tts_graph.types import Completion, Message


def is_judge(req: GenerationRequest) -> bool:
    return "Solution" in req.messages[-1].content


class Reasoner(ScriptedBackend):
    """A model that reasons in tokens it does not return: every reply is a few words and
    reports ``max_tokens`` completion tokens (as the simulated models, or a reasoning API)."""

    def __init__(self) -> None:
        super().__init__(lambda req, i: f"Answer: {(req.seed + i) % 3}")

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        return words(messages)  # the server's own count: its prompts are counted exactly

    async def _one(self, req: GenerationRequest, i: int) -> Completion:
        comp = await super()._one(req, i)
        return dataclasses.replace(comp, completion_tokens=req.max_tokens)


class ByIndex(ScriptedBackend):
    """Solver sample k: ``length(k)`` tokens (within ``max_tokens``), after ``delay(k)`` loop
    turns (so samples of one wave return in the order a test wants); the judge: one line."""

    def __init__(self, length: Callable[[int], int],
                 delay: Callable[[int], int] = lambda _k: 0) -> None:
        super().__init__(self._text)
        self.length, self.delay = length, delay

    def _text(self, req: GenerationRequest, i: int) -> str:
        k = req.sample_offset + i
        if is_judge(req):
            return "Answer: 1"
        n = min(req.max_tokens, self.length(k))
        return " ".join([f"Answer: {k % 3}", *[f"w{k}"] * (n - 2)])

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        return words(messages)

    async def _one(self, req: GenerationRequest, i: int) -> Completion:
        for _ in range(0 if is_judge(req) else self.delay(req.sample_offset + i)):
            await asyncio.sleep(0)
        return await super()._one(req, i)


def LongFrom(first_long: int) -> ByIndex:
    """Solver replies of 4 tokens up to sample ``first_long``, then of 30: a step whose later
    samples run far longer than its first ones."""
    return ByIndex(lambda k: 30 if k >= first_long else 4)


def run(backend: ScriptedBackend, cap: int, monkeypatch: Any, lean: bool = True
        ) -> QueryResult:
    with monkeypatch.context() as m:
        if not lean:  # every unseen reply quoted at its max_tokens, as before
            m.setattr("tts_graph.budget_plan.QUOTE_MARGIN", 100.0)
        return Executor(loads_graph(GRAPH.format(cap=cap)),
                        backends={"m": backend}).run("What is 2+2?")


def test_replies_are_reserved_in_the_judges_prompt_at_what_they_cost_there(
        monkeypatch: Any) -> None:
    """Each reply reports 40 completion tokens but is 2 words: once the first came back,
    another sample's place in the judge's prompt is reserved at about that, not at 40, so
    more samples fit and more of the budget is spent; never over it, the judge always runs."""
    for cap in (300, 800):
        lean, whole = (run(Reasoner(), cap, monkeypatch, flag) for flag in (True, False))
        for res in (lean, whole):
            assert res.status == "ok" and res.usage.tokens <= cap
            assert res.budget is not None and res.budget.output_reached
            assert res.budget.steps["solve"]["dropped"] == 0
        assert lean.steps["solve"].meta["samples"] > whole.steps["solve"].meta["samples"]
        assert lean.usage.tokens > whole.usage.tokens


def test_a_reply_longer_than_reserved_is_left_out_of_the_judges_prompt(
        monkeypatch: Any) -> None:
    """Samples 0-5 are 4 tokens, so sample 6 is reserved in the judge's prompt at about 8
    and runs to 30: the plan no longer fits with it, so the judge is shown the others (the
    last drawn left out), its call whole, and the report says so. Never an overrun."""
    backend = LongFrom(6)
    res = run(backend, 350, monkeypatch)
    assert res.status == "ok" and res.usage.tokens <= 350
    report = res.budget
    assert report is not None and report.output_reached
    step = report.steps["solve"]
    assert step["dropped"] >= 1 and "dropped" in step["why"]
    assert any(r.startswith(f"left {step['dropped']} of its samples out of later prompts")
               for r in step["reasons"])
    shown = res.steps["solve"].candidates
    assert len(shown) == step["drawn"] - step["dropped"]
    judge = [r for r in backend.requests if is_judge(r)]
    assert len(judge) == 1 and judge[0].max_tokens == 40  # whole, not narrowed
    drawn = [r for r in backend.requests if not is_judge(r)]
    assert max(r.sample_offset + r.n for r in drawn) == step["drawn"]
    # what was left out is the last drawn: the judge quotes samples 0 .. drawn-dropped-1
    prompt = judge[0].messages[-1].content
    assert all(f"w{k}" not in prompt for k in range(step["drawn"] - step["dropped"],
                                                     step["drawn"]))
    # a result that keeps its replies' reservations whole needs no such step
    whole = run(LongFrom(6), 350, monkeypatch, lean=False)
    assert whole.budget is not None and whole.budget.steps["solve"]["dropped"] == 0
    assert whole.usage.tokens <= 350


def test_a_step_whose_replies_reach_their_cap_is_reserved_at_its_cap(
        monkeypatch: Any) -> None:
    """Replies that use their whole max_tokens give no lower figure to reserve at: the same
    samples either way, none left out."""
    backend_a, backend_b = LongFrom(0), LongFrom(0)
    lean = run(backend_a, 600, monkeypatch)
    whole = run(backend_b, 600, monkeypatch, lean=False)
    assert lean.steps["solve"].meta["samples"] == whole.steps["solve"].meta["samples"]
    assert lean.budget is not None and lean.budget.steps["solve"]["dropped"] == 0
    assert [r.max_tokens for r in backend_a.requests] == \
        [r.max_tokens for r in backend_b.requests]


def test_eval_summary_counts_samples_left_out(tmp_path: Path, monkeypatch: Any) -> None:
    """The eval summary says how many samples were left out of later prompts, and in how
    many queries per step (the same figures the queries' reports give)."""
    store = ResultStore(tmp_path / "run")
    store.bind({"graph_name": "solve-judge", "task": "t", "planned": 3}, resume=False)
    ex = Executor(loads_graph(GRAPH.format(cap=350)), backends={"m": LongFrom(6)})
    items = [Item(str(i), "What is 2+2?", "1") for i in range(3)]
    asyncio.run(run_items(ex, ExactScorer(), items, store, concurrency=1))
    rows = list(store.rows())
    dropped = sum(r.budget["steps"]["solve"]["dropped"] for r in rows)
    b = summarize(store).budget
    assert b is not None and b["overruns"] == 0 and b["dropped"] == dropped >= 3
    assert b["why"]["solve"]["dropped"] == 3
    lines = budget_lines(b)
    assert f", {dropped} left out of later prompts" in lines[1]
    assert "left samples out of later prompts 3" in lines[2]



# the issue graph's header (one scripted model "m"), mixture_of_agents' nodes
MIXTURE = GRAPH[: GRAPH.index("nodes:")] + """nodes:
  propose_small: {{role: solver, model: m, samples: 2, max_tokens: 24}}
  propose_base: {{role: solver, model: m, samples: 2, max_tokens: 24}}
  fuse: {{role: fuser, model: m, inputs: [propose_small, propose_base], samples: 2,
         max_tokens: 24}}
  final: {{role: fuser, model: m, inputs: [fuse], max_tokens: 24}}
output: final
budget: {{max_tokens_per_query: {cap}}}
"""


def test_a_guarded_output_quotes_fewer_inputs_rather_than_none(monkeypatch: Any) -> None:
    """No plan fits: the proposers take what the guard allows, the fuse step is refused and
    passes its inputs on whole, so the final fuser's prompt would quote every draft, more
    than the budget left can pay for. It quotes the first drafts instead, its call whole,
    and says so; before, it made no call at all (seen on llama.cpp's server too)."""
    from tts_graph.budget_plan import BudgetLedger

    for cap in (180, 260):
        backend = LongFrom(0)
        res = Executor(loads_graph(MIXTURE.format(cap=cap)),
                       backends={"m": backend}).run("What is 2+2?")
        report = res.budget
        assert report is not None and not report.plan_fits and res.usage.tokens <= cap
        assert report.output_reached and any(c.step == "final" for c in res.calls)
        step = report.steps["final"]
        assert step["why"] == ["inputs_trimmed"]
        shown, total = map(int, re.findall(r"quoted (\d+) of its (\d+)", step["reasons"][0])[0])
        assert 1 <= shown < total == len(res.steps["fuse"].candidates)
        final = backend.requests[-1]
        assert final.max_tokens == 24
        prompt = final.messages[-1].content
        assert sum(c.text in prompt for c in res.steps["fuse"].candidates) == shown
        # the same query without it: the final fuser is refused
        monkeypatch.setattr(BudgetLedger, "fit_output_inputs",
                            lambda self, sid, ctx, calls, make: (ctx, calls))
        res = Executor(loads_graph(MIXTURE.format(cap=cap)),
                       backends={"m": LongFrom(0)}).run("What is 2+2?")
        monkeypatch.undo()
        assert res.budget is not None and not res.budget.output_reached


def test_a_sample_sent_before_its_steps_replies_stays_reserved_at_its_cap() -> None:
    """Two samples in flight from before any reply came back; the first returns with 4
    tokens, so samples drawn from now on are quoted in the judge's prompt at 9. The
    other one in flight was not drawn that way: it cannot be left out of the judge's prompt
    (``keep_fitting`` drops only samples drawn lean), so it stays reserved at its cap."""
    from tts_graph.budget import QueryBudget
    from tts_graph.budget_plan import BudgetLedger, costing_of
    from tts_graph.compile import compile_graph
    from tts_graph.roles.base import StepContext

    graph = compile_graph(loads_graph(GRAPH.format(cap=5000)), backends=["scripted"])
    ledger = BudgetLedger(graph, "What is 2+2?", QueryBudget(graph.spec.budget),
                          lambda _m, msgs: words(msgs),
                          lambda _m: costing_of(graph.spec.models["m"]), {})
    step = graph.steps["solve"]
    ctx = StepContext(question="What is 2+2?", node_name=step.node, node=step.spec,
                      phase=step.phase, round=step.round, models=step.models,
                      extract=step.extract, inputs=[], params=step.params)
    ledger.start_step("solve", ctx, step.role.calls(ctx))
    c = ledger.states["solve"].calls[0]
    assert [ledger.sent("solve", 0, 1, 40) for _ in range(2)] == [False, False]
    ledger.returned("solve", 0, 1, [Completion("Answer: 4 w w", 10, 4)], 40, False)
    # its quote costs its 4 completion tokens + 1: reserved at ceil(1.25 * 5) + 2 = 9, which
    # a synthetic reply says as 8 (a quote costs one more than the number it carries)
    assert ledger.quote_of("solve", c) == 8
    assert c.inflight_fixed == [40]  # the other one, sent before: quoted at its cap
    assert ledger.sent("solve", 0, 1, 40) is True  # drawn now: lean
    assert c.inflight_fixed == [40] and c.inflight == 2

    def judge_prompt() -> int:
        need = ledger.planner.worst_case(ledger.states, {}, ledger._widths(), only="judge")
        return need.tokens - 40

    with_fixed = judge_prompt()
    c.inflight_fixed.clear()  # as if it had been drawn lean too
    assert with_fixed - judge_prompt() == 41 - 9


def test_replies_left_out_never_leave_the_output_without_its_call(monkeypatch: Any) -> None:
    """A plan found late (the counter's first estimate fits none at 250): samples 1 and 2 are
    drawn lean after sample 0's 4 tokens, and run to 38 and 30. Leaving both out would fit,
    but the judge, shown one candidate, would make no call (an output not reached, status
    ok): better all kept and the judge's call narrowed if it must be."""
    res = run(ByIndex(lambda k: {1: 38, 2: 30}.get(k, 4), lambda k: 20 if k == 1 else 0),
              250, monkeypatch)
    report = res.budget
    assert report is not None and report.planned_late and res.usage.tokens <= 250
    assert report.output_reached and any(c.step == "judge" for c in res.calls)
    assert report.steps["solve"]["dropped"] == 0
    assert len(res.steps["solve"].candidates) == report.steps["solve"]["drawn"] >= 2


def test_a_step_whose_calls_failed_is_not_reported_skipped_by_the_budget(
        monkeypatch: Any) -> None:
    """The server failed (an infrastructure error): the report names no budget reason for
    it; "skipped: the budget refused its calls" was said of any step with no replies."""
    from tts_graph.errors import BackendError

    class Down(ScriptedBackend):
        async def generate(self, request: GenerationRequest) -> list[Completion]:
            raise BackendError("m: server: HTTP 503")

    res = run(Down(lambda req, i: "x"), 1000, monkeypatch)
    assert res.status == "error" and res.budget is not None
    assert "skipped" not in res.budget.steps["solve"]["why"]
    assert not any(r.startswith("skipped") for r in res.budget.steps["solve"]["reasons"])
