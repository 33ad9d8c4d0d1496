"""Results store, runner and summary, with a scripted graph and a stand-in task."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tts_graph import Executor, loads_graph
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import BackendError
from tts_graph.evaluate.runner import run_items
from tts_graph.evaluate.store import ResultStore, StoreError
from tts_graph.evaluate.summary import percentile, summarize, wilson

GRAPH = """
version: 1
name: echo
models: {m: {backend: scripted, model: x, max_retries: 0,
             price: {input_per_mtok: 1, output_per_mtok: 1}}}
nodes:
  solve: {role: solver, model: m}
output: solve
"""


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Score:
    correct: bool
    detail: str = ""


class Exact:
    name = "exact"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        return Score(answer == item.answer)


ITEMS = [Item(str(i), f"q{i}", str(i % 3)) for i in range(20)]


def executor(fail: set[str] | None = None) -> Executor:
    fail = fail or set()

    class Backend(ScriptedBackend):
        async def generate(self, request):  # type: ignore[no-untyped-def]
            q = request.messages[-1].content
            if q in fail:
                raise BackendError("HTTP 401")
            return await super().generate(request)

    backend = Backend(lambda req, i: f"Answer: {int(req.messages[-1].content[1:]) % 2}")
    return Executor(loads_graph(GRAPH), backends={"m": backend})


IDENT = {"graph_name": "echo", "task": "t", "planned": 20}


def test_rows_are_written_and_summarised(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.bind(IDENT, resume=False)
    n = asyncio.run(run_items(executor(), Exact(), ITEMS, store, concurrency=4))
    assert n == 20 and store.count() == 20
    s = summarize(store)
    expected = sum(1 for i in range(20) if str(i % 2) == str(i % 3))
    assert (s.correct, s.scored, s.infra_errors) == (expected, 20, 0)
    assert s.ci95 == wilson(expected, 20)
    assert s.calls == 20 and s.cost_usd > 0
    assert [r.item_id for r in store.rows()] == [str(i) for i in range(20)]
    assert set(s.by_node) == {"solve"} and set(s.by_model) == {"m"}


def test_infra_errors_are_unscored_and_rerun_on_resume(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.bind(IDENT, resume=False)
    asyncio.run(run_items(executor(fail={"q3", "q4"}), Exact(), ITEMS, store))
    s = summarize(store)
    assert s.infra_errors == 2 and s.scored == 18
    assert store.done_ids() == {str(i) for i in range(20)} - {"3", "4"}
    # a resume runs only the two, and they now succeed
    store.bind(IDENT, resume=True)
    ran = asyncio.run(run_items(executor(), Exact(), ITEMS, store))
    assert ran == 2
    s = summarize(store)
    assert (s.infra_errors, s.scored, s.done) == (0, 20, 20)


class Flaky(Exact):
    """Fails to score some answers, as a scorer whose sandbox or temp space is gone does."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        if item.id in self.fail:
            raise OSError(28, "No space left on device")
        return super().score(item, answer, text)


def test_a_scorer_that_fails_is_an_infra_error_not_a_wrong_answer(tmp_path: Path) -> None:
    """A scorer's exception ended the whole run (or, in eval workers, the worker)."""
    store = ResultStore(tmp_path / "run")
    store.bind(IDENT, resume=False)
    asyncio.run(run_items(executor(), Flaky({"5", "6"}), ITEMS, store, concurrency=4))
    rows = {r.item_id: r for r in store.rows()}
    assert len(rows) == 20
    for i in ("5", "6"):
        assert rows[i].status == "error" and rows[i].correct is None
        assert rows[i].error == "scoring failed: OSError: [Errno 28] No space left on device"
    s = summarize(store)
    assert s.infra_errors == 2 and s.scored == 18
    store.bind(IDENT, resume=True)  # a resume scores them again
    assert asyncio.run(run_items(executor(), Exact(), ITEMS, store)) == 2
    assert summarize(store).scored == 20


def test_a_failed_write_stops_every_worker(tmp_path: Path) -> None:
    """The store cannot take a result (disk full, a locked file): run_items raises it, and the
    other workers stop with it instead of running on, unrecorded, in the caller's loop."""
    store = ResultStore(tmp_path / "run")
    store.bind(IDENT, resume=False)
    ex = executor()
    asked: list[str] = []
    real = ex.arun

    async def arun(question: str, **kw: Any) -> Any:
        asked.append(question)
        await asyncio.sleep(0.01)
        return await real(question, **kw)

    ex.arun = arun  # type: ignore[method-assign]
    writes = 0

    def write(row: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise StoreError("disk full")

    store.write = write  # type: ignore[method-assign]

    async def main() -> int:
        with pytest.raises(StoreError, match="disk full"):
            await run_items(ex, Exact(), ITEMS, store, concurrency=4)
        seen = len(asked)
        await asyncio.sleep(0.2)  # workers left running would go on asking
        return len(asked) - seen

    assert asyncio.run(main()) == 0
    assert len(asked) < len(ITEMS)


def test_a_code_sandbox_that_cannot_be_set_up_is_not_a_verdict(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph import sandbox
    from tts_graph.evaluate.scorers import CodeScorer, ScoringUnavailable
    from tts_graph.sandbox.host import SETUP_FAILED, SandboxResult, _verdict

    passed, reason = _verdict(SETUP_FAILED, False, "sandbox setup failed: mount /proc: EPERM\n")
    assert not passed and reason == "sandbox setup failed: mount /proc: EPERM"
    assert SandboxResult(passed, reason, "", "").setup_failed
    # a program of its own that exits 97 is a failed program, as before
    assert not SandboxResult(*_verdict(SETUP_FAILED, False, "boom"), "", "").setup_failed
    monkeypatch.setattr(sandbox, "run_python",
                        lambda *a, **k: SandboxResult(False, reason, "", ""))
    item = Item("h", "q", "", {"prompt": "def f():\n", "test": "def check(c): pass",
                              "entry_point": "f"})
    with pytest.raises(ScoringUnavailable, match="code sandbox: sandbox setup failed"):
        CodeScorer().score(item, None, "    return 1\n")  # type: ignore[arg-type]


def test_resume_refuses_another_graph_or_task(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    store.bind(IDENT, resume=False)
    with pytest.raises(StoreError, match="already holds a run"):
        ResultStore(tmp_path / "run").bind(IDENT, resume=False)
    with pytest.raises(StoreError, match="different task"):
        ResultStore(tmp_path / "run").bind({**IDENT, "task": "other"}, resume=True)


def test_foreign_results_file_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.sqlite").write_bytes(b"not sqlite at all" * 50)
    with pytest.raises(StoreError, match="not usable"):
        ResultStore(run)


def test_wilson_and_percentiles() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and 0.65 < lo < 0.75
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_plot_draws_runs_at_zero_and_full_accuracy(tmp_path: Path) -> None:
    """At 0% the Wilson interval's lower end equals the estimate only up to rounding; the
    plot must not turn that into a negative error bar."""
    from tts_graph.evaluate.plot import accuracy_vs_cost
    from tts_graph.evaluate.summary import Summary, wilson

    def summary(name: str, correct: int, n: int) -> Summary:
        return Summary(run_dir=str(tmp_path), graph=name, task="t", planned=n, done=n,
                       scored=n, correct=correct, accuracy=correct / n, ci95=wilson(correct, n),
                       infra_errors=0, statuses={"ok": n}, prompt_tokens=10,
                       completion_tokens=10, tokens_per_question=20.0 + correct, cost_usd=0.0,
                       billed_usd=0.0, cost_per_question=0.0, flops=0.0, calls=n,
                       cached_calls=0, retries=0, latency_p50=0.1, latency_p90=0.1,
                       latency_p99=0.1)

    runs = [summary("none", 0, 50), summary("all", 50, 50), summary("some", 3, 50)]
    out = accuracy_vs_cost(runs, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tally_of_a_store_counts_every_result_stored(tmp_path: Path) -> None:
    """The progress line's figures (eval with workers reads them from the store; a resumed
    run starts from its earlier sessions'): unscored rows are errors, not wrong answers."""
    from tts_graph.evaluate.store import Row, Tally

    store = ResultStore(tmp_path / "run")
    assert store.tally() == Tally()
    rows = [Row(item_id=str(i), idx=i, question="q", gold="1", answer="1", text="1",
                correct=(None, True, False, True)[i], status="error" if i == 0 else "ok",
                error=None, score_detail="", latency_s=0.1, prompt_tokens=10 * i,
                completion_tokens=i, cost_usd=0.5, billed_usd=0.25 * i, flops=0.0, calls=1,
                cached_calls=0, retries=0, usage_by_node={}, usage_by_model={})
            for i in range(4)]
    running = Tally()
    for row in rows:
        store.write(row)
        running.add(row)
    assert store.tally() == running == Tally(scored=3, correct=2, errors=1, cost_usd=1.5,
                                             tokens=66)
    assert running.line() == "acc 66.7%  $1.5000  66 tok  1 infra errors"


def test_a_store_whose_making_failed_half_way_is_made_whole_next_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that failed between the store's two tables (a disk that filled up) left half
    a store, which every later start refused as "not a tts-graph results store". It is made
    in one transaction now: the next start makes it whole."""
    import sqlite3

    import tts_graph.evaluate.store as store_mod

    class FullDisk(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("CREATE TABLE results"):
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    real = sqlite3.connect
    monkeypatch.setattr(store_mod.sqlite3, "connect",
                        lambda *a, **kw: real(*a, factory=FullDisk, **kw))
    with pytest.raises(StoreError, match="disk is full"):
        ResultStore(tmp_path / "run")
    monkeypatch.setattr(store_mod.sqlite3, "connect", real)
    store = ResultStore(tmp_path / "run")  # the disk has room again
    store.bind({"task": "t"}, resume=False)
    assert store.count() == 0 and store.identity() == {"task": "t"}
