"""Run a compiled graph on one query or many.

Each step starts the moment its inputs are done (one task per step awaiting its dependencies:
no supersteps). The calls of a step run concurrently, and so do many queries, under one global
cap. Budgets are reserved before each call is sent; a budgeted query is planned whole first and
spent in waves (``budget_plan``). Cancellation is real: first-finish cancels the samples it
does not need, and a timeout cancels everything still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import arguments, deadlines
from .answers import extract_answer
from .backends.base import Backend, GenerationRequest
from .backends.registry import backend_names, create_backend
from .bindings import ModelBinding
from .blocking import close_soon, run_sync
from .budget import QueryBudget, Reservation
from .budget_plan import BudgetLedger, BudgetReport
from .cache import ResponseCache
from .compile import CompiledGraph, Step, compile_graph
from .errors import ArgumentError, BackendError, BudgetExhausted, TTSGraphError
from .roles.adaptive import should_stop
from .roles.base import Call, StepContext
from .spec import GraphDoc, load_graph
from .streaming import TextSink, TextStream
from .types import Candidate, Completion, StepOutput
from .usage import CallRecord, Usage, by, total

QueryStatus = Literal["ok", "budget", "timeout", "error"]


@dataclass(slots=True)
class QueryResult:
    """The typed result of one query: final answer, each step's output, every call's usage."""

    question: str
    answer: str | None
    text: str | None
    status: QueryStatus
    graph: str
    steps: dict[str, StepOutput] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)
    latency_s: float = 0.0
    error: str | None = None
    id: int | str = 0
    #: how a budgeted query used its budget (None when the graph declares no cap)
    budget: BudgetReport | None = None

    @property
    def usage(self) -> Usage:
        return total(self.calls)

    def usage_by_node(self) -> dict[str, Usage]:
        return by(self.calls, "node")

    def usage_by_model(self) -> dict[str, Usage]:
        return by(self.calls, "model")

    @property
    def infra_errors(self) -> list[str]:
        return [f"{c.step}: {c.error}" for c in self.calls if c.error]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "graph": self.graph,
            "question": self.question,
            "answer": self.answer,
            "text": self.text,
            "status": self.status,
            "error": self.error,
            "latency_s": round(self.latency_s, 6),
            "usage": self.usage.to_dict(),
            "usage_by_node": {k: v.to_dict() for k, v in self.usage_by_node().items()},
            "usage_by_model": {k: v.to_dict() for k, v in self.usage_by_model().items()},
            "steps": {
                sid: {
                    "node": out.node,
                    "kind": out.kind,
                    "status": out.status,
                    "error": out.error,
                    "candidates": [
                        {"text": c.text, "answer": c.answer, "score": c.score, "model": c.model}
                        for c in out.candidates
                    ],
                    "meta": _plain(out.meta),
                }
                for sid, out in self.steps.items()
            },
            "calls": [c.to_dict() for c in self.calls],
            **({"budget": self.budget.to_dict()} if self.budget is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryResult:
        """A result back from ``to_dict()`` (read from JSON, say). What ``to_dict`` sums
        (usage) is summed again from the calls; a step's meta comes back as the plain data
        ``to_dict`` wrote."""
        if not isinstance(data, dict):
            raise ArgumentError(f"QueryResult.from_dict takes a dict, not "
                                f"{arguments.type_name(data)}")
        try:
            steps = {
                sid: StepOutput(
                    step=sid, node=s["node"], kind=s["kind"], status=s["status"],
                    error=s.get("error"), meta=dict(s.get("meta") or {}),
                    candidates=[Candidate(text=c["text"], answer=c.get("answer"),
                                          score=c.get("score"), model=c.get("model"))
                                for c in s.get("candidates", [])])
                for sid, s in (data.get("steps") or {}).items()
            }
            budget = data.get("budget")
            return cls(
                question=data["question"], answer=data.get("answer"), text=data.get("text"),
                status=data["status"], graph=data["graph"], steps=steps,
                calls=[CallRecord(**c) for c in data.get("calls", [])],
                latency_s=float(data.get("latency_s", 0.0)), error=data.get("error"),
                id=data.get("id", 0),
                budget=BudgetReport.from_dict(budget) if budget is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArgumentError(f"not a QueryResult.to_dict() mapping: {type(exc).__name__}: "
                                f"{exc}") from None

    def __repr__(self) -> str:
        # the dataclass repr would hold every step, call and the whole question: megabytes
        # for a long prompt, in a log line or a notebook cell
        u = self.usage
        err = f", error={_clip(self.error)}" if self.error else ""
        return (f"QueryResult(id={self.id!r}, graph={self.graph!r}, status={self.status!r}, "
                f"answer={_clip(self.answer)}, question={_clip(self.question)}, "
                f"steps={len(self.steps)}, calls={u.calls}, tokens={u.tokens}, "
                f"latency_s={self.latency_s:.3f}{err})")


def _clip(text: str | None, limit: int = 80) -> str:
    """``repr(text)``, cut to about ``limit`` characters (saying how long it was)."""
    if text is None or len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} chars)"


def _plain(value: Any) -> Any:
    """Meta values made JSON-safe (candidates inside meta become their text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    text = getattr(value, "text", None)
    return text if isinstance(text, str) else repr(value)


async def _aclose_all(backends: list[Backend]) -> None:
    """Close the backends of an executor that was dropped: best effort, nobody to tell."""
    for backend in backends:
        with contextlib.suppress(Exception):
            await backend.aclose()


async def run_queries(
    run_one: Callable[..., Awaitable[QueryResult]],
    questions: Iterable[str],
    *,
    concurrency: int,
    on_result: Callable[[QueryResult], None] | None = None,
) -> list[QueryResult]:
    """``run_one(question, query_id=i)`` for every question, at most ``concurrency`` at once;
    results in input order (shared by the executor and its traced wrapper)."""
    concurrency = arguments.concurrency(concurrency)
    arguments.callback(on_result, "on_result")
    items = arguments.questions(questions)
    results: list[QueryResult | None] = [None] * len(items)
    todo = iter(enumerate(items))

    # ``concurrency`` workers taking the next question as each finishes: the same order of
    # starts as a task per question behind a semaphore, without a task (and a semaphore
    # wake-up) per question
    async def worker() -> None:
        for i, q in todo:
            res = results[i] = await run_one(q, query_id=i)
            if on_result is not None:
                on_result(res)

    await run_workers([worker() for _ in range(min(concurrency, len(items)))])
    return [r for r in results if r is not None]


async def run_workers(workers: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``workers`` together. When one raises (a query, a callback, a write) or the caller
    is cancelled, the others are cancelled and awaited before it raises: ``gather`` alone
    would leave them running, unseen, after the caller has given up."""
    tasks = [asyncio.ensure_future(w) for w in workers]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Query:
    """Mutable state of one running query."""

    # no instance dict: the collector walks every query in flight
    __slots__ = (
        "_caps",
        "_order",
        "_records",
        "budget",
        "errors",
        "ledger",
        "outputs",
        "question",
        "started",
        "stream",
    )

    def __init__(self, question: str, graph: CompiledGraph, order: dict[str, int],
                 stream: TextStream | None = None) -> None:
        self.question = question
        self.stream = stream
        self._caps = graph.spec.budget
        #: what the query spent against its caps; opened by ``account`` where something is
        #: reserved (a budgeted query, an adaptive or first-k call), else None
        self.budget: QueryBudget | None = None
        self._order = order  # step id -> its place in graph order (the graph's, shared)
        # made when first needed: an empty list is one more object, held by every query in
        # flight, that the collector walks
        self._records: list[tuple[int, int, int, CallRecord]] | None = None
        self.outputs: dict[str, StepOutput] = {}
        self.errors: list[str] | None = None
        self.started = time.perf_counter()  # the origin of CallRecord.start_s
        self.ledger: BudgetLedger | None = None

    def record(self, index: int, sample: int, rec: CallRecord) -> None:
        """Keep ``rec``, the record of the call ``index`` of its step from sample ``sample``."""
        entry = (self._order[rec.step], index, sample, rec)
        if self._records is None:
            self._records = [entry]
        else:
            self._records.append(entry)

    def account(self) -> QueryBudget:
        """The query's budget account, opened on first use."""
        if self.budget is None:
            self.budget = QueryBudget(self._caps)
        return self.budget

    def fail(self, error: str) -> None:
        if self.errors is None:
            self.errors = [error]
        else:
            self.errors.append(error)

    def outputs_in_order(self, order: list[str]) -> dict[str, StepOutput]:
        """Step outputs in graph order (a method: a comprehension in ``arun`` would make
        ``q`` a cell held by every query in flight)."""
        return {sid: self.outputs[sid] for sid in order if sid in self.outputs}

    @property
    def calls(self) -> list[CallRecord]:
        """Records in graph order (step, call, sample), whatever order calls finished in,
        so a run's result does not depend on timing."""
        records = self._records
        if records is None:
            return []
        if len(records) == 1:  # the common one-call query: nothing to order
            return [records[0][3]]
        return [r[3] for r in sorted(records, key=lambda r: r[:3])]


@dataclass(frozen=True)
class _Plan:
    """What every query of one compiled graph shares, worked out once per graph."""

    graph: CompiledGraph
    #: step id -> its place in graph order
    order: dict[str, int]

    @classmethod
    def of(cls, graph: CompiledGraph) -> _Plan:
        return cls(graph, {sid: i for i, sid in enumerate(graph.order)})


#: a query without a timeout: no deadline (stateless, so one serves every query)
_NO_DEADLINE = contextlib.nullcontext()


def _sent_as_asked(q: _Query, call: Call) -> bool:
    """A call sent straight, as asked: one sampling policy (no first-k, no adaptive width)
    in a query with no cap (no ledger), so that no reservation can narrow it."""
    return q.ledger is None and call.first_k is None and call.adaptive is None


def _seed(step: Step, call: Call) -> int:
    """The seed of a call's first sample (sample i: + i), however the call is sent."""
    return step.sampling.seed + 1000 * call.seed_offset


class Executor:
    """Runs one compiled graph. Backends are created from the graph's model entries unless
    given in ``backends`` (model name → backend), which tests and embedders use. With
    ``cache`` (a ``ResponseCache`` or a path), every sample is looked up before it is sent."""

    def __init__(self, graph: CompiledGraph | GraphDoc | str | Path, *,
                 backends: dict[str, Backend] | None = None,
                 cache: ResponseCache | str | Path | None = None) -> None:
        if isinstance(graph, (str, os.PathLike)):
            graph = load_graph(graph)
        if not isinstance(graph, (GraphDoc, CompiledGraph)):
            raise ArgumentError("Executor() takes a graph file path, a GraphDoc or a "
                                f"CompiledGraph, not {arguments.type_name(graph)}")
        self._given = arguments.backends(backends, graph.spec.models)
        arguments.optional_path(cache, "cache", ResponseCache)
        if isinstance(graph, GraphDoc):
            graph = compile_graph(graph, backends=[*backend_names(), *self._given])
        self.graph = graph
        self._bindings: dict[str, ModelBinding] | None = None
        # two threads starting their first queries at once create the backends once
        self._bindings_lock = threading.Lock()
        self._plan: _Plan | None = None
        self.cache = cache if isinstance(cache, ResponseCache) or cache is None \
            else ResponseCache(cache)

    # ---------------------------------------------------------------------------- set-up

    def bindings(self) -> dict[str, ModelBinding]:
        if self._bindings is not None:
            return self._bindings
        with self._bindings_lock:
            if self._bindings is not None:
                return self._bindings
            spec = self.graph.spec
            out: dict[str, ModelBinding] = {}
            for name in self.graph.used_models():
                mspec = spec.models[name]
                backend = self._given.get(name) or create_backend(mspec, self.graph.doc.base_dir)
                out[name] = ModelBinding(name, mspec, backend, cache=self.cache)
            owned = [b.backend for name, b in out.items() if name not in self._given]
            if owned:
                # dropped without aclose(): what its backends pooled on the loop of blocking
                # calls (which outlives it) is closed there, not collected open
                weakref.finalize(self, close_soon, functools.partial(_aclose_all, owned)
                                 ).atexit = False
            self._bindings = out
        return self._bindings

    async def aclose(self) -> None:
        for b in (self._bindings or {}).values():
            if b.name not in self._given:
                await b.backend.aclose()

    # ---------------------------------------------------------------------------- running

    def run(self, question: str) -> QueryResult:
        """Run one query (blocking)."""
        return run_sync(lambda: self.arun(question))

    def run_many(self, questions: Sequence[str], *, concurrency: int = 8) -> list[QueryResult]:
        return run_sync(lambda: self.arun_many(questions, concurrency=concurrency))

    async def arun_many(
        self,
        questions: Iterable[str],
        *,
        concurrency: int = 8,
        on_result: Callable[[QueryResult], None] | None = None,
    ) -> list[QueryResult]:
        """Run many queries, at most ``concurrency`` at once; results in input order."""
        return await run_queries(self.arun, questions, concurrency=concurrency,
                                 on_result=on_result)

    async def arun(self, question: str, *, query_id: int | str = 0,
                   on_text: TextSink | None = None) -> QueryResult:
        """Run one query. ``on_text`` gets the answer's text piece by piece: token by token
        while the output step decodes, when that step streams (see ``tts_graph.streaming``),
        and otherwise whole when the query ends. It is not called for a query whose status
        is ``error``, beyond what had streamed before the failure."""
        arguments.question(question)
        arguments.callback(on_text, "on_text")
        self.bindings()
        graph = self.graph
        plan = self._plan
        if plan is None or plan.graph is not graph:
            plan = self._plan = _Plan.of(graph)
        q = _Query(question, graph, plan.order,
                   TextStream(on_text) if on_text is not None else None)
        start = q.started
        b = graph.spec.budget
        if (b.max_tokens_per_query is not None or b.max_cost_usd_per_query is not None
                or b.max_flops_per_query is not None):
            q.ledger = self._ledger(q)
        status: QueryStatus = "ok"
        timeout = graph.spec.budget.timeout_s
        # every step but the output runs in a task of its own, started as its inputs are
        # done; the output step, which every other step leads to (compile checks) and so
        # starts last, runs in this task once they are all done: a task, a gather and their
        # loop turns fewer a query (a one-step graph runs no task at all)
        tasks: dict[str, asyncio.Task[StepOutput]] = {}
        for sid in graph.order:
            if sid != graph.output:
                tasks[sid] = asyncio.create_task(self._step(q, graph.steps[sid], tasks),
                                                 name=f"step:{sid}")
        try:
            with (_NO_DEADLINE if timeout is None
                  else deadlines.for_loop(timeout).entered()):
                if tasks:
                    await asyncio.gather(*tasks.values())
                await self._step(q, graph.steps[graph.output], tasks)
        except TimeoutError:
            status = "timeout"
        finally:
            pending = [t for t in tasks.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:  # nothing to wait for on the normal path: skip a loop turn
                await asyncio.gather(*pending, return_exceptions=True)
        final = q.outputs.get(graph.output)
        if final is None or not final.candidates:
            final = self._partial(q) or final
        if status == "ok" and q.errors is not None:
            status = "error"
        elif status == "ok" and q.budget is not None and q.budget.exhausted:
            status = "budget"
        best = final.best if final is not None else None
        if q.stream is not None and status != "error":
            q.stream.finish(best.text if best else None)
        return QueryResult(
            question=question,
            answer=best.answer if best else None,
            text=best.text if best else None,
            status=status,
            graph=graph.name,
            steps=q.outputs_in_order(graph.order),
            calls=q.calls,
            latency_s=time.perf_counter() - start,
            error="; ".join(q.errors) if q.errors is not None else None,
            id=query_id,
            budget=q.ledger.report() if q.ledger is not None else None,
        )

    def _ledger(self, q: _Query) -> BudgetLedger:
        """The ledger of a query with a cap (apart: its lambdas would make a cell that every
        query in flight holds, cap or not)."""
        bindings = self.bindings()
        return BudgetLedger(self.graph, q.question, q.account(),
                            lambda m, msgs: bindings[m].backend.count_tokens(msgs),
                            lambda m: bindings[m].costing, q.outputs)

    def _partial(self, q: _Query) -> StepOutput | None:
        """The nearest finished step upstream of the output that holds an answer."""
        frontier = [self.graph.output]
        seen: set[str] = set()
        while frontier:
            nxt: list[str] = []
            for sid in frontier:
                out = q.outputs.get(sid)
                if out is not None and out.kind == "answer" and out.candidates:
                    return out
                for d in self.graph.steps[sid].deps:
                    if d not in seen:
                        seen.add(d)
                        nxt.append(d)
            frontier = nxt
        return None

    async def _step(self, q: _Query, step: Step,
                    tasks: dict[str, asyncio.Task[StepOutput]]) -> StepOutput:
        """One step, started the moment its inputs (``tasks`` of the steps it reads) are
        done."""
        inputs: list[StepOutput] = []
        for d in step.deps:  # a loop, not a comprehension: that would make ``tasks`` a cell
            inputs.append(await tasks[d])
        ctx = StepContext(
            question=q.question, node_name=step.node, node=step.spec, phase=step.phase,
            round=step.round, models=step.models, extract=step.extract, inputs=inputs,
            params=step.params,
        )
        role = step.role
        status: Literal["ok", "budget", "error"] = "ok"
        error: str | None = None
        try:
            calls = role.calls(ctx)
        except Exception as exc:  # a role bug must name the step, not kill the run silently
            raise TTSGraphError(f"step {step.id}: role '{step.role.name}' failed: {exc}") from exc
        if q.ledger is not None:
            # an output whose prompt the guarded budget cannot pay for quotes fewer inputs
            ctx, calls = q.ledger.fit_output_inputs(step.id, ctx, calls, role.calls)
        # a budgeted query reserves the step's first wave as planned, before any await
        # (None without a ledger: every call as asked)
        firsts = q.ledger.start_step(step.id, ctx, calls) if q.ledger is not None else None
        # what lives across the awaits below is kept to what they need: every query in
        # flight holds it, and the collector walks it
        outcomes: list[Any]
        if len(calls) == 1:  # await it in this task: a gather costs a task and loop turns
            call = calls[0]
            stream = (q.stream if step.id == self.graph.output and role.streams else None)
            try:
                if _sent_as_asked(q, call):  # sent from this frame (no coroutine of its own)
                    comps = await self._plain_request(q, step, call, 0, stream)
                    outcomes = [(comps, len(comps) < call.n)]
                else:
                    outcomes = [await self._call(q, step, call, 0, stream,
                                                 call.n if firsts is None else firsts[0])]
            except (BackendError, BudgetExhausted) as exc:
                outcomes = [exc]
        elif calls:
            outcomes = await asyncio.gather(
                *map(self._send_call, [q] * len(calls), [step] * len(calls), calls,
                     range(len(calls)), [None] * len(calls),
                     firsts if firsts is not None else [c.n for c in calls]),
                return_exceptions=True,
            )
        else:
            outcomes = []
        results: list[list[Completion]] = []
        for o in outcomes:
            if isinstance(o, BaseException):
                if isinstance(o, BackendError):
                    status, error = "error", str(o)
                    results.append([])
                elif isinstance(o, BudgetExhausted):
                    status = "budget" if status == "ok" else status
                    results.append([])
                else:
                    raise o
            else:
                comps, exhausted = o
                if exhausted and status == "ok":
                    status = "budget"
                results.append(comps)
        if q.ledger is not None and any(results):
            # replies that ran longer than the plan reserved for them in later prompts are
            # left out of those prompts where the rest of the plan would not fit with them
            results = q.ledger.keep_fitting(step.id, results,
                                            functools.partial(role.finish, ctx))
        # a step whose every call failed or was refused degrades to what its inputs hold
        try:
            out = role.finish(ctx, results) if any(results) or not calls \
                else role.passthrough(ctx)
        except BackendError as exc:  # what the role itself runs on failed (the code sandbox)
            status, error = "error", str(exc)
            out = role.passthrough(ctx)
        out.step = step.id
        out.status = status if out.status == "ok" else out.status
        out.error = error
        if error:
            q.fail(f"{step.id}: {error}")
        q.outputs[step.id] = out
        if q.ledger is not None:
            # "skipped" only where the budget refused its calls, not where they failed
            q.ledger.finish_step(step.id, bool(calls) and not any(results) and error is None)
        return out

    def _send_call(self, q: _Query, step: Step, call: Call, index: int,
                   stream: TextStream | None, planned: int
                   ) -> Awaitable[tuple[list[Completion], bool]]:
        """``_call``, or for a plain call of a query with no cap (no ledger: the common
        case), ``_plain``, which no reservation can narrow."""
        if _sent_as_asked(q, call):
            return self._plain(q, step, call, index, stream)
        return self._call(q, step, call, index, stream, planned)

    async def _plain(self, q: _Query, step: Step, call: Call, index: int,
                     stream: TextStream | None) -> tuple[list[Completion], bool]:
        """A plain call of a query with no cap, sent straight: ``_call`` without its draw
        closures (cells and frames that every call in flight would hold, and the garbage
        collector walk) and without a reservation (nothing to reserve against)."""
        comps = await self._plain_request(q, step, call, index, stream)
        return comps, len(comps) < call.n

    def _plain_request(self, q: _Query, step: Step, call: Call, index: int,
                       stream: TextStream | None) -> Awaitable[list[Completion]]:
        """The request of a plain call (``_plain``), for its caller to await."""
        binding = self.bindings()[call.model]
        return self._request(q, step, binding, call, index, call.n, _seed(step, call), 0,
                             binding.backend.count_tokens(call.messages),
                             stream if call.n == 1 else None, None)

    async def _call(self, q: _Query, step: Step, call: Call, index: int,
                    stream: TextStream | None = None, planned: int | None = None
                    ) -> tuple[list[Completion], bool]:
        """Send one role call, following its sampling policy. Returns the completions and
        whether the budget cut it short of its plan (``planned`` samples; all ``call.n``
        unbudgeted). A budgeted call draws further samples in waves, beyond its plan, while
        they fit. ``stream`` is used by a plain call for one sample."""
        binding = self.bindings()[call.model]
        seed = _seed(step, call)
        # a budgeted query estimates from what it drew (the server's usage), not the counter
        prompt_tokens = q.ledger.estimate(call.model, call.messages) if q.ledger is not None \
            else binding.backend.count_tokens(call.messages)
        planned = call.n if planned is None else planned

        def live() -> BudgetLedger | None:
            """The ledger where the whole graph is planned (waves), else None (calls only
            guarded); a guarded query may find its plan once replies come back."""
            return q.ledger if q.ledger is not None and q.ledger.fits else None

        async def draw(n: int, offset: int, stream: TextStream | None = None,
                       required: bool = True) -> list[Completion]:
            return await self._send(q, step, binding, call, index, n, seed + offset, offset,
                                    prompt_tokens, stream, required)

        async def more(want: int, offset: int) -> list[Completion]:
            """Samples beyond the plan: what fits whole now, waiting for calls in flight to
            settle (and free what they reserved but did not use) before giving up."""
            while True:
                got = await draw(want, offset, None, False)
                if got or q.ledger is None or not await q.ledger.settled():
                    return got

        try:
            if call.first_k is not None:
                return await self._first_k(draw, planned, call.first_k), False
            if call.adaptive is not None:
                rule = call.adaptive
                got: list[Completion] = []
                answers: list[str | None] = []
                try:
                    while not should_stop(answers, rule):
                        want = rule.min - len(got) if len(got) < rule.min else rule.batch
                        want = max(1, min(want, rule.max - len(got)))
                        ledger = live()
                        if ledger is None or len(got) < planned:
                            new = await draw(min(want, max(1, planned - len(got)))
                                             if ledger is not None else want, len(got))
                        else:
                            new = await more(want, len(got))
                            if not new:
                                break  # the budget holds no more: the step ends narrower
                        got.extend(new)
                        answers.extend(extract_answer(c.text, step.extract) for c in new)
                except BudgetExhausted:
                    if not got:
                        raise
                    return got, True
                return got, (len(got) < min(planned, rule.min) if live() is not None
                             else False)
            comps = await draw(planned, 0, stream if call.n == 1 else None)
            cut = len(comps) < planned
            if q.ledger is not None and live() is None and not cut and len(comps) < call.n:
                # still no plan: the rest as the budget allows (narrowed, or refused)
                try:
                    rest = await draw(call.n - len(comps), len(comps))
                except BudgetExhausted:
                    return comps, True
                cut = len(comps) + len(rest) < call.n
                comps.extend(rest)
                # a plan found with these replies (late) runs the step as planned: waves
                cut = cut and live() is None
            if live() is not None and not cut:
                while len(comps) < call.n:  # waves: spend what earlier draws left
                    new = await more(call.n - len(comps), len(comps))
                    if not new:
                        break
                    comps.extend(new)
            return comps, cut
        finally:
            if q.ledger is not None:
                q.ledger.abandon(step.id, index)

    async def _first_k(self, draw: Callable[[int, int], Any], n: int, k: int
                       ) -> list[Completion]:
        # ``asyncio.wait`` returns a set (no order): done callbacks record the finish order
        finished: list[asyncio.Future[list[Completion]]] = []
        pending: set[asyncio.Future[list[Completion]]] = set()
        for i in range(n):
            fut = asyncio.ensure_future(draw(1, i))
            fut.add_done_callback(finished.append)
            pending.add(fut)
        done_in_order: list[Completion] = []
        first_error: BaseException | None = None
        seen = 0
        try:
            while pending and len(done_in_order) < k:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                new, seen = finished[seen:], len(finished)
                for fut in new:
                    exc = fut.exception()
                    if exc is not None:
                        first_error = first_error or exc
                    else:
                        done_in_order.extend(fut.result())
        finally:
            for fut in pending:
                fut.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if not done_in_order and first_error is not None:
            raise first_error
        return done_in_order[:k]

    async def _send(self, q: _Query, step: Step, binding: ModelBinding, call: Call,
                    index: int, n: int, seed: int, offset: int, prompt_tokens: int,
                    stream: TextStream | None = None, required: bool = True
                    ) -> list[Completion]:
        """Reserve, send and settle one request. An optional draw (beyond the plan) that
        does not fit returns no completions instead of being narrowed."""
        s = step.sampling
        ledger = q.ledger
        max_tokens = s.max_tokens
        if ledger is not None:
            n, max_tokens = ledger.grant(step.id, index, n, required)
            if n == 0:
                return []
            # exact once an earlier wave of this call came back with the server's usage
            prompt_tokens = ledger.prompt_tokens(step.id, index)
        try:
            res = q.account().reserve(prompt_tokens, max_tokens, n, binding.costing)
        except BudgetExhausted:
            if ledger is not None:
                ledger.narrowed(step.id)
            raise
        if ledger is not None and (res.n < n or res.max_tokens < max_tokens):
            ledger.narrowed(step.id)
        n = res.n  # the budget may allow fewer samples than asked
        if ledger is None:
            return await self._request(q, step, binding, call, index, n, seed, offset,
                                       prompt_tokens, stream, res)
        lean = ledger.sent(step.id, index, n, res.max_tokens)
        comps: list[Completion] = []
        try:
            comps = await self._request(q, step, binding, call, index, n, seed, offset,
                                        prompt_tokens, stream, res)
            return comps
        finally:
            ledger.returned(step.id, index, n, comps, res.max_tokens, lean)

    async def _request(self, q: _Query, step: Step, binding: ModelBinding, call: Call,
                       index: int, n: int, seed: int, offset: int, prompt_tokens: int,
                       stream: TextStream | None, res: Reservation | None
                       ) -> list[Completion]:
        """Send one request and record it; settle ``res``, the reservation made for it
        (None for a query with no cap, where nothing is reserved)."""
        s = step.sampling
        max_tokens = s.max_tokens if res is None else res.max_tokens
        request = GenerationRequest(
            messages=call.messages, max_tokens=max_tokens, temperature=s.temperature,
            top_p=s.top_p, seed=seed, n=n, stop=s.stop, sample_offset=offset,
        )
        t0 = time.perf_counter()
        try:
            parts = await binding.generate(request, n * (prompt_tokens + max_tokens),
                                           stream if n == 1 else None)
        except asyncio.CancelledError:
            if res is not None:
                q.account().settle(res, 0, 0.0, 0.0)
            raise
        except BackendError as exc:
            q.record(index, offset, CallRecord(
                step=step.id, node=step.node, model=binding.name, samples=n,
                latency_s=time.perf_counter() - t0, error=str(exc), start_s=t0 - q.started))
            if res is not None:
                q.account().settle(res, 0, 0.0, 0.0)
            raise
        done = time.perf_counter()
        costing = binding.costing
        comps: list[Completion] = []
        spent_tokens, spent_cost, spent_flops = 0, 0.0, 0.0
        for part in parts:
            # cached samples are recorded apart; they count against the budget like live
            # ones, so a replay from the cache takes exactly the same path
            prompt = completion = 0
            for c in part.completions:  # a loop: a generator per sum costs a frame each
                prompt += c.prompt_tokens
                completion += c.completion_tokens
            rec = CallRecord(step=step.id, node=step.node, model=binding.name,
                             samples=len(part.completions), prompt_tokens=prompt,
                             completion_tokens=completion, latency_s=part.latency_s,
                             cost_usd=costing.cost(prompt, completion),
                             flops=costing.flops(prompt, completion), cached=part.cached,
                             retries=part.retries,
                             # a part's latency is its last attempt's, ending about now
                             start_s=max(t0, done - part.latency_s) - q.started)
            spent_tokens += prompt + completion
            spent_cost += rec.cost_usd
            spent_flops += rec.flops
            q.record(index, offset + part.start, rec)
            comps.extend(part.completions)
        if res is not None:
            q.account().settle(res, spent_tokens, spent_cost, spent_flops)
        return comps
