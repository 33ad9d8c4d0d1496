"""Search efficiency (issue 5): how many trials each searcher needs on a SIMULATED space.

The benchmark space is a plan → solve → aggregate graph over the simulated models of
``backend: sim`` (``tts_graph/backends/sim.py``: simulated Llama 1B/3B/8B/70B, calibrated to
Agent-REINFORCE's MATH figures), on a fixed set of simulated questions (``sim:N``).

1. Every distinct graph of the space is run once through the real executor (``Space.compile``
   → ``Executor`` with the sim backend → the task's numeric scorer): accuracy and cost per
   question, cached in ``benchmarks/results/search_efficiency_table-*.json``.
2. The exhaustive optimum (accuracy, under a worst-case cost cap per query, checked as the
   search driver checks constraints: ``Space.estimate`` + ``Space.check_constraints``; over the
   cap a configuration is infeasible and never run) and the exhaustive Pareto front (accuracy
   up, measured cost down) with its hypervolume.
3. Every searcher (the real classes, from ``tts_graph.search.registry.create_searcher``, an
   Optuna ``InMemoryStorage`` study, pruning off) runs its own ask → tell loop for several seeds
   against a *lookup* objective: a trial's values are the precomputed values of the proposed
   configuration. Trials to reach 95% / 99% / 100% of the optimum; hypervolume vs trials.

    .venv/bin/python benchmarks/search_efficiency.py [--quick] [--questions 200] [--seeds 10]
        [--trials 200] [--jobs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from typing import Any

import optuna
from _common import ROOT, percentile, print_header, table

from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.sim import SIM_VERSION, sim_task
from tts_graph.executor import Executor
from tts_graph.search.registry import create_searcher
from tts_graph.search.space import Infeasible, Space
from tts_graph.search.spec import Pruning, SearcherSpec, SearchSpec
from tts_graph.search.trial import TrialResult
from tts_graph.types import Completion

MODELS = ("l1", "l3", "l8", "l70")
SAMPLES = (1, 2, 3, 4, 6, 8, 12, 16)
BASE: dict[str, Any] = {
    "version": 1,
    "name": "bench-space",
    "models": {"l1": {"backend": "sim", "model": "llama-1b"},
               "l3": {"backend": "sim", "model": "llama-3b"},
               "l8": {"backend": "sim", "model": "llama-8b"},
               "l70": {"backend": "sim", "model": "llama-70b"}},
    "defaults": {"max_tokens": 1024, "temperature": 0.7},
    "nodes": {
        "plan": {"role": "planner", "model": "l3", "seed": 11},
        "solve": {"role": "solver", "model": "l1", "inputs": ["plan"], "samples": 4,
                  "seed": 23},
        "agg": {"role": "fuser", "model": "l8", "inputs": ["solve"], "seed": 37},
        "out": {"role": "vote", "inputs": ["agg"]},
    },
    "output": "out",
}
CHOICES: list[dict[str, Any]] = [
    {"node": "plan"},                                       # planner on/off
    {"node": "plan", "field": "model", "values": list(MODELS)},
    {"node": "solve", "field": "model", "values": list(MODELS)},
    {"node": "solve", "field": "samples", "values": list(SAMPLES)},
    {"node": "solve", "field": "max_tokens", "values": [512, 1024]},
    {"node": "agg"},                                        # aggregator on/off (off: vote)
    {"node": "agg", "field": "role", "values": ["fuser", "judge"]},
    {"node": "agg", "field": "model", "values": list(MODELS)},
]
#: worst-case USD per query allowed in the single-objective search (Space.estimate: every call
#: at its max_tokens, 256 prompt tokens assumed per call)
COST_CAP = 0.004
RESULTS = ROOT / "benchmarks" / "results"


def make_spec(objectives: list[str], searcher: str, seed: int, options: dict[str, Any]
              ) -> SearchSpec:
    return SearchSpec.model_validate({
        "name": "bench", "base": "<in memory>", "task": {"name": "sim"},
        "choices": CHOICES, "objectives": objectives,
        "constraints": {"max_cost_usd_per_query": COST_CAP},
        "budget": {"trials": 200}, "pruning": {"enabled": False},
        "searcher": {"name": searcher, "seed": seed, "options": options}})


def make_space(priced: bool = False) -> Space:
    """The space. ``priced``: with the sim profiles' prices declared on the models, which
    ``Space.estimate`` needs to price a worst case (the sim backend's own prices are only
    known to the executor), for the cost cap; graph keys come from the unpriced space."""
    base = BASE
    if priced:
        import copy

        from tts_graph.backends.sim import PROFILES

        base = copy.deepcopy(BASE)
        for m in base["models"].values():
            pin, pout = PROFILES[m["model"]].price
            m["price"] = {"input_per_mtok": pin, "output_per_mtok": pout}
    return Space(make_spec(["accuracy"], "random", 0, {}), base, source="<bench-space>")


def graph_key(space: Space, config: dict[str, Any]) -> str:
    """The configuration's graph, canonically (configurations that differ only in the
    settings of a switched-off node are the same graph)."""
    g = space.graph_dict(config)
    g.pop("name", None)
    return hashlib.sha256(json.dumps(g, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- exhaustive table

def _eval_chunk(args: tuple[list[tuple[str, dict[str, Any]]], int]) -> dict[str, dict]:
    chunk, questions = args
    space = make_space()
    task = sim_task(questions, 0)
    qs = [it.question for it in task.items]

    async def go() -> dict[str, dict]:
        out = {}
        for key, config in chunk:
            ex = Executor(space.compile(config))
            res = await ex.arun_many(qs, concurrency=64)
            await ex.aclose()
            correct = sum(bool(task.scorer.score(it, r.answer, r.text).correct)
                          for it, r in zip(task.items, res, strict=True))
            n = len(res)
            out[key] = {"accuracy": correct / n,
                        "cost": sum(r.usage.cost_usd for r in res) / n,
                        "tokens": sum(r.usage.tokens for r in res) / n,
                        "errors": sum(r.status == "error" for r in res)}
        return out

    return asyncio.run(go())


def exhaustive(space: Space, questions: int, jobs: int) -> tuple[dict[str, dict], float]:
    path = RESULTS / f"search_efficiency_table-q{questions}.json"
    meta = {"sim_version": SIM_VERSION, "questions": questions, "base": BASE,
            "choices": CHOICES}
    table_: dict[str, dict] = {}
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("meta") == json.loads(json.dumps(meta)):
            table_ = data["table"]
    unique: dict[str, dict[str, Any]] = {}
    for config in space.grid():
        unique.setdefault(graph_key(space, config), config)
    todo = [(k, c) for k, c in unique.items() if k not in table_]
    t0 = time.perf_counter()
    if todo:
        print(f"running {len(todo)} of {len(unique)} distinct graphs × {questions} questions "
              f"through the executor ({jobs} processes)...", file=sys.stderr, flush=True)
        chunks = [todo[i:i + 40] for i in range(0, len(todo), 40)]
        with mp.get_context("fork").Pool(jobs) as pool:
            for i, part in enumerate(pool.imap_unordered(
                    _eval_chunk, [(c, questions) for c in chunks])):
                table_.update(part)
                if i % 10 == 9 or i == len(chunks) - 1:
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"meta": meta, "table": table_}))
                    print(f"  {len(table_)}/{len(unique)} graphs, "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {k: table_[k] for k in unique}, time.perf_counter() - t0


# ------------------------------------------------------------------------- Pareto tools

def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (accuracy up, cost down) points, by cost ascending."""
    best: list[tuple[float, float]] = []
    for acc, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if not best or acc > best[-1][0]:
            best.append((acc, cost))
    return best


def hypervolume(points: list[tuple[float, float]], ref_cost: float) -> float:
    """Area dominated by the points, reference point (accuracy 0, cost ``ref_cost``)."""
    hv, prev = 0.0, 0.0
    for acc, cost in front([p for p in points if p[1] <= ref_cost]):
        hv += (ref_cost - cost) * (acc - prev)
        prev = acc
    return hv


# ------------------------------------------------------------------ scripted feedback

class ScriptedFeedback(Backend):
    """A stand-in for a feedback LLM giving generic advice: it reads the prompt's recent
    graphs, makes the values of the best one more likely (strength 0.6) and the differing
    values of the worst one (or of infeasible ones) less likely (strength 0.3). Score = the
    accuracy, minus 0.3 × cost / the largest shown cost when cost is an objective."""

    def __init__(self) -> None:
        self.calls = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(identity="scripted:generic-feedback")

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.calls += 1
        text = request.messages[-1].content
        use_cost = "cost (down)" in text
        rows = []
        for line in text.splitlines():
            if not line.startswith("- trial ") or " -> " not in line:
                continue
            head, score = line.split(" -> ", 1)
            cfg = dict(kv.split("=", 1) for kv in head.split(": ", 1)[1].split(", "))
            if score.startswith("infeasible"):
                rows.append((None, 0.0, cfg))
                continue
            acc = float(score.split("accuracy ", 1)[1].split("%", 1)[0]) / 100
            cost = float(score.split("cost ", 1)[1].split("/", 1)[0]) if "cost " in score \
                else 0.0
            rows.append((acc, cost, cfg))
        feasible = [r for r in rows if r[0] is not None]
        updates = []
        if feasible:
            top_cost = max(r[1] for r in feasible) or 1.0

            def score_of(r: tuple) -> float:
                return r[0] - (0.3 * r[1] / top_cost if use_cost else 0.0)

            best = max(feasible, key=score_of)
            worst = min(feasible, key=score_of)
            updates += [{"param": k, "value": v, "direction": "increase", "strength": 0.6}
                        for k, v in best[2].items()]
            bad = [worst] + [r for r in rows if r[0] is None]
            seen = set()
            for r in bad:
                for k, v in r[2].items():
                    if best[2].get(k) != v and (k, v) not in seen:
                        seen.add((k, v))
                        updates.append({"param": k, "value": v, "direction": "decrease",
                                        "strength": 0.3})
        if not updates:
            return [Completion("no usable trials yet", len(text) // 4, 5)]
        reply = json.dumps({"analysis": "favour the best recent graph's choices",
                            "updates": updates[:64]})
        return [Completion(reply, prompt_tokens=len(text) // 4,
                           completion_tokens=len(reply) // 4)]


# --------------------------------------------------------------------- one search run

def run_one(args: tuple[str, str, int, int]) -> dict[str, Any]:
    label, mode, seed, trials = args
    table_: dict[str, dict] = G["table"]
    space = make_space()
    objectives = ["accuracy"] if mode == "single" else ["accuracy", "cost"]
    name = "agent-reinforce" if label.startswith("agent-reinforce") else label
    spec = SearcherSpec(name=name, seed=seed)
    searcher = create_searcher(spec, space, study_name=f"{label}-{mode}-{seed}",
                               storage=optuna.storages.InMemoryStorage(),
                               objectives=objectives, pruning=Pruning(enabled=False))
    fb = None
    if label == "agent-reinforce+feedback":
        fb = ScriptedFeedback()
        searcher.feedback_backend = fb  # type: ignore[attr-defined]
        searcher.feedback_name = fb.info.identity  # type: ignore[attr-defined]
    feasible: dict[str, bool] = G["feasible"]
    best_curve: list[float] = []
    points: list[tuple[float, float]] = []
    best = -1.0
    own = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        prop = searcher.ask()
        own += time.perf_counter() - t0
        key = graph_key(space, prop.config)
        row = table_[key]
        if mode == "single" and not feasible[key]:
            result = TrialResult("infeasible", reason="over the cost cap")
        else:
            values = {"accuracy": row["accuracy"], "cost": row["cost"],
                      "tokens": row["tokens"], "latency": 0.0, "flops": 0.0}
            result = TrialResult("complete", values=values, questions=G["questions"])
            best = max(best, row["accuracy"])
            points.append((row["accuracy"], row["cost"]))
        t0 = time.perf_counter()
        searcher.tell(prop, result)
        own += time.perf_counter() - t0
        best_curve.append(best)
    out: dict[str, Any] = {"label": label, "mode": mode, "seed": seed, "curve": best_curve,
                           "own_s_per_trial": own / trials}
    if mode == "pareto":
        out["hv"] = {n: hypervolume(points[:n], G["ref_cost"]) for n in (25, 50, 100, 200)
                     if n <= trials}
    if name == "agent-reinforce":
        out["feedback_tokens"] = searcher.feedback_tokens  # type: ignore[attr-defined]
        out["feedback_updates"] = searcher.feedback_updates  # type: ignore[attr-defined]
        out["numeric_updates"] = searcher.numeric_updates  # type: ignore[attr-defined]
        searcher.close()  # type: ignore[attr-defined]
    return out


G: dict[str, Any] = {}


def first_reach(curve: list[float], target: float) -> int | None:
    for i, v in enumerate(curve):
        if v >= target - 1e-12:
            return i + 1
    return None


def pct(xs: list[float], q: float) -> float:
    """``percentile`` that lets "not reached" (inf) stay inf."""
    v = percentile(xs, q)
    return math.inf if math.isnan(v) else v


def summarize_reach(values: list[int | None], cap: int) -> str:
    xs = [v if v is not None else math.inf for v in values]
    miss = sum(v is None for v in values)
    med = pct(xs, 50)
    q1, q3 = pct(xs, 25), pct(xs, 75)

    def f(x: float) -> str:
        return f">{cap}" if math.isinf(x) else f"{x:.0f}"

    return f"{f(med)} [{f(q1)}–{f(q3)}]" + (f" ({miss} not)" if miss else "")


def median_reach(values: list[int | None], cap: int) -> float:
    xs = [v if v is not None else math.inf for v in values]
    return pct(xs, 50)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="40 questions, 3 seeds, 60 trials")
    a = p.parse_args()
    if a.quick:
        a.questions, a.seeds, a.trials = 40, 3, 60
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print_header(f"Search efficiency on a SIMULATED space ({a.questions} simulated questions, "
                 f"{a.seeds} seeds, {a.trials} trials)")
    space = make_space()
    grid_size = space.size()
    tab, wall = exhaustive(space, a.questions, a.jobs)
    print(f"space: {grid_size:,} configurations (Space.size), {len(tab):,} distinct graphs "
          f"(configurations differing only in a switched-off node's settings are one graph); "
          f"exhaustive table: {wall:.0f} s to compute now (0 = cached)")
    # feasibility under the cost cap, as the driver decides it
    feasible: dict[str, bool] = {}
    priced = make_space(priced=True)
    for config in space.grid():
        key = graph_key(space, config)
        if key in feasible:
            continue
        try:
            est = priced.estimate(priced.compile(config), 256)
            priced.check_constraints(est, priced.spec.constraints)
            feasible[key] = True
        except Infeasible:
            feasible[key] = False
    n_feas = sum(feasible.values())
    opt_key = max((k for k in tab if feasible[k]), key=lambda k: tab[k]["accuracy"])
    opt = tab[opt_key]["accuracy"]
    uncapped = max(tab.values(), key=lambda r: r["accuracy"])
    ref_cost = max(r["cost"] for r in tab.values())
    all_points = [(r["accuracy"], r["cost"]) for r in tab.values()]
    ex_front = front(all_points)
    ex_hv = hypervolume(all_points, ref_cost)
    n_opt = sum(1 for k in tab if feasible[k] and tab[k]["accuracy"] >= opt - 1e-12)
    n95 = sum(1 for k in tab if feasible[k] and tab[k]["accuracy"] >= 0.95 * opt)
    n99 = sum(1 for k in tab if feasible[k] and tab[k]["accuracy"] >= 0.99 * opt)
    opt_cfg = next(c for c in space.grid() if graph_key(space, c) == opt_key)
    print(f"single objective: accuracy, worst-case cost <= ${COST_CAP}/query "
          f"({n_feas:,} of {len(tab):,} graphs feasible); exhaustive optimum {opt:.1%} "
          f"(cost ${tab[opt_key]['cost'] * 1e6:.0f} µ/q): {opt_cfg}")
    print(f"  graphs at the optimum: {n_opt}; >= 99%: {n99}; >= 95%: {n95} (random search "
          f"expects about {n_feas and len(tab) / max(n95, 1):.0f} / "
          f"{len(tab) / max(n99, 1):.0f} graphs to hit one)")
    print(f"  (uncapped best: {uncapped['accuracy']:.1%} at ${uncapped['cost'] * 1e6:.0f} µ/q)")
    print(f"Pareto (accuracy up, measured cost/query down): {len(ex_front)} front points, "
          f"hypervolume {ex_hv:.6g} with reference point (accuracy 0, cost "
          f"${ref_cost:.6f}/query = the costliest graph)")

    G.update(table=tab, feasible=feasible, questions=a.questions, ref_cost=ref_cost)
    single = ["random", "grid", "optuna-tpe", "optuna-nsga2", "optuna-motpe",
              "agent-reinforce", "agent-reinforce+feedback"]
    pareto = ["random", "grid", "optuna-nsga2", "optuna-motpe", "agent-reinforce",
              "agent-reinforce+feedback"]
    jobs = [(s, "single", seed, a.trials) for s in single for seed in range(a.seeds)]
    jobs += [(s, "pareto", seed, a.trials) for s in pareto for seed in range(a.seeds)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(a.jobs) as pool:
        runs = list(pool.imap_unordered(run_one, jobs))
    print(f"\nsearch runs: {len(runs)} in {time.perf_counter() - t0:.0f} s\n")

    rows, med99 = [], {}
    for s in single:
        rs = [r for r in runs if r["label"] == s and r["mode"] == "single"]
        r95 = [first_reach(r["curve"], 0.95 * opt) for r in rs]
        r99 = [first_reach(r["curve"], 0.99 * opt) for r in rs]
        r100 = [first_reach(r["curve"], opt) for r in rs]
        med99[s] = (median_reach(r95, a.trials), median_reach(r99, a.trials))
        final = sorted(r["curve"][-1] / opt for r in rs)
        fb = ""
        if s.startswith("agent-reinforce"):
            fb = (f"{sum(r['feedback_tokens'] for r in rs) / len(rs):,.0f} tok, "
                  f"{sum(r['feedback_updates'] for r in rs) / len(rs):.0f} fb / "
                  f"{sum(r['numeric_updates'] for r in rs) / len(rs):.0f} num updates")
        rows.append([s, summarize_reach(r95, a.trials), summarize_reach(r99, a.trials),
                     summarize_reach(r100, a.trials), f"{percentile(final, 50):.1%}",
                     f"{1e3 * sum(r['own_s_per_trial'] for r in rs) / len(rs):.1f}",
                     fb or "—"])
    print(f"Single objective (accuracy, worst case <= ${COST_CAP}/query; trials counted "
          "include proposals over the cap). Trials to reach 95/99/100% of the exhaustive "
          f"optimum: median [IQR] over {a.seeds} seeds, capped at {a.trials}:\n")
    print(table(["searcher", "to 95%", "to 99%", "to optimum", f"best@{a.trials} / opt",
                 "own ms/trial", "feedback model"], rows))
    rows = []
    for s in pareto:
        rs = [r for r in runs if r["label"] == s and r["mode"] == "pareto"]
        cells = []
        for n in (25, 50, 100, 200):
            hv = sorted(r["hv"][n] / ex_hv for r in rs if n in r["hv"])
            cells.append(f"{percentile(hv, 50):.3f} [{percentile(hv, 25):.3f}–"
                         f"{percentile(hv, 75):.3f}]" if hv else "—")
        fb = "—"
        if s.startswith("agent-reinforce"):
            fb = f"{sum(r['feedback_tokens'] for r in rs) / len(rs):,.0f} tok"
        rows.append([s, *cells,
                     f"{1e3 * sum(r['own_s_per_trial'] for r in rs) / len(rs):.1f}", fb])
    print("\nPareto (accuracy, cost): hypervolume of the trials so far / the exhaustive "
          "front's, median [IQR]:\n")
    print(table(["searcher", "25 trials", "50 trials", "100 trials", "200 trials",
                 "own ms/trial", "feedback model"], rows))
    rnd95, rnd99 = med99["random"]
    best = min((s for s in single if s not in ("random", "grid")),
               key=lambda s: (med99[s][1], med99[s][0]))
    b95, b99 = med99[best]
    t95, t99 = med99["optuna-tpe"]

    def ratio(x: float, y: float) -> str:
        return "n/a" if math.isinf(x) or math.isinf(y) else f"{x / y:.2f}×"

    print(f"\nbest searcher by median trials to 99%: {best} ({b99:g}; to 95%: {b95:g}); "
          f"random: {rnd99:g} / {rnd95:g}; optuna-tpe: {t99:g} / {t95:g}")
    print(f"ratio to random (99%): {ratio(b99, rnd99)}, (95%): {ratio(b95, rnd95)}; "
          f"goal <= 0.3× and no more than optuna-tpe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
