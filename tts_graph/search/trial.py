"""Evaluating one configuration: compile it, refuse it if it is over a constraint, then score it
on growing subsets of the search questions (successive halving) through the executor, the
shared response cache and a results store of its own, asking after each rung whether to cut it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..cache import ResponseCache
from ..evaluate.runner import run_items
from ..evaluate.store import ResultStore
from ..evaluate.summary import Summary, summarize
from ..executor import Executor
from .space import Estimate, Infeasible, Space

TrialState = Literal["complete", "pruned", "infeasible", "failed"]


def objective_values(s: Summary) -> dict[str, float]:
    """Objective values from a summary, all per question."""
    n = max(1, s.done)
    return {
        "accuracy": s.accuracy,
        "cost": s.cost_usd / n,
        "latency": s.latency_p50,
        "flops": s.flops / n,
        "tokens": (s.prompt_tokens + s.completion_tokens) / n,
    }


@dataclass
class TrialResult:
    state: TrialState
    values: dict[str, float] = field(default_factory=dict)
    questions: int = 0
    live_tokens: int = 0
    billed_usd: float = 0.0
    infra_errors: int = 0
    reason: str = ""
    estimate: Estimate | None = None
    summary: Summary | None = None


def rungs(total: int, first: int, factor: int, enabled: bool) -> list[int]:
    if not enabled or first >= total:
        return [total]
    sizes: list[int] = []
    size = first
    while size < total:
        sizes.append(size)
        size *= factor
    return [*sizes, total]


PruneCheck = Callable[[int, dict[str, float], Summary], bool]


class TrialRunner:
    def __init__(self, space: Space, scorer: Any, items: Sequence[Any], *, out_dir: Path,
                 cache: ResponseCache | None, concurrency: int = 8) -> None:
        self.space = space
        self.scorer = scorer
        self.items = list(items)
        self.out_dir = out_dir
        self.cache = cache
        self.concurrency = concurrency

    async def run(self, config: dict[str, Any], number: int, should_prune: PruneCheck | None
                  ) -> TrialResult:
        spec = self.space.spec
        est = None
        try:
            graph = self.space.compile(config)
            est = self.space.estimate(graph, spec.constraints.prompt_tokens_estimate)
            self.space.check_constraints(est, spec.constraints)
        except Infeasible as exc:
            return TrialResult("infeasible", reason=str(exc), estimate=est)
        executor = Executor(graph, cache=self.cache)
        # the digest keeps a trial of another study in the same directory (an earlier
        # storage, a deleted study) from colliding with this one
        store = ResultStore(self.out_dir / "trials"
                            / f"trial-{number:05d}-{self.space.key(config)[:8]}")
        store.bind({"graph_name": graph.name, "config": {k: str(v) for k, v in config.items()},
                    "planned": len(self.items)}, resume=True)
        try:
            plan = rungs(len(self.items), spec.pruning.min_questions, spec.pruning.factor,
                         spec.pruning.enabled and should_prune is not None)
            summary = None
            for size in plan:
                await run_items(executor, self.scorer, self.items[:size], store,
                                concurrency=self.concurrency,
                                threaded_scoring=getattr(self.scorer, "name", "") == "code")
                summary = summarize(store)
                if size < len(self.items) and should_prune is not None and should_prune(
                        size, objective_values(summary), summary):
                    return self._result("pruned", summary, est)
            assert summary is not None
            if summary.scored == 0:
                reason = f"{summary.infra_errors} infrastructure errors, nothing scored"
                return self._result("failed", summary, est, reason=reason)
            return self._result("complete", summary, est)
        finally:
            store.close()
            await executor.aclose()

    def _result(self, state: TrialState, s: Summary, est: Estimate, reason: str = ""
                ) -> TrialResult:
        return TrialResult(state, values=objective_values(s), questions=s.done,
                           live_tokens=_live_tokens(s), billed_usd=s.billed_usd,
                           infra_errors=s.infra_errors, reason=reason, estimate=est, summary=s)


def _live_tokens(s: Summary) -> int:
    """Tokens of calls that were not served by the cache (what the search really spent),
    apportioned by call count where a summary mixes both."""
    total = s.prompt_tokens + s.completion_tokens
    if s.calls == 0:
        return 0
    return int(total * (s.calls - s.cached_calls) / s.calls)
