"""What a run amounts to: accuracy with a 95% confidence interval (infrastructure errors left
out and counted apart), tokens, cost, FLOPs, latency percentiles, per node and per model —
computed by streaming the results store."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .store import ResultStore

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


@dataclass
class Summary:
    run_dir: str
    graph: str
    task: str
    planned: int
    done: int
    scored: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    infra_errors: int
    statuses: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    tokens_per_question: float
    cost_usd: float
    billed_usd: float
    cost_per_question: float
    flops: float
    calls: int
    cached_calls: int
    retries: int
    latency_p50: float
    latency_p90: float
    latency_p99: float
    by_node: dict[str, dict[str, float]] = field(default_factory=dict)
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)
    #: how budgeted queries used their budgets (None when no query had one)
    budget: dict[str, Any] | None = None
    sandbox: str | None = None  # the code scorer's sandbox mode, so guard mode is never silent
    #: what the questions were and how they were judged: runs that differ here are not
    #: comparable (None: a run recorded without it)
    scorer: str | None = None
    split: str | None = None
    seed: int | None = None
    limit: int | None = None

    @property
    def finished(self) -> bool:
        """Every planned question has a scored answer (no infrastructure error left)."""
        return self.scored >= self.planned

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        d["finished"] = self.finished
        return d


_USAGE_KEYS = ("calls", "samples", "prompt_tokens", "completion_tokens", "cost_usd",
               "billed_usd", "flops", "cached_calls", "errors", "latency_s")


def _merge(into: dict[str, dict[str, float]], part: dict[str, Any]) -> None:
    for name, usage in part.items():
        acc = into.setdefault(name, dict.fromkeys(_USAGE_KEYS, 0.0))
        for k in _USAGE_KEYS:
            acc[k] += float(usage.get(k, 0) or 0)


class BudgetTally:
    """Sums of the queries' budget reports: share of the budget spent, overruns, plans that
    fit, outputs reached, and how often each step was narrowed or skipped."""

    def __init__(self) -> None:
        self.queries = self.fits = self.reached = self.overruns = 0
        self.late = self.reached_late = self.reached_all = 0
        self.shares: list[float] = []
        #: shares spent by the queries where a step drew fewer samples than it wanted
        self.short_shares: list[float] = []
        self.peak_shares: list[float] = []
        self.narrowed: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        #: step → reason code (``BudgetReport`` steps' ``why``) → queries
        self.why: dict[str, dict[str, int]] = {}
        self.wanted = self.drawn = self.cut_draws = self.dropped = 0

    def add(self, report: dict[str, Any], status: str) -> None:
        self.queries += 1
        granted, spent, peak = report["granted"], report["spent"], report["reserved_peak"]
        caps = [(k, granted[g]) for k, g in (("tokens", "tokens"), ("cost_usd", "cost_usd"),
                                            ("flops", "flops")) if granted.get(g)]
        if any(spent[k] > cap * (1 + 1e-9) for k, cap in caps):
            self.overruns += 1
        share = max((spent[k] / cap for k, cap in caps), default=None)
        if share is not None:
            self.shares.append(share)
            self.peak_shares.append(max(peak[k] / cap for k, cap in caps))
            if any(st["drawn"] < st["wanted"] for st in report["steps"].values()):
                self.short_shares.append(share)
        # results stored before the report said so: a finished query reached its output
        reached = bool(report.get("output_reached", status == "ok"))
        self.reached_all += int(reached)
        if report["plan_fits"]:
            self.fits += 1
            self.reached += int(reached)
        elif report.get("planned_late"):
            self.late += 1
            self.reached_late += int(reached)
        for sid, st in report["steps"].items():
            self.wanted += st["wanted"]
            self.drawn += st["drawn"]
            self.cut_draws += int(st.get("cut_draws", 0))
            self.dropped += int(st.get("dropped", 0))
            if st["drawn"] < st["wanted"]:
                self.narrowed[sid] = self.narrowed.get(sid, 0) + 1
            codes = st.get("why") or (["skipped"] if any(
                r.startswith("skipped") for r in st["reasons"]) else [])
            if "skipped" in codes:
                self.skipped[sid] = self.skipped.get(sid, 0) + 1
            counts = self.why.setdefault(sid, {})
            for code in dict.fromkeys(codes):
                counts[code] = counts.get(code, 0) + 1

    def to_dict(self) -> dict[str, Any] | None:
        if not self.queries:
            return None
        shares = sorted(self.shares)
        return {
            "queries": self.queries, "overruns": self.overruns, "plan_fits": self.fits,
            "output_reached_where_plan_fits": self.reached,
            "planned_late": self.late, "output_reached_where_planned_late": self.reached_late,
            "output_reached": self.reached_all,
            "share_spent_mean": sum(shares) / len(shares) if shares else None,
            "share_spent_min": shares[0] if shares else None,
            "share_spent_mean_where_short": (sum(self.short_shares) / len(self.short_shares)
                                             if self.short_shares else None),
            "share_committed_peak_max": max(self.peak_shares) if self.peak_shares else None,
            "samples_wanted": self.wanted, "samples_drawn": self.drawn,
            "narrowed": self.narrowed, "skipped": self.skipped, "why": self.why,
            "cut_draws": self.cut_draws, "dropped": self.dropped,
        }


def gold_answers(store: ResultStore) -> dict[str, str]:
    """Each recorded question's gold answer, by item id (what ``compare`` checks runs on)."""
    return dict(store.conn.execute("SELECT item_id, gold FROM results"))


def summarize(store: ResultStore) -> Summary:
    ident = store.identity() or {}
    planned = int(ident.get("planned", 0))
    done = scored = correct = infra = 0
    statuses: dict[str, int] = {}
    pt = ct = calls = cached = retries = 0
    cost = billed = flops = 0.0
    latencies: list[float] = []
    by_node: dict[str, dict[str, float]] = {}
    by_model: dict[str, dict[str, float]] = {}
    budgets = BudgetTally()
    for row in store.rows():
        done += 1
        if row.budget is not None:
            budgets.add(row.budget, row.status)
        statuses[row.status] = statuses.get(row.status, 0) + 1
        if row.correct is None:
            infra += 1
        else:
            scored += 1
            correct += int(row.correct)
        pt += row.prompt_tokens
        ct += row.completion_tokens
        cost += row.cost_usd
        billed += row.billed_usd
        flops += row.flops
        calls += row.calls
        cached += row.cached_calls
        retries += row.retries
        latencies.append(row.latency_s)
        _merge(by_node, row.usage_by_node)
        _merge(by_model, row.usage_by_model)
    latencies.sort()
    return Summary(
        run_dir=str(store.run_dir), graph=str(ident.get("graph_name", "?")),
        task=str(ident.get("task", "?")), planned=planned or done, done=done, scored=scored,
        correct=correct, accuracy=correct / scored if scored else 0.0,
        ci95=wilson(correct, scored), infra_errors=infra, statuses=statuses,
        prompt_tokens=pt, completion_tokens=ct,
        tokens_per_question=(pt + ct) / done if done else 0.0, cost_usd=cost,
        billed_usd=billed, cost_per_question=cost / done if done else 0.0, flops=flops,
        calls=calls, cached_calls=cached, retries=retries,
        latency_p50=percentile(latencies, 0.5), latency_p90=percentile(latencies, 0.9),
        latency_p99=percentile(latencies, 0.99), by_node=by_node, by_model=by_model,
        budget=budgets.to_dict(), scorer=ident.get("scorer"), split=ident.get("split"),
        seed=ident.get("seed"), limit=ident.get("limit"),
    )
