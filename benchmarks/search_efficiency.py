"""Search efficiency (issue 10): how many trials each searcher needs on SIMULATED spaces.

Three spaces over the simulated models of ``backend: sim`` (``tts_graph/sim/``:
simulated Llama 1B/3B/8B/70B, calibrated to Agent-REINFORCE's MATH figures), each on a fixed
set of simulated questions (``sim:N``); every model declares its parameters and price, as a
user would for FLOPs and cost caps:

- ``plan-solve-aggregate``: planner on/off and model → solver model, samples, max_tokens →
  aggregator on/off, role (fuser, judge) and model → vote;
- ``two-branches``: two solver branches (the second optional), each with its model and
  samples, an optional fuser over both → vote;
- ``votes-agree``: one solver (model, samples, temperature) with an optional judge or fuser,
  on models whose wrong answers agree (``confusion_mean`` near 1, as on multiple-choice tasks
  where small models share their traps), so more votes do not help.

1. Every distinct graph (``Space.grid``: configurations that differ only in a switched-off
   node's settings are one graph) runs once through the real executor on the questions:
   accuracy and cost per question, cached in ``RESULTS/search_efficiency_table-*.json``.
2. The exhaustive optimum (accuracy, under a worst-case cost cap per query, decided as the
   search driver decides it: ``Space.estimate`` + ``Space.check_constraints``; over the cap a
   graph is infeasible and never run) and the exhaustive Pareto front (accuracy up, measured
   cost down) with its hypervolume.
3. Every searcher (the real classes, from ``create_searcher``, an Optuna ``InMemoryStorage``
   study, pruning off) runs its own ask → tell loop for several seeds against a *lookup*
   objective: a trial's values are the precomputed values of the proposed graph. As in the
   driver, a proposal of a graph already tried is told the earlier outcome and not counted; a
   graph over the cap is counted (the driver counts it too). Trials = distinct graphs.
   Reported: trials to reach 95% / 99% / 100% of the optimum; hypervolume vs trials.

    .venv/bin/python benchmarks/search_efficiency.py [--quick] [--questions 200] [--seeds 10]
        [--trials 100] [--jobs 2] [--spaces a,b,c] [--results DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from _common import ROOT, percentile, print_header, table

from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.executor import Executor
from tts_graph.search.registry import create_searcher
from tts_graph.search.space import Infeasible, Space
from tts_graph.search.spec import Pruning, SearcherSpec, SearchSpec
from tts_graph.search.trial import TrialResult
from tts_graph.sim import PROFILES, SIM_VERSION, sim_task
from tts_graph.types import Completion

SIZES = {"l1": "llama-1b", "l3": "llama-3b", "l8": "llama-8b", "l70": "llama-70b"}


def models(**options: dict[str, Any]) -> dict[str, Any]:
    """The four simulated models, declaring their parameters and prices (as the sim profiles
    have them), with sim ``options`` per model name where given."""
    out = {}
    for name, model in SIZES.items():
        prof = PROFILES[model]
        entry: dict[str, Any] = {"backend": "sim", "model": model, "params": prof.params,
                                 "price": {"input_per_mtok": prof.price[0],
                                           "output_per_mtok": prof.price[1]}}
        if name in options:
            entry["options"] = options[name]
        out[name] = entry
    return out


ALL = list(SIZES)
SPACES: dict[str, dict[str, Any]] = {
    "plan-solve-aggregate": {
        "base": {
            "version": 1, "name": "bench-space", "models": models(),
            "defaults": {"max_tokens": 1024, "temperature": 0.7},
            "nodes": {
                "plan": {"role": "planner", "model": "l3", "seed": 11},
                "solve": {"role": "solver", "model": "l1", "inputs": ["plan"], "samples": 4,
                          "seed": 23},
                "agg": {"role": "fuser", "model": "l8", "inputs": ["solve"], "seed": 37},
                "out": {"role": "vote", "inputs": ["agg"]},
            },
            "output": "out",
        },
        "choices": [
            {"node": "plan"},
            {"node": "plan", "field": "model", "values": ALL},
            {"node": "solve", "field": "model", "values": ALL},
            {"node": "solve", "field": "samples", "values": [1, 2, 3, 4, 6, 8, 12, 16]},
            {"node": "solve", "field": "max_tokens", "values": [512, 1024]},
            {"node": "agg"},
            {"node": "agg", "field": "role", "values": ["fuser", "judge"]},
            {"node": "agg", "field": "model", "values": ALL},
        ],
        "cap": 0.004,
    },
    "two-branches": {
        "base": {
            "version": 1, "name": "bench-two", "models": models(),
            "defaults": {"max_tokens": 1024, "temperature": 0.7},
            "nodes": {
                "a": {"role": "solver", "model": "l3", "samples": 2, "seed": 5},
                "b": {"role": "solver", "model": "l8", "samples": 2, "seed": 9},
                "fuse": {"role": "fuser", "model": "l8", "inputs": ["a", "b"], "seed": 13},
                "out": {"role": "vote", "inputs": ["fuse"]},
            },
            "output": "out",
        },
        "choices": [
            {"node": "a", "field": "model", "values": ALL},
            {"node": "a", "field": "samples", "values": [1, 2, 4, 8]},
            {"node": "b"},
            {"node": "b", "field": "model", "values": ALL},
            {"node": "b", "field": "samples", "values": [1, 2, 4, 8]},
            {"node": "fuse"},
            {"node": "fuse", "field": "model", "values": ALL},
        ],
        "cap": 0.003,
    },
    "votes-agree": {
        "base": {
            "version": 1, "name": "bench-agree",
            # wrong answers agree: a wrong sample gives the model's trap 97% of the time
            "models": models(l1={"confusion_mean": 0.97}, l3={"confusion_mean": 0.97},
                             l8={"confusion_mean": 0.97}, l70={"confusion_mean": 0.97}),
            "defaults": {"max_tokens": 1024, "temperature": 0.7},
            "nodes": {
                "solve": {"role": "solver", "model": "l3", "samples": 4, "seed": 3},
                "agg": {"role": "judge", "model": "l8", "inputs": ["solve"], "seed": 7},
                "out": {"role": "vote", "inputs": ["agg"]},
            },
            "output": "out",
        },
        "choices": [
            {"node": "solve", "field": "model", "values": ALL},
            {"node": "solve", "field": "samples", "values": [1, 2, 3, 4, 6, 8, 12, 16]},
            {"node": "solve", "field": "temperature", "values": [0.3, 0.7, 1.0]},
            {"node": "agg"},
            {"node": "agg", "field": "role", "values": ["judge", "fuser"]},
            {"node": "agg", "field": "model", "values": ALL},
        ],
        "cap": 0.002,
    },
}
SHORT = {"a": "plan-solve-aggregate", "b": "two-branches", "c": "votes-agree"}


def quick_space(name: str) -> dict[str, Any]:
    """A smaller version of a space for ``--quick``: two models, fewer widths."""
    s = copy.deepcopy(SPACES[name])
    for ch in s["choices"]:
        if ch.get("field") == "model":
            ch["values"] = ["l1", "l8"]
        elif ch.get("field") == "samples":
            ch["values"] = ch["values"][:3]
        elif ch.get("field") == "temperature":
            ch["values"] = [0.7]
    return s


def make_spec(space: dict[str, Any], objectives: list[str], searcher: str, seed: int,
              capped: bool) -> SearchSpec:
    return SearchSpec.model_validate({
        "name": "bench", "base": "<in memory>", "task": {"name": "sim"},
        "choices": space["choices"], "objectives": objectives,
        "constraints": {"max_cost_usd_per_query": space["cap"]} if capped else {},
        "budget": {"trials": 1000}, "pruning": {"enabled": False},
        "searcher": {"name": searcher, "seed": seed}})


def make_space(space: dict[str, Any], objectives: list[str], capped: bool) -> Space:
    return Space(make_spec(space, objectives, "random", 0, capped), space["base"],
                 source="<bench-space>")


# ---------------------------------------------------------------------- exhaustive table

def _eval_chunk(args: tuple[dict[str, Any], list[tuple[str, dict[str, Any]]], int, int]
                ) -> dict[str, dict]:
    space_def, chunk, questions, task_seed = args
    space = make_space(space_def, ["accuracy"], capped=False)
    task = sim_task(questions, task_seed)
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
            out[key] = {"accuracy": correct / n, "correct": correct, "n": n,
                        "cost": sum(r.usage.cost_usd for r in res) / n,
                        "tokens": sum(r.usage.tokens for r in res) / n,
                        "errors": sum(r.status == "error" for r in res)}
        return out

    return asyncio.run(go())


def exhaustive(name: str, space_def: dict[str, Any], questions: int, jobs: int,
               results: Path, task_seed: int = 0
               ) -> tuple[dict[str, dict], dict[str, dict[str, Any]], float]:
    """{graph key: measured values}, {graph key: one configuration}, seconds spent now.
    ``task_seed`` 0: the search questions; another: other questions (held out)."""
    tag = "" if task_seed == 0 else f"-task{task_seed}"
    path = results / f"search_efficiency_table-{name}-q{questions}{tag}.json"
    meta = {"sim_version": SIM_VERSION, "questions": questions, "base": space_def["base"],
            "choices": space_def["choices"], **({"task_seed": task_seed} if task_seed else {})}
    table_: dict[str, dict] = {}
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("meta") == json.loads(json.dumps(meta)):
            table_ = data["table"]
    space = make_space(space_def, ["accuracy"], capped=False)
    unique = {space.key(c): c for c in space.grid()}
    todo = [(k, c) for k, c in unique.items() if k not in table_]
    t0 = time.perf_counter()
    if todo:
        print(f"{name}: running {len(todo)} of {len(unique)} distinct graphs × {questions} "
              f"questions through the executor ({jobs} processes)...", file=sys.stderr,
              flush=True)
        chunks = [todo[i:i + 40] for i in range(0, len(todo), 40)]
        with mp.get_context("fork").Pool(jobs) as pool:
            for i, part in enumerate(pool.imap_unordered(
                    _eval_chunk, [(space_def, c, questions, task_seed) for c in chunks])):
                table_.update(part)
                if i % 10 == 9 or i == len(chunks) - 1:
                    results.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"meta": meta, "table": table_}))
                    print(f"  {len(table_)}/{len(unique)} graphs, "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return {k: table_[k] for k in unique}, unique, time.perf_counter() - t0


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
    """A stand-in for a feedback LLM giving generic advice (not an LLM): it reads the
    prompt's history table, makes the values of the best graph shown more likely (strength
    0.6) and the differing values of the worst one (or of infeasible ones) less likely (0.3).
    Score = the accuracy, minus 0.3 × cost / the largest shown cost when cost is an
    objective. With no history yet it answers with no usable advice (invalid, counted)."""

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

G: dict[str, Any] = {}


def run_one(args: tuple[str, str, str, int, int]) -> dict[str, Any]:
    space_name, label, mode, seed, trials = args
    ctx = G[space_name]
    table_: dict[str, dict] = ctx["table"]
    objectives = ["accuracy"] if mode == "single" else ["accuracy", "cost"]
    space = ctx["spaces"][mode]
    name = "agent-reinforce" if label.startswith("agent-reinforce") else label
    options = dict(G.get("ar_options", {})) if name == "agent-reinforce" else {}
    if label == FLAT:
        options["prior"] = False
    searcher = create_searcher(SearcherSpec(name=name, seed=seed, options=options), space,
                               study_name=f"{label}-{mode}-{seed}",
                               storage=optuna.storages.InMemoryStorage(),  # type: ignore[arg-type]
                               objectives=objectives, pruning=Pruning(enabled=False),
                               base_models=space.base["models"])
    if label == "agent-reinforce+feedback":
        fb = ScriptedFeedback()
        searcher.feedback_backend = fb  # type: ignore[attr-defined]
        searcher.feedback_name = fb.info.identity  # type: ignore[attr-defined]
    feasible: dict[str, bool] = ctx["feasible"]
    best_curve: list[float] = []
    points: list[tuple[float, float]] = []
    told: dict[str, TrialResult] = {}
    best = -1.0
    own = 0.0
    asks = 0
    while len(best_curve) < trials and asks < 20 * trials:
        asks += 1
        t0 = time.perf_counter()
        prop = searcher.ask()
        own += time.perf_counter() - t0
        key = space.key(prop.config)
        prop.trial.set_user_attr("graph", key)  # as the driver does
        if key in told:  # a repeat: told the earlier outcome, not counted (as the driver)
            prop.trial.set_user_attr("repeat_of", -1)
            searcher.tell(prop, told[key])
            continue
        row = table_[key]
        if mode == "single" and not feasible[key]:
            result = TrialResult("infeasible", reason="over the cost cap")
        else:
            values = {"accuracy": row["accuracy"], "cost": row["cost"],
                      "tokens": row["tokens"], "latency": 0.0, "flops": 0.0}
            result = TrialResult("complete", values=values, questions=ctx["questions"])
            best = max(best, row["accuracy"])
            points.append((row["accuracy"], row["cost"]))
        told[key] = result
        t0 = time.perf_counter()
        searcher.tell(prop, result)
        own += time.perf_counter() - t0
        best_curve.append(best)
    out: dict[str, Any] = {"space": space_name, "label": label, "mode": mode, "seed": seed,
                           "curve": best_curve, "asks": asks,
                           "own_s_per_trial": own / max(1, asks)}
    if mode == "pareto":
        out["hv"] = {n: hypervolume(points[:n], ctx["ref_cost"]) for n in (25, 50, 100)
                     if n <= trials}
    if name == "agent-reinforce":
        out["feedback_tokens"] = searcher.feedback_tokens  # type: ignore[attr-defined]
        out["feedback_updates"] = searcher.feedback_updates  # type: ignore[attr-defined]
        out["numeric_updates"] = searcher.numeric_updates  # type: ignore[attr-defined]
    searcher.close()
    return out


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

    def f(x: float) -> str:
        return f">{cap}" if math.isinf(x) else f"{x:.0f}"

    return f"{f(pct(xs, 50))} [{f(pct(xs, 25))}–{f(pct(xs, 75))}]" + (
        f" ({miss} not)" if miss else "")


def median_reach(values: list[int | None]) -> float:
    return pct([v if v is not None else math.inf for v in values], 50)


#: agent-reinforce without its size/price/width prior: what the learner alone does
FLAT = "agent-reinforce (flat prior)"
SINGLE = ["random", "grid", "optuna-tpe", "optuna-nsga2", "agent-reinforce", FLAT,
          "agent-reinforce+feedback"]
PARETO = ["random", "grid", "optuna-nsga2", "optuna-motpe", "agent-reinforce", FLAT,
          "agent-reinforce+feedback"]


def prepare(name: str, space_def: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    tab, unique, wall = exhaustive(name, space_def, a.questions, a.jobs, a.results)
    capped = make_space(space_def, ["accuracy"], capped=True)
    feasible: dict[str, bool] = {}
    for key, config in unique.items():
        try:
            capped.check_constraints(capped.estimate(capped.compile(config), 256),
                                     capped.spec.constraints)
            feasible[key] = True
        except Infeasible:
            feasible[key] = False
    census = capped.census()
    ref_cost = max(r["cost"] for r in tab.values())
    return {"table": tab, "unique": unique, "feasible": feasible, "wall": wall,
            "census": census, "questions": a.questions, "ref_cost": ref_cost,
            "spaces": {"single": capped,
                       "pareto": make_space(space_def, ["accuracy", "cost"], capped=False)}}


def report(name: str, space_def: dict[str, Any], ctx: dict[str, Any], runs: list[dict],
           a: argparse.Namespace) -> dict[str, Any]:
    tab, feasible, unique = ctx["table"], ctx["feasible"], ctx["unique"]
    c = ctx["census"]
    n_feas = sum(feasible.values())
    opt_key = max((k for k in tab if feasible[k]), key=lambda k: tab[k]["accuracy"])
    opt = tab[opt_key]["accuracy"]
    uncapped = max(tab.values(), key=lambda r: r["accuracy"])
    all_points = [(r["accuracy"], r["cost"]) for r in tab.values()]
    ex_hv = hypervolume(all_points, ctx["ref_cost"])
    n95 = sum(1 for k in tab if feasible[k] and tab[k]["accuracy"] >= 0.95 * opt)
    n99 = sum(1 for k in tab if feasible[k] and tab[k]["accuracy"] >= 0.99 * opt)
    print(f"\n### Space `{name}` (SIMULATED)\n")
    print(f"- {c.configurations:,} configurations as a product of the choices; "
          f"{c.conditional:,} once a switched-off node's settings are not chosen; "
          f"{c.graphs:,} distinct graphs (`Space.size`); exhaustive table computed now in "
          f"{ctx['wall']:.0f} s (0 = cached)")
    print(f"- single objective: accuracy, worst-case cost <= ${space_def['cap']}/query "
          f"({n_feas:,} of {len(tab):,} graphs feasible); optimum {opt:.1%} "
          f"(${tab[opt_key]['cost'] * 1e6:.0f} µ/q measured): {unique[opt_key]}; "
          f"graphs >= 99%: {n99}, >= 95%: {n95}; uncapped best {uncapped['accuracy']:.1%}")
    print(f"- Pareto (accuracy up, measured cost down, no cap): "
          f"{len(front(all_points))} front points, hypervolume {ex_hv:.6g} (reference: "
          f"accuracy 0, cost ${ctx['ref_cost']:.6f}/query = the costliest graph)\n")
    rows, med = [], {}
    for s in SINGLE:
        rs = [r for r in runs if r["space"] == name and r["label"] == s
              and r["mode"] == "single"]
        r95 = [first_reach(r["curve"], 0.95 * opt) for r in rs]
        r99 = [first_reach(r["curve"], 0.99 * opt) for r in rs]
        r100 = [first_reach(r["curve"], opt) for r in rs]
        med[s] = median_reach(r95)
        final = sorted(r["curve"][-1] / opt for r in rs)
        fb = "—"
        if s.startswith("agent-reinforce"):
            fb = (f"{sum(r['feedback_tokens'] for r in rs) / len(rs):,.0f} tok, "
                  f"{sum(r['feedback_updates'] for r in rs) / len(rs):.0f} fb / "
                  f"{sum(r['numeric_updates'] for r in rs) / len(rs):.0f} num")
        rows.append([s, summarize_reach(r95, a.trials), summarize_reach(r99, a.trials),
                     summarize_reach(r100, a.trials), f"{percentile(final, 50):.1%}",
                     f"{1e3 * sum(r['own_s_per_trial'] for r in rs) / len(rs):.1f}", fb])
    print(f"Single objective: trials (distinct graphs) to reach 95/99/100% of the optimum, "
          f"median [IQR] over {a.seeds} seeds, capped at {a.trials}:\n")
    print(table(["searcher", "to 95%", "to 99%", "to optimum", f"best@{a.trials} / opt",
                 "own ms/ask", "feedback"], rows))
    rows, hv50 = [], {}
    for s in PARETO:
        rs = [r for r in runs if r["space"] == name and r["label"] == s
              and r["mode"] == "pareto"]
        cells = []
        for n in (25, 50, 100):
            hv = sorted(r["hv"][n] / ex_hv for r in rs if n in r["hv"])
            if n == 50 and hv:
                hv50[s] = percentile(hv, 50)
            cells.append(f"{percentile(hv, 50):.3f} [{percentile(hv, 25):.3f}–"
                         f"{percentile(hv, 75):.3f}]" if hv else "—")
        rows.append([s, *cells,
                     f"{1e3 * sum(r['own_s_per_trial'] for r in rs) / len(rs):.1f}"])
    print("\nPareto (accuracy, cost): hypervolume of the trials so far / the exhaustive "
          "front's, median [IQR]:\n")
    print(table(["searcher", "25 trials", "50 trials", "100 trials", "own ms/ask"], rows))
    ar, tpe, rnd = med["agent-reinforce"], med["optuna-tpe"], med["random"]
    ok1 = ar <= tpe
    ok2 = not math.isinf(ar) and (math.isinf(rnd) or ar <= 0.3 * rnd)
    others = [v for k, v in hv50.items() if not k.startswith("agent-reinforce")]
    med["flat"] = med[FLAT]
    ok3 = bool(others) and hv50.get("agent-reinforce", 0.0) >= max(others)
    print(f"\nGoals on `{name}`: agent-reinforce to 95% in {ar:g} trials vs optuna-tpe "
          f"{tpe:g} ({'met' if ok1 else 'MISSED'}) and random {rnd:g} (<= 0.3×: "
          f"{'met' if ok2 else 'MISSED'}); hypervolume at 50 trials "
          f"{hv50.get('agent-reinforce', float('nan')):.3f} vs best other "
          f"{max(others) if others else float('nan'):.3f} ({'met' if ok3 else 'MISSED'})")
    return {"ar95": ar, "tpe95": tpe, "random95": rnd, "hv50": hv50}


def selection(name: str, space_def: dict[str, Any], ctx: dict[str, Any],
              a: argparse.Namespace) -> None:
    """Noise-aware selection: every graph of the space scored on the search questions (as an
    exhaustive search would) and on as many other questions (held out): what picking the best
    search score gives held out, against the front ``tts-graph search`` lists."""
    from tts_graph.search.ranking import Scored, one_objective_front

    held, _, wall = exhaustive(name, space_def, a.questions, a.jobs, a.results, task_seed=1)
    tab = ctx["table"]
    keys = [k for k in tab if ctx["feasible"][k]]

    def counts(row: dict) -> tuple[int, int]:
        n = int(row.get("n", a.questions))
        return int(row.get("correct", round(row["accuracy"] * n))), n

    items = [Scored(i, *counts(tab[k]), tab[k]["accuracy"], tab[k]["tokens"])
             for i, k in enumerate(keys)]
    front_ = one_objective_front(items)
    best = max(items, key=lambda s: (s.accuracy, -s.tokens))
    oracle = max(held[k]["accuracy"] for k in keys)

    def h(s: Scored) -> float:
        return float(held[keys[s.ref]]["accuracy"])

    rows = [["best search score", f"{best.accuracy:.1%}", f"{h(best):.1%}",
             f"{tab[keys[best.ref]]['tokens']:,.0f}", "—"]]
    for rank, (s, pb, _) in enumerate(front_[:5], start=1):
        rows.append([f"front #{rank}", f"{s.accuracy:.1%}", f"{h(s):.1%}",
                     f"{s.tokens:,.0f}", f"{pb:.2f}"])
    print(f"\nSelection under noise on `{name}` ({len(keys)} feasible graphs, each scored on "
          f"{a.questions} search and {a.questions} other questions; held-out table "
          f"{wall:.0f} s now): the front lists {len(front_)} graphs not surely worse than "
          f"the best search score; held-out accuracy of its graphs: mean "
          f"{sum(h(s) for s, _, _ in front_) / len(front_):.1%}, best "
          f"{max(h(s) for s, _, _ in front_):.1%}; the best held-out accuracy of any graph: "
          f"{oracle:.1%}\n")
    print(table(["pick", "search acc", "held-out acc", "tokens/q", "P(best)"], rows))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--spaces", default="a,b,c", help="a plan-solve-aggregate, b two-branches, "
                   "c votes-agree")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results",
                   help="where the exhaustive tables are cached")
    p.add_argument("--ar-options", type=json.loads, default={},
                   help="agent-reinforce's searcher options, as JSON (for ablations)")
    p.add_argument("--heldout", action="store_true",
                   help="also score every graph on other questions: selection under noise")
    p.add_argument("--quick", action="store_true",
                   help="small spaces (2 models), 40 questions, 2 seeds, 30 trials")
    a = p.parse_args()
    if a.quick:
        a.questions, a.seeds, a.trials = 40, 2, 30
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    names = [SHORT.get(x.strip(), x.strip()) for x in a.spaces.split(",") if x.strip()]
    G["ar_options"] = a.ar_options
    defs = {n: quick_space(n) if a.quick else SPACES[n] for n in names}
    print_header(f"Search efficiency on SIMULATED spaces ({a.questions} simulated questions, "
                 f"{a.seeds} seeds, {a.trials} trials{', quick' if a.quick else ''})")
    for n, d in defs.items():
        G[n] = prepare(n + ("-quick" if a.quick else ""), d, a)
    jobs = [(n, s, "single", seed, a.trials) for n in names for s in SINGLE
            for seed in range(a.seeds)]
    jobs += [(n, s, "pareto", seed, a.trials) for n in names for s in PARETO
             for seed in range(a.seeds)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(a.jobs) as pool:
        runs = list(pool.imap_unordered(run_one, jobs))
    print(f"\nsearch runs: {len(runs)} in {time.perf_counter() - t0:.0f} s")
    for n in names:
        if a.seeds:  # --seeds 0: only the tables (and --heldout's selection)
            report(n, defs[n], G[n], runs, a)
        if a.heldout:
            selection(n + ("-quick" if a.quick else ""), defs[n], G[n], a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
