"""The executor on the scripted backend: scheduling, concurrency, cancellation, budgets,
adaptive width, accounting, errors and seeds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tts_graph import Executor, GraphErrors, QueryResult, loads_graph, parse_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.budget import QueryBudget
from tts_graph.errors import BackendError, BudgetExhausted
from tts_graph.prompt_estimate import QUOTE_LABEL
from tts_graph.types import Completion, Message

# ------------------------------------------------------------------------------- helpers


def words(messages: tuple[Message, ...]) -> int:
    """The scripted backend's token count of a prompt (one token per word)."""
    return sum(len(m.content.split()) for m in messages)


_QUOTED = re.compile(r"\bu[0-9a-f]{12}\b")


def planned_prompt(messages: tuple[Message, ...]) -> int:
    """A worst-case prompt as the plan counts it before the server has shown that it counts
    prompts as the counter does: every quoted reply (``full_text`` tags each) one token more
    than its completion, plus the quote's label (``QUOTE_LABEL``), as a real BPE tokenizer
    needs (measured against llama.cpp's server)."""
    quotes = sum(len(_QUOTED.findall(m.content)) for m in messages)
    return words(messages) + quotes * (1 + QUOTE_LABEL)


class Exact(ScriptedBackend):
    """Counts prompt tokens exactly as the scripted backend reports them, so budget
    reservations are exact."""

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        return words(messages)


class Timed(ScriptedBackend):
    """Records each request's (start, end) and the peak number of requests in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spans: list[tuple[float, float]] = []
        self.in_flight = 0
        self.peak = 0

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        start = time.perf_counter()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().generate(request)
        finally:
            self.in_flight -= 1
            self.spans.append((start, time.perf_counter()))


def graph(nodes: str, *, models: str = "m", output: str, extra: str = "") -> Any:
    decl = ", ".join(f"{m}: {{backend: scripted, model: {m}}}" for m in models.split())
    return loads_graph(
        f"version: 1\nname: t\nmodels: {{{decl}}}\nnodes:\n{nodes}\noutput: {output}\n{extra}"
    )


def answer_of(value: object) -> Callable[[GenerationRequest, int], str]:
    return lambda req, i: f"Answer: {value}"


# --------------------------------------------------------------------------- scheduling


async def test_steps_start_as_soon_as_their_inputs_are_ready() -> None:
    """A 3-step chain of 10 ms steps runs beside one 100 ms step; the join waits only for
    the slow branch (no supersteps)."""
    doc = graph(
        """
  a: {role: solver, model: a}
  b: {role: solver, model: b, inputs: [a]}
  c: {role: solver, model: c, inputs: [b]}
  d: {role: solver, model: d}
  j: {role: judge, model: j, inputs: [c, d]}
""",
        models="a b c d j",
        output="j",
    )
    fast = {m: Timed(answer_of(1), latency=0.01) for m in "abc"}
    slow = Timed(answer_of(2), latency=0.1)
    judge = Timed(lambda req, i: "Best: 2", latency=0.01)
    ex = Executor(doc, backends={**fast, "d": slow, "j": judge})
    res = await ex.arun("q")
    assert res.status == "ok"
    assert res.answer == "2"
    (a,), (b,), (c,), (d,), (j,) = (x.spans for x in (*fast.values(), slow, judge))
    # the chain runs step after step, all while the slow step is still running
    assert a[1] <= b[0] and b[1] <= c[0]
    assert a[0] < d[1] and b[0] < d[1] and c[0] < d[1]
    assert c[1] < d[1]
    # the join starts once both branches are done, right after the slow one
    assert j[0] >= d[1] and j[0] >= c[1]
    # ordering, not speed: generous, so a loaded CI machine cannot fail it
    assert j[0] - d[1] < 0.25


async def test_samples_of_one_step_run_concurrently() -> None:
    doc = graph("  s: {role: solver, model: m, samples: 8}", output="s")
    starts: list[float] = []
    ends: list[float] = []

    def latency(req: GenerationRequest, i: int) -> float:
        starts.append(time.perf_counter())
        return 0.05

    def respond(req: GenerationRequest, i: int) -> str:
        ends.append(time.perf_counter())
        return f"Answer: {i}"

    backend = ScriptedBackend(respond, latency=latency)
    t0 = time.perf_counter()
    res = await Executor(doc, backends={"m": backend}).arun("q")
    wall = time.perf_counter() - t0
    assert len(res.steps["s"].candidates) == 8
    assert len(starts) == len(ends) == 8
    assert max(starts) < min(ends)  # every sample started before any finished
    assert wall < 8 * 0.05 / 2


class CountingExecutor(Executor):
    """Tracks how many queries are running at once."""

    active = 0
    peak = 0

    async def arun(self, question: str, *, query_id: int | str = 0) -> QueryResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await super().arun(question, query_id=query_id)
        finally:
            self.active -= 1


async def test_run_many_caps_concurrent_queries_and_keeps_input_order() -> None:
    doc = graph(
        """
  p: {role: planner, model: m}
  s: {role: solver, model: m, inputs: [p]}
""",
        output="s",
    )

    def question_number(req: GenerationRequest) -> int:
        return int(req.messages[-1].content.split()[-1])

    # later questions are faster, so they would finish first
    backend = Timed(lambda req, i: f"Answer: {question_number(req) * 10}",
                    latency=lambda req, i: 0.002 * (12 - question_number(req)))
    ex = CountingExecutor(doc, backends={"m": backend})
    questions = [f"question {n}" for n in range(12)]
    seen: list[int | str] = []
    results = await ex.arun_many(questions, concurrency=3, on_result=lambda r: seen.append(r.id))
    assert ex.peak == 3
    assert backend.peak <= 3
    assert [r.question for r in results] == questions
    assert [r.id for r in results] == list(range(12))
    assert [r.answer for r in results] == [str(n * 10) for n in range(12)]
    assert sorted(seen) == list(range(12))
    with pytest.raises(ValueError):
        await ex.arun_many(questions, concurrency=0)


def test_run_many_blocking_api() -> None:
    doc = graph("  s: {role: solver, model: m}", output="s")
    backend = ScriptedBackend(lambda req, i: f"Answer: {len(req.messages[-1].content)}")
    results = Executor(doc, backends={"m": backend}).run_many(["a", "bbb", "cc"],
                                                               concurrency=2)
    assert [r.answer for r in results] == ["1", "3", "2"]


async def test_model_max_concurrency_holds_across_queries() -> None:
    doc = loads_graph(
        """
version: 1
name: capped
models:
  m: {backend: scripted, model: m, max_concurrency: 2}
  u: {backend: scripted, model: u}
nodes:
  s1: {role: solver, model: m}
  s2: {role: solver, model: m}
  s3: {role: solver, model: u}
  v: {role: vote, inputs: [s1, s2, s3]}
output: v
"""
    )
    capped = Timed(answer_of(1), latency=0.01)
    free = Timed(answer_of(1), latency=0.01)
    ex = Executor(doc, backends={"m": capped, "u": free})
    results = await ex.arun_many([f"q{i}" for i in range(6)], concurrency=6)
    assert all(r.status == "ok" for r in results)
    assert len(capped.requests) == 12
    assert capped.peak == 2
    assert ex.bindings()["m"].peak_in_flight == 2
    assert free.peak == 6  # the cap belongs to its model only


async def test_a_call_waiting_for_the_request_rate_holds_no_permit_once_cancelled() -> None:
    """Limits are taken in order (permit, then rates): a call cancelled while it waits for
    the request rate gives its concurrency permit back, and an attempt that fails gives its
    permit back before its retry waits."""
    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "max_concurrency: 1, rpm: 1}\nnodes:\n  s: {role: solver, model: m}\n"
                      "output: s\n")
    ex = Executor(doc, backends={"m": ScriptedBackend(answer_of(1))})
    binding = ex.bindings()["m"]
    assert (await ex.arun("first")).status == "ok"  # spends the minute's one request
    waiting = asyncio.ensure_future(ex.arun("second"))
    await asyncio.sleep(0.05)
    lim = binding.limits
    assert lim.sem is not None and lim.sem.locked()  # it holds the permit, waits for the rate
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not lim.sem.locked() and binding.in_flight == 0


async def test_a_failed_attempt_gives_its_permit_back_before_the_retry() -> None:
    from tts_graph.errors import TransientBackendError

    failures = [TransientBackendError("busy", kind="rate_limit", retry_after=0.0)]

    def respond(req: GenerationRequest, i: int) -> str:
        if failures:
            raise failures.pop()
        return "Answer: 1"

    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "max_concurrency: 1}\nnodes:\n  s: {role: solver, model: m}\n"
                      "output: s\n")
    ex = Executor(doc, backends={"m": ScriptedBackend(respond)})
    # with one permit, a retry that waited for the permit its own failed attempt held would
    # never start: the query would hang
    res = await asyncio.wait_for(ex.arun("q"), 5.0)
    assert (res.status, res.answer, res.calls[0].retries) == ("ok", "1", 1)
    lim = ex.bindings()["m"].limits
    assert lim.sem is not None and not lim.sem.locked()


# ----------------------------------------------------------------------- first finish


async def test_first_finish_keeps_the_first_k_and_cancels_the_rest() -> None:
    doc = graph("  ff: {role: first_finish, model: m, samples: 6, k: 2}", output="ff")
    delays = [0.4, 0.05, 0.3, 0.01, 0.35, 0.25]
    backend = ScriptedBackend(lambda req, i: f"Answer: {req.sample_offset}",
                              latency=lambda req, i: delays[req.sample_offset])
    t0 = time.perf_counter()
    res = await Executor(doc, backends={"m": backend}).arun("q")
    wall = time.perf_counter() - t0
    assert res.status == "ok"
    assert [c.answer for c in res.steps["ff"].candidates] == ["3", "1"]
    assert res.steps["ff"].meta["kept"] == 2
    assert res.answer == "3"
    assert backend.cancelled == 4
    assert len(res.calls) == 2  # cancelled samples are not billed
    assert wall < 0.25


async def test_first_finish_reports_finish_order_among_simultaneous_samples() -> None:
    doc = graph("  ff: {role: first_finish, model: m, samples: 8, k: 6}", output="ff")
    backend = ScriptedBackend(lambda req, i: f"Answer: {req.sample_offset}", latency=0.02)
    res = await Executor(doc, backends={"m": backend}).arun("q")
    assert [c.answer for c in res.steps["ff"].candidates] == [str(i) for i in range(6)]


# ---------------------------------------------------------------------------- timeouts


async def test_timeout_cancels_slow_steps_and_keeps_the_nearest_answer() -> None:
    doc = graph(
        """
  a: {role: solver, model: fast}
  b: {role: solver, model: fast, inputs: [a]}
  c: {role: fuser, model: slow, inputs: [b]}
""",
        models="fast slow",
        output="c",
        extra="budget: {timeout_s: 0.3}",
    )
    fast = ScriptedBackend(lambda req, i: f"Answer: {len(fast.requests)}")
    slow = ScriptedBackend(answer_of(99), latency=30.0)
    t0 = time.perf_counter()
    res = await Executor(doc, backends={"fast": fast, "slow": slow}).arun("q")
    assert time.perf_counter() - t0 < 5
    assert res.status == "timeout"
    assert slow.cancelled == 1
    assert res.answer == "2"  # b's answer, not a's
    assert "c" not in res.steps
    assert set(res.steps) == {"a", "b"}


async def test_timeout_with_nothing_finished_has_no_answer() -> None:
    doc = graph("  s: {role: solver, model: m}", output="s",
                extra="budget: {timeout_s: 0.05}")
    backend = ScriptedBackend(answer_of(1), latency=30.0)
    res = await Executor(doc, backends={"m": backend}).arun("q")
    assert res.status == "timeout"
    assert res.answer is None and res.text is None
    assert backend.cancelled == 1


async def test_timeout_in_a_graph_whose_steps_overlap_keeps_the_nearest_answer() -> None:
    """Two branches that run side by side (a task per step), one of them too slow."""
    doc = graph(
        """
  a: {role: solver, model: fast}
  b: {role: solver, model: slow}
  c: {role: fuser, model: fast, inputs: [a, b]}
""",
        models="fast slow",
        output="c",
        extra="budget: {timeout_s: 0.3}",
    )
    fast = ScriptedBackend(answer_of(5))
    slow = ScriptedBackend(answer_of(99), latency=30.0)
    res = await Executor(doc, backends={"fast": fast, "slow": slow}).arun("q")
    assert res.status == "timeout"
    assert slow.cancelled == 1
    assert set(res.steps) == {"a"} and res.answer == "5"  # the finished branch's answer
    assert len(fast.requests) == 1


async def test_a_role_failure_names_the_step() -> None:
    from tts_graph.errors import TTSGraphError

    doc = graph("  s: {role: solver, model: m}\n  v: {role: vote, inputs: [s]}", output="v")
    ex = Executor(doc, backends={"m": ScriptedBackend(answer_of(1))})
    role = ex.graph.steps["v"].role
    with (mock.patch.object(role, "calls", side_effect=RuntimeError("x")),
          pytest.raises(TTSGraphError, match="step v: role 'vote' failed: x")):
        await ex.arun("q")


async def test_a_role_failure_in_one_branch_ends_the_query_at_once() -> None:
    """A step that fails while another branch still waits on a slow model ends the query
    then, cancelling that branch, not when the branch (or the output's other input) is
    done."""
    from tts_graph.errors import TTSGraphError

    doc = graph("  a: {role: solver, model: slow}\n  b: {role: solver, model: fast}\n"
                "  c: {role: fuser, model: fast, inputs: [a, b]}",
                models="fast slow", output="c")
    slow = ScriptedBackend(answer_of(1), latency=30.0)
    ex = Executor(doc, backends={"slow": slow, "fast": ScriptedBackend(answer_of(2))})
    t0 = time.perf_counter()
    with (mock.patch.object(ex.graph.steps["b"].role, "calls", side_effect=RuntimeError("x")),
          pytest.raises(TTSGraphError, match="step b: role 'solver' failed: x")):
        await ex.arun("q")
    assert time.perf_counter() - t0 < 5
    assert slow.cancelled == 1


class Where(ScriptedBackend):
    """Records the task that each request was sent from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.tasks.append(asyncio.current_task())
        return await super().generate(request)


async def test_the_output_step_runs_in_the_querys_own_task() -> None:
    """Every other step leads to the output step, so it runs last, in the query's task: a
    one-step graph starts no task (and no gather) per query; other steps run in tasks of
    their own, side by side."""
    one = Where(answer_of(1))
    ex = Executor(graph("  s: {role: solver, model: m}", output="s"), backends={"m": one})
    query = asyncio.ensure_future(ex.arun("q"))
    assert (await query).answer == "1"
    assert one.tasks == [query]

    doc = graph("  a: {role: solver, model: m}\n  b: {role: solver, model: m}\n"
                "  c: {role: fuser, model: f, inputs: [a, b]}", models="m f", output="c")
    solver, fuser = Where(answer_of(2), latency=0.05), Where(answer_of(3))
    ex = Executor(doc, backends={"m": solver, "f": fuser})
    query = asyncio.ensure_future(ex.arun("q"))
    res = await query
    assert (res.status, res.answer, list(res.steps)) == ("ok", "3", ["a", "b", "c"])
    assert fuser.tasks == [query]
    assert len(set(solver.tasks)) == 2 and query not in solver.tasks
    assert [t.get_name() for t in solver.tasks if t is not None] == ["step:a", "step:b"]


def test_the_per_call_path_holds_no_closure_cells() -> None:
    """Every call in flight holds the frames of this path; a variable captured by a lambda
    or comprehension there is a cell more per call for each young collection to walk (the
    cap's ledger, a split request and the cache keep theirs in functions of their own)."""
    from tts_graph.bindings import ModelBinding

    path = (Executor.arun, Executor._step, Executor._send_call, Executor._plain,
            Executor._request, ModelBinding.generate,
            ModelBinding._live, ModelBinding._call)
    assert {f.__qualname__: f.__code__.co_cellvars for f in path
            if f.__code__.co_cellvars} == {}


# ------------------------------------------------------------------------------ budgets


def budget_text(req: GenerationRequest, i: int) -> str:
    """A reply whose word count never exceeds ``max_tokens`` (as a real model's)."""
    seed = req.seed + i
    value = seed % 3
    if req.max_tokens == 1:
        return str(value)
    length = min(req.max_tokens, 2 + (seed * 7 + words(req.messages)) % 30)
    return " ".join([f"Answer: {value}", *["w"] * (length - 2)])


def full_text(req: GenerationRequest, i: int) -> str:
    """A reply exactly ``max_tokens`` words long, and distinct from every other (a judge
    shows identical texts once): the worst case a budget plans for."""
    key = f"{req.messages}|{req.seed + i}".encode()
    tag = "u" + hashlib.sha256(key).hexdigest()[:12]
    if req.max_tokens == 1:
        return tag
    return " ".join([f"Answer: {(req.seed + i) % 3}", tag, *["w"] * (req.max_tokens - 3)])


class RecordingBudget(QueryBudget):
    """Counts reservations refused, or granted for fewer samples than asked."""

    made: list[RecordingBudget] = []  # noqa: RUF012 - test bookkeeping

    def __init__(self, budget: Any) -> None:
        super().__init__(budget)
        self.refused = 0
        RecordingBudget.made.append(self)

    def reserve(self, prompt_tokens: int, max_tokens: int, n: int, costing: Any) -> Any:
        try:
            res = super().reserve(prompt_tokens, max_tokens, n, costing)
        except BudgetExhausted:
            self.refused += 1
            raise
        assert res.max_tokens <= max_tokens
        if getattr(res, "n", n) < n:
            self.refused += 1
        return res


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    """A random graph over models m1 and m2, as a dict."""

    def tokens() -> int:
        return draw(st.integers(1, 40))

    def model() -> str:
        return draw(st.sampled_from(["m1", "m2"]))

    nodes: dict[str, Any] = {}
    inputs: list[str] = []
    if draw(st.booleans()):
        nodes["plan"] = {"role": "planner", "model": model(), "max_tokens": tokens()}
        inputs = ["plan"]
    kind = draw(st.sampled_from(["solver", "adaptive", "first_finish", "debate"]))
    if kind == "solver":
        nodes["gen"] = {"role": "solver", "model": model(), "inputs": inputs,
                        "samples": draw(st.integers(1, 6)), "max_tokens": tokens()}
    elif kind == "adaptive":
        lo = draw(st.integers(1, 4))
        nodes["gen"] = {"role": "solver", "model": model(), "inputs": inputs,
                        "samples": {"min": lo, "max": lo + draw(st.integers(0, 8)),
                                    "stop": draw(st.sampled_from(["settled", "confidence"]))},
                        "max_tokens": tokens()}
    elif kind == "first_finish":
        n = draw(st.integers(1, 6))
        nodes["gen"] = {"role": "first_finish", "model": model(), "inputs": inputs,
                        "samples": n, "k": draw(st.integers(1, n)), "max_tokens": tokens()}
    else:
        nodes["gen"] = {"role": "debate", "models": ["m1", "m2"], "inputs": inputs,
                        "agents": draw(st.integers(1, 3)), "rounds": draw(st.integers(1, 3)),
                        "max_tokens": tokens()}
    agg = draw(st.sampled_from(
        ["none", "vote", "judge", "judge_score", "fuser", "ranker", "verifier", "refiner"]
    ))
    output = "gen"
    if agg != "none":
        role = "judge" if agg.startswith("judge") else agg
        node: dict[str, Any] = {"role": role, "inputs": ["gen"]}
        if role != "vote":
            node.update(model=model(), max_tokens=tokens())
        if agg == "judge_score":
            node["mode"] = "score"
        if role == "refiner":
            node["rounds"] = draw(st.integers(1, 2))
        nodes["agg"] = node
        output = "agg"
    return {
        "version": 1,
        "name": "random",
        "models": {"m1": {"backend": "scripted", "model": "m1"},
                   "m2": {"backend": "scripted", "model": "m2"}},
        "defaults": {"seed": draw(st.integers(0, 50))},
        "nodes": nodes,
        "output": output,
    }


def run_budgeted(data: dict[str, Any], reply: Callable[[GenerationRequest, int], str]
                 = budget_text) -> tuple[QueryResult, RecordingBudget,
                                         list[tuple[GenerationRequest, int]]]:
    backends = {m: Exact(reply) for m in ("m1", "m2")}
    RecordingBudget.made.clear()
    with mock.patch("tts_graph.executor.QueryBudget", RecordingBudget):
        res = Executor(parse_graph(json.loads(json.dumps(data))), backends=backends).run("2+2?")
    # one account a query, opened where something is reserved: always under a cap
    budget = RecordingBudget.made[0] if RecordingBudget.made else None
    assert len(RecordingBudget.made) <= 1
    requests = [(r, int(m[1])) for m, b in backends.items() for r in b.requests]
    return res, budget, requests  # type: ignore[return-value]


def check_budget_result(res: QueryResult, budget: RecordingBudget, data: dict[str, Any]
                        ) -> None:
    assert res.status in ("ok", "budget")
    # a refused (or narrowed) call ⇔ the query reports "budget"; so does a guarded draw
    # taken with fewer samples than asked (no plan fitted yet: ``grant`` narrows it before
    # ``reserve`` sees it), found by these properties run with 3,000 examples
    assert (budget.refused > 0 or budget.exhausted) == (res.status == "budget")
    if budget.refused:
        assert budget.exhausted
    if any(out.status == "budget" for out in res.steps.values()):
        assert res.status == "budget"
    # no call ever asks for more than its node allows
    assert all(rec.error is None for rec in res.calls)
    assert budget.used_tokens == sum(c.prompt_tokens + c.completion_tokens for c in res.calls)


def assert_unchanged(res: QueryResult, free: QueryResult, data: dict[str, Any]) -> None:
    """A cap covering the uncapped run's worst case changes nothing: the plan counts every
    unseen reply as exactly its ``max_tokens``, so it holds with no margin, on every graph
    shape. A first-finish step keeps the samples that finish first (scheduling decides which,
    and with them what later prompts quote): there the kept count and the calls sent are
    compared, elsewhere the tokens spent and the answer."""
    assert res.status == "ok", res.budget.to_dict() if res.budget else None
    assert res.usage.calls == free.usage.calls and res.usage.samples == free.usage.samples
    if any(n.get("role") == "first_finish" for n in data["nodes"].values()):
        assert len(res.steps["gen"].candidates) == len(free.steps["gen"].candidates)
    else:
        assert res.usage.tokens == free.usage.tokens
        assert res.answer == free.answer


def widest(data: dict[str, Any]) -> dict[str, Any]:
    """The graph with each adaptive step at its widest: its worst case (a full-text run of
    the adaptive graph may stop as soon as its answers settle)."""
    out = json.loads(json.dumps(data))
    for node in out["nodes"].values():
        if isinstance(node.get("samples"), dict):
            node["samples"] = node["samples"]["max"]
    return out


BUDGET_SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.too_slow])


@BUDGET_SETTINGS
@given(graphs(), st.integers(1, 2500))
def test_token_cap_is_never_exceeded(data: dict[str, Any], cap: int) -> None:
    free, _, _ = run_budgeted(data)
    # the worst case as a budget must plan for it before any text is drawn: every reply as
    # long as its max_tokens (later prompts quote earlier replies)
    _, _, free_requests = run_budgeted(widest(data), full_text)
    capped_data = {**data, "budget": {"max_tokens_per_query": cap}}
    try:
        parse_graph(capped_data)
        Executor(parse_graph(capped_data), backends={m: Exact() for m in ("m1", "m2")})
    except GraphErrors:
        assume(False)  # the cap cannot cover even the smallest run: refused at compile time
    res, budget, requests = run_budgeted(capped_data)
    used = sum(c.prompt_tokens + c.completion_tokens for c in res.calls)
    assert used <= cap
    check_budget_result(res, budget, capped_data)
    node_max = {n: v.get("max_tokens", 256) for n, v in data["nodes"].items()}
    for req, _ in requests:
        assert req.max_tokens <= max(node_max.values())
    # a cap that covers the uncapped run's worst case changes nothing
    worst = sum(r.n * (planned_prompt(r.messages) + r.max_tokens) for r, _ in free_requests)
    if worst <= cap:
        assert_unchanged(res, free, data)


PRICES = st.sampled_from([(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (0.5, 1.5), (3.0, 15.0),
                          (0.15, 0.6)])


@BUDGET_SETTINGS
@given(graphs(), PRICES, PRICES, st.floats(1e-6, 2e-3))
def test_cost_cap_is_never_exceeded(data: dict[str, Any], p1: tuple[float, float],
                                    p2: tuple[float, float], cap: float) -> None:
    for name, (pin, pout) in (("m1", p1), ("m2", p2)):
        data["models"][name]["price"] = {"input_per_mtok": pin, "output_per_mtok": pout}
    free, _, _ = run_budgeted(data)
    # the worst case as a budget must plan for it before any text is drawn: every reply as
    # long as its max_tokens (later prompts quote earlier replies)
    _, _, free_requests = run_budgeted(widest(data), full_text)
    capped_data = {**data, "budget": {"max_cost_usd_per_query": cap}}
    res, budget, _ = run_budgeted(capped_data)
    assert sum(c.cost_usd for c in res.calls) <= cap * (1 + 1e-9)
    check_budget_result(res, budget, capped_data)
    prices = {"m1": p1, "m2": p2}
    worst = sum(
        r.n * (planned_prompt(r.messages) * prices[f"m{m}"][0]
               + r.max_tokens * prices[f"m{m}"][1]) / 1e6
        for r, m in free_requests
    )
    if worst <= cap * (1 - 1e-6):
        assert_unchanged(res, free, data)


@BUDGET_SETTINGS
@given(graphs(), st.sampled_from([1e6, 135e6, 2.5e9]), st.sampled_from([None, 7e8]),
       st.floats(1e8, 1e13))
def test_flops_cap_is_never_exceeded(data: dict[str, Any], params1: float,
                                     params2: float | None, cap: float) -> None:
    data["models"]["m1"]["params"] = params1
    if params2 is not None:
        data["models"]["m2"]["params"] = params2
    free, _, _ = run_budgeted(data)
    # the worst case as a budget must plan for it before any text is drawn: every reply as
    # long as its max_tokens (later prompts quote earlier replies)
    _, _, free_requests = run_budgeted(widest(data), full_text)
    capped_data = {**data, "budget": {"max_flops_per_query": cap}}
    res, budget, _ = run_budgeted(capped_data)
    assert sum(c.flops for c in res.calls) <= cap * (1 + 1e-9)
    for c in res.calls:
        p = params1 if c.model == "m1" else params2
        assert c.flops == pytest.approx(2 * (p or 0) * (c.prompt_tokens + c.completion_tokens))
    check_budget_result(res, budget, capped_data)
    params = {1: params1, 2: params2 or 0.0}
    worst = sum(2 * params[m] * r.n * (planned_prompt(r.messages) + r.max_tokens)
                for r, m in free_requests)
    if worst <= cap * (1 - 1e-6):
        assert_unchanged(res, free, data)


def test_budget_lowers_max_tokens_before_refusing() -> None:
    doc = graph("  s: {role: solver, model: m, max_tokens: 100}", output="s",
                extra="budget: {max_tokens_per_query: 60}")
    backend = Exact(budget_text)
    res = Executor(doc, backends={"m": backend}).run("what is two plus two?")
    (req,) = backend.requests
    assert req.max_tokens == 60 - words(req.messages)
    assert res.status == "ok"


def test_budget_refusal_reports_budget_and_keeps_earlier_answers() -> None:
    doc = graph(
        """
  s: {role: solver, model: m, samples: 3, max_tokens: 5}
  f: {role: fuser, model: m, inputs: [s], max_tokens: 50}
""",
        output="f",
        extra="budget: {max_tokens_per_query: 80}",
    )
    backend = Exact(budget_text)
    res = Executor(doc, backends={"m": backend}).run("q")
    # only the solver's requests (its narrowest first, then the rest): the fuser's prompt
    # alone does not fit
    assert all(r.max_tokens == 5 for r in backend.requests)
    assert res.status == "budget"
    assert res.steps["f"].status == "budget"
    assert res.answer is not None  # the fuser passes its inputs through
    assert res.usage.tokens <= 80


def test_cost_cap_with_priced_input_only() -> None:
    """A model that charges for input tokens only is still held to the cost cap."""
    doc = loads_graph(
        """
version: 1
name: t
models:
  m: {backend: scripted, model: m, price: {input_per_mtok: 1000000, output_per_mtok: 0}}
nodes:
  a: {role: solver, model: m}
  b: {role: solver, model: m, inputs: [a]}
  c: {role: solver, model: m, inputs: [b]}
output: c
budget: {max_cost_usd_per_query: 25}
"""
    )
    backend = Exact(budget_text)
    res = Executor(doc, backends={"m": backend}).run("one two three")
    # each prompt costs $1 a word; the system prompt alone is over 8 words
    assert res.usage.cost_usd <= 25
    assert res.status == "budget"
    assert len(backend.requests) < 3


def test_adaptive_samples_stop_when_the_budget_runs_out() -> None:
    doc = graph(
        "  s: {role: solver, model: m, max_tokens: 3, "
        "samples: {min: 2, max: 16, stop: settled}}",
        output="s",
        extra="budget: {max_tokens_per_query: 160}",
    )
    # two words, or one when max_tokens is cut to 1 (a model never writes more)
    backend = Exact(lambda req, i: f"{'Answer: ' * (req.max_tokens > 1)}{(req.seed + i) % 2}")
    res = Executor(doc, backends={"m": backend}).run("q")
    drawn = res.steps["s"].meta["samples"]
    assert 2 <= drawn < 16
    # the graph ran as planned (the budget was planned for): not "budget", but the report
    # says the step stopped short of what it wanted, and why
    assert res.status == "ok"
    assert res.budget is not None
    report = res.budget.steps["s"]
    assert (report["wanted"], report["drawn"]) == (16, drawn)
    assert any(r.startswith(f"stopped at {drawn}") for r in report["reasons"])
    assert res.usage.tokens <= 160
    # the budget was spent: one more sample's worst case would not have fit
    (req, *_) = backend.requests
    assert res.usage.tokens > 160 - (words(req.messages) + 3)


# ------------------------------------------------------------------------ adaptive width


def adaptive_doc(rule: str) -> Any:
    return graph(f"  s: {{role: solver, model: m, samples: {rule}}}", output="s")


def test_adaptive_stops_early_when_answers_agree() -> None:
    backend = ScriptedBackend(answer_of(7))
    res = Executor(adaptive_doc("{min: 2, max: 16, stop: settled}"),
                   backends={"m": backend}).run("q")
    # 'settled' stops once the leader's margin exceeds the samples left: 10 > 16 - 10
    assert res.steps["s"].meta["samples"] == 10
    assert sum(r.n for r in backend.requests) == 10
    assert [r.n for r in backend.requests] == [2, 2, 2, 2, 2]
    assert [r.sample_offset for r in backend.requests] == [0, 2, 4, 6, 8]
    assert res.answer == "7"
    assert res.usage.samples == 10


def test_adaptive_draws_everything_when_answers_split() -> None:
    backend = ScriptedBackend(lambda req, i: f"Answer: {(req.sample_offset + i) % 2}")
    res = Executor(adaptive_doc("{min: 2, max: 16, stop: settled}"),
                   backends={"m": backend}).run("q")
    assert res.steps["s"].meta["samples"] == 16
    assert sum(r.n for r in backend.requests) == 16


def test_adaptive_confidence_rule() -> None:
    backend = ScriptedBackend(answer_of(7))
    res = Executor(adaptive_doc("{min: 2, max: 16, stop: confidence, confidence: 0.95}"),
                   backends={"m": backend}).run("q")
    assert res.steps["s"].meta["samples"] == 4  # P = 31/32 after four agreeing samples
    split = ScriptedBackend(lambda req, i: f"Answer: {(req.sample_offset + i) % 2}")
    res = Executor(adaptive_doc("{min: 2, max: 12, stop: confidence}"),
                   backends={"m": split}).run("q")
    assert res.steps["s"].meta["samples"] == 12


def test_adaptive_batch_and_min() -> None:
    backend = ScriptedBackend(answer_of(7))
    res = Executor(adaptive_doc("{min: 3, max: 9, batch: 4}"), backends={"m": backend}).run("q")
    # 3 agree: 3 > 6? no; 7: 7 > 2: stop (the last batch is clipped to max)
    assert [r.n for r in backend.requests] == [3, 4]
    assert res.steps["s"].meta["samples"] == 7


# -------------------------------------------------------------------------------- usage


def test_usage_per_node_and_model_with_flops_and_cost() -> None:
    doc = loads_graph(
        """
version: 1
name: usage
models:
  small: {backend: scripted, model: s, params: 135M,
          price: {input_per_mtok: 0.5, output_per_mtok: 2.0}}
  big: {backend: scripted, model: b, params: 2B}
nodes:
  solve: {role: solver, model: small, samples: 3}
  judge: {role: judge, model: big, mode: score, inputs: [solve]}
output: judge
"""
    )
    small = ScriptedBackend(lambda req, i: f"so the answer is {i}\nAnswer: {i}")
    big = ScriptedBackend(lambda req, i: "Score: 7 out of ten")
    res = Executor(doc, backends={"small": small, "big": big}).run("what is one plus one?")
    assert res.status == "ok"

    by_node = res.usage_by_node()
    by_model = res.usage_by_model()
    assert set(by_node) == {"solve", "judge"}
    assert set(by_model) == {"small", "big"}

    (sreq,) = small.requests
    s_prompt = 3 * words(sreq.messages)
    s_completion = sum(len(f"so the answer is {i}\nAnswer: {i}".split()) for i in range(3))
    u = by_node["solve"]
    assert (u.calls, u.samples) == (1, 3)
    assert (u.prompt_tokens, u.completion_tokens) == (s_prompt, s_completion)
    assert u.flops == pytest.approx(2 * 135e6 * (s_prompt + s_completion))
    assert u.cost_usd == pytest.approx(s_prompt * 0.5e-6 + s_completion * 2.0e-6)

    assert len(big.requests) == 3  # one score call per candidate
    b_prompt = sum(words(r.messages) for r in big.requests)
    u = by_model["big"]
    assert (u.calls, u.samples) == (3, 3)
    assert (u.prompt_tokens, u.completion_tokens) == (b_prompt, 3 * 5)
    assert u.flops == pytest.approx(2 * 2e9 * (b_prompt + 15))
    assert u.cost_usd == 0.0

    tot = res.usage
    assert tot.tokens == s_prompt + s_completion + b_prompt + 15
    assert tot.flops == pytest.approx(by_model["small"].flops + by_model["big"].flops)
    assert tot.cost_usd == pytest.approx(by_model["small"].cost_usd)
    assert tot.cached_calls == 0 and tot.errors == 0
    d = res.to_dict()
    assert d["usage"]["tokens"] == tot.tokens
    assert d["usage_by_model"]["big"]["calls"] == 3
    assert json.loads(json.dumps(d))["status"] == "ok"


def test_backend_price_and_params_are_used_when_the_entry_declares_none() -> None:
    doc = graph("  s: {role: solver, model: m}", output="s")
    backend = ScriptedBackend(answer_of(1), params=1e9, price=(1.0, 4.0))
    res = Executor(doc, backends={"m": backend}).run("q")
    u = res.usage
    assert u.flops == pytest.approx(2e9 * u.tokens)
    assert u.cost_usd == pytest.approx((u.prompt_tokens * 1.0 + u.completion_tokens * 4.0) / 1e6)


# ------------------------------------------------------------------------------ errors


class Failing(ScriptedBackend):
    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.requests.append(request)
        await asyncio.sleep(0)
        raise BackendError("connection refused")


async def test_backend_errors_are_infrastructure_errors_not_answers() -> None:
    doc = graph(
        """
  good: {role: solver, model: ok, samples: 2}
  bad: {role: solver, model: broken, samples: 3}
  v: {role: vote, inputs: [good, bad]}
""",
        models="ok broken",
        output="v",
    )
    ok = ScriptedBackend(lambda req, i: f"sample {i}\nAnswer: 5")
    res = await Executor(doc, backends={"ok": ok, "broken": Failing()}).arun("q")
    assert res.status == "error"
    assert res.infra_errors == ["bad: connection refused"]
    assert res.error is not None and "connection refused" in res.error
    assert res.steps["bad"].status == "error"
    assert res.steps["bad"].candidates == []
    assert res.steps["v"].meta["voters"] == 2  # only the working model's samples count
    assert res.answer == "5"
    assert res.usage.errors == 1
    assert res.usage_by_model()["broken"].tokens == 0


async def test_backend_error_on_the_only_path_gives_no_answer() -> None:
    doc = graph("  s: {role: solver, model: m, samples: 4}", output="s")
    res = await Executor(doc, backends={"m": Failing()}).arun("q")
    assert res.status == "error"
    assert res.answer is None
    assert res.infra_errors


# ------------------------------------------------------------------------------- seeds


def test_sample_i_uses_seed_plus_i() -> None:
    doc = graph(
        """
  s: {role: solver, model: m, samples: 4, seed: 7}
  ff: {role: first_finish, model: m, samples: 3, k: 3, seed: 20}
  j: {role: judge, model: m, mode: score, inputs: [s, ff], seed: 100}
""",
        output="j",
    )
    backend = ScriptedBackend()  # replies 'Answer: <seed + i>'
    res = Executor(doc, backends={"m": backend}).run("q")
    assert [c.answer for c in res.steps["s"].candidates] == ["7", "8", "9", "10"]
    assert sorted(c.answer for c in res.steps["ff"].candidates) == ["20", "21", "22"]
    sreq = [r for r in backend.requests if r.seed == 7]
    assert len(sreq) == 1 and sreq[0].n == 4
    # first-finish draws one sample per request, sample i with seed + i
    assert sorted((r.seed, r.sample_offset, r.n) for r in backend.requests
                  if 20 <= r.seed < 100) == [(20, 0, 1), (21, 1, 1), (22, 2, 1)]
    # the calls of one step get seeds that never overlap
    judge_seeds = sorted(r.seed for r in backend.requests if r.seed >= 100)
    assert len(judge_seeds) == 7 and len(set(judge_seeds)) == 7


def test_adaptive_samples_continue_the_seed_sequence() -> None:
    backend = ScriptedBackend(lambda req, i: f"Answer: {(req.seed + i) % 2}")
    doc = graph("  s: {role: solver, model: m, seed: 3, samples: {min: 2, max: 6}}",
                output="s")
    res = Executor(doc, backends={"m": backend}).run("q")
    assert [(r.seed, r.sample_offset) for r in backend.requests] == [(3, 0), (5, 2), (7, 4)]
    assert [c.answer for c in res.steps["s"].candidates] == ["1", "0", "1", "0", "1", "0"]


def test_two_runs_give_identical_results() -> None:
    doc = graph(
        """
  p: {role: planner, model: m}
  s: {role: solver, model: m, inputs: [p], samples: 5}
  d: {role: debate, models: [m], agents: 2, rounds: 2}
  v: {role: vote, inputs: [s, d]}
""",
        output="v",
    )

    def respond(req: GenerationRequest, i: int) -> str:
        return f"Answer: {(req.seed * 31 + i * 7 + words(req.messages)) % 4}"

    def strip(res: QueryResult) -> dict[str, Any]:
        d = res.to_dict()
        d.pop("latency_s")
        for part in ("usage", *(f"usage_by_{k}" for k in ("node", "model"))):
            for u in [d[part], *d[part].values()] if part != "usage" else [d[part]]:
                if isinstance(u, dict):
                    u.pop("latency_s", None)
        for c in d["calls"]:
            c.pop("latency_s")
            c.pop("start_s")  # timing, like the latency
        return d

    runs = [Executor(doc, backends={"m": ScriptedBackend(respond)}).run("q") for _ in range(2)]
    assert strip(runs[0]) == strip(runs[1])


def test_a_binding_does_not_keep_the_loops_it_was_used_in() -> None:
    """A sync caller runs each query in a loop of its own; a model's concurrency cap made
    callers wait in each (its semaphore then refers to that loop)."""
    import gc
    import weakref

    doc = loads_graph("version: 1\nname: r\nmodels:\n  m: {backend: scripted, model: m, "
                      "max_concurrency: 1, timeout_s: 30}\nnodes:\n  s: {role: solver, "
                      "model: m}\noutput: s\n")
    ex = Executor(doc, backends={"m": ScriptedBackend(answer_of(1), latency=0.01)})
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def three_at_once() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert all(r.status == "ok" for r in await ex.arun_many(["a", "b", "c"],
                                                                concurrency=3))

    for _ in range(4):
        asyncio.run(three_at_once())
    gc.collect()
    assert sum(r() is not None for r in loops) <= 1  # at most the last one, until the next
