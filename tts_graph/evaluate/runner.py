"""Run a graph over a task's questions: a fixed pool of workers pulls questions one at a time,
so memory does not grow with the number of questions; each result is scored and written to
the run's store as soon as it finishes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TTSGraphError
from ..executor import Executor, QueryResult, run_workers
from .store import ResultStore, Row


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run (checked on resume)."""

    graph_name: str
    graph_sha: str
    task: str
    scorer: str
    split: str
    seed: int
    limit: int | None
    planned: int
    #: the questions themselves (``items_digest``): a task file edited between a run and its
    #: resume, or different on two machines of one run, must not mix its results
    items_sha: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if d["items_sha"] is None:  # as recorded by runs before it was kept
            del d["items_sha"]
        return d


def graph_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def items_digest(items: Sequence[Any]) -> str:
    """A digest of the run's questions: each one's id, question, gold answer and what
    else its scorer reads (options, tests)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([str(it.id), it.question, str(it.answer),
                             getattr(it, "meta", None) or {}],
                            sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


#: the detail of an answer whose scoring failed (``score_result``): stored as an
#: infrastructure error (unscored, run again by ``--resume``)
SCORING_FAILED = "scoring failed: "


def to_row(idx: int, item: Any, res: QueryResult, correct: bool | None, detail: str) -> Row:
    usage = res.usage
    status, error = res.status, res.error
    if correct is None and detail.startswith(SCORING_FAILED):
        status, error = "error", detail
    return Row(
        item_id=str(item.id), idx=idx, question=item.question, gold=str(item.answer),
        answer=res.answer, text=res.text, correct=correct, status=status, error=error,
        score_detail=detail, latency_s=res.latency_s, prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
        billed_usd=usage.billed_usd, flops=usage.flops, calls=usage.calls,
        cached_calls=usage.cached_calls, retries=usage.retries,
        usage_by_node={k: v.to_dict() for k, v in res.usage_by_node().items()},
        usage_by_model={k: v.to_dict() for k, v in res.usage_by_model().items()},
        budget=res.budget.to_dict() if res.budget is not None else None,
    )


async def run_items(
    executor: Executor,
    scorer: Any,
    items: Sequence[Any],
    store: ResultStore,
    *,
    concurrency: int = 8,
    on_row: Callable[[Row], None] | None = None,
    threaded_scoring: bool = False,
) -> int:
    """Run every item not yet done in ``store``; returns how many were run now.

    An infrastructure error (status ``error``) is stored unscored (``correct`` is None) and
    run again by a later resume; every other status is scored."""
    done = store.done_ids()
    todo = iter([(i, it) for i, it in enumerate(items) if str(it.id) not in done])
    ran = 0

    async def worker() -> None:
        nonlocal ran
        for idx, item in todo:  # the shared iterator hands each item to exactly one worker
            res = await executor.arun(item.question, query_id=str(item.id))
            correct, detail = await score_result(scorer, item, res, threaded_scoring)
            row = to_row(idx, item, res, correct, detail)
            store.write(row)
            ran += 1
            if on_row is not None:
                on_row(row)

    # a failed write or callback stops the other workers too: nothing runs on, unrecorded
    await run_workers([worker() for _ in range(max(1, concurrency))])
    return ran


async def score_result(scorer: Any, item: Any, res: Any, threaded: bool
                       ) -> tuple[bool | None, str]:
    """(correct, detail) of one query's result: an infrastructure error is never scored;
    ``threaded`` scores in a thread (the code sandbox blocks)."""
    if res.status == "error":
        return None, "infrastructure error: not scored"
    try:
        if threaded:
            score = await asyncio.to_thread(scorer.score, item, res.answer, res.text)
        else:
            score = scorer.score(item, res.answer, res.text)
    except Exception as exc:  # a scorer's failure is not the answer's: never scored wrong
        what = str(exc) if isinstance(exc, TTSGraphError) else f"{type(exc).__name__}: {exc}"
        return None, SCORING_FAILED + " ".join(what.split())
    return bool(score.correct), str(getattr(score, "detail", ""))
