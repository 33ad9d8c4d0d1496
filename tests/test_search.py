"""Search: search files, the space over a base graph, trials (successive halving, pruning,
constraints, budgets, resume, cache) and every Optuna-backed searcher end to end.

Models here are scripted: ``good`` always answers 42 (the gold answer of every question),
``bad`` always answers 7, so a searcher has one right answer to find and runs take
milliseconds. tests/test_search_postgres.py runs two workers on one PostgreSQL study."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tts_graph.backends.registry import backend_names
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.compile import compile_graph
from tts_graph.errors import GraphError
from tts_graph.executor import Executor
from tts_graph.search.driver import SearchSession
from tts_graph.search.registry import worker_seed
from tts_graph.search.space import Infeasible, Space
from tts_graph.search.spec import SearchSpec, load_search
from tts_graph.search.trial import rungs
from tts_graph.spec import load_graph

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
version: 1
name: toy
models:
  good: {backend: scripted, model: good, params: 8e9,
         price: {input_per_mtok: 1.0, output_per_mtok: 2.0},
         options: {answers: ["Forty and two make 42. Answer: 42"]}}
  bad: {backend: scripted, model: bad, params: 1e9,
        price: {input_per_mtok: 0.1, output_per_mtok: 0.2}, options: {answers: ["Answer: 7"]}}
defaults: {max_tokens: 32, temperature: 0.7}
nodes:
  solve: {role: solver, model: bad, samples: 1}
  vote: {role: vote, inputs: [solve]}
output: vote
"""

SEARCH = """\
version: 1
name: toy-search
base: base.yaml
task: {name: task.jsonl, search_limit: 8, heldout_limit: 4}
choices:
  - {node: solve, field: model, values: [good, bad]}
  - {node: solve, field: samples, values: [1, 2, 4]}
objectives: [accuracy, tokens]
budget: {trials: 8}
searcher: {name: optuna-motpe, seed: 0}
pruning: {min_questions: 4}
"""

GOOD_1 = {"solve.model": "good", "solve.samples": 1}
BAD_4 = {"solve.model": "bad", "solve.samples": 4}


def write_toy(d: Path, search: str = SEARCH, **changes: Any) -> Path:
    """base.yaml, task.jsonl (24 questions, all answered 42) and search.yaml in ``d``;
    ``changes`` replace top-level keys of the search file."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "base.yaml").write_text(BASE)
    with (d / "task.jsonl").open("w") as f:
        for i in range(24):
            f.write(json.dumps({"id": f"q{i}", "question": f"What is {i} + {42 - i}?",
                                "answer": "42"}) + "\n")
    if changes:
        data = yaml.safe_load(search)
        data.update(changes)
        search = yaml.safe_dump(data, sort_keys=False)
    path = d / "search.yaml"
    path.write_text(search)
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every request a scripted backend receives, as (model identity, request)."""
    seen: list[tuple[str, Any]] = []
    original = ScriptedBackend.generate

    async def generate(self: ScriptedBackend, request: Any) -> Any:
        seen.append((self.info.identity, request))
        return await original(self, request)

    monkeypatch.setattr(ScriptedBackend, "generate", generate)
    return seen


def session(tmp_path: Path, **changes: Any) -> SearchSession:
    return SearchSession(write_toy(tmp_path, **changes), out_dir=tmp_path / "out")


def run(s: SearchSession) -> int:
    return asyncio.run(s.run())


def trials(s: SearchSession) -> list[optuna.trial.FrozenTrial]:
    return sorted(s.study.get_trials(deepcopy=False), key=lambda t: t.number)


# ------------------------------------------------------------------------------ search files


@pytest.mark.parametrize(("change", "expected"), [
    (("seed: 0}", "seed: 0, colour: red}"), "10: searcher.colour: unknown field"),
    (("values: [1, 2, 4]", "int: [4, 2]"), "7: choices.1: range low (4) must be <= high (2)"),
    (("budget: {trials: 8}\n", ""), "1: budget: required"),
    (("budget: {trials: 8}", "budget: {}"), "9: budget: give trials, max_tokens or max_cost_usd"),
    (("name: optuna-motpe", "name: optuna-tpe"),
     "10: searcher: optuna-tpe optimises one objective; use optuna-nsga2 or optuna-motpe for a "
     "Pareto search"),
    (("[accuracy, tokens]", "[tokens, accuracy]"),
     "8: objectives: the first objective must be accuracy"),
    (("[accuracy, tokens]", "[accuracy, speed]"), "8: objectives.1: "),
    (("node: solve, field: samples", "node: slove, field: samples"),
     "7: choices.1.node: unknown node 'slove'; the base graph has solve, vote"),
    (("field: samples", "field: sampels"),
     "7: choices.1: sampels = 1: unknown field (did you mean 'samples'?)"),
    (("values: [1, 2, 4]", "values: [0, 2, 4]"), "7: choices.1: samples = 0: must be >= 1"),
    (("values: [good, bad]", "values: [good, bda]"),
     "6: choices.0: model = 'bda': unknown model 'bda'"),
    (("task.jsonl", "nope.jsonl"), "4: task.name: nope.jsonl: cannot read"),
])
def test_search_file_errors_are_one_line_with_file_and_line(
        tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert change[0] in SEARCH
    path = write_toy(tmp_path, SEARCH.replace(*change))
    with pytest.raises(GraphError) as info:
        SearchSession(path, out_dir=tmp_path / "out")
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:{expected}"), lines[0]


def test_cli_search_error_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write_toy(tmp_path, SEARCH.replace("seed: 0}", "seed: 0, colour: red}"))
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{path}:10: searcher.colour: unknown field"
    assert "Traceback" not in proc.stderr


def test_search_file_loads_with_defaults(tmp_path: Path) -> None:
    spec, _ = load_search(write_toy(tmp_path))
    assert spec.objectives == ["accuracy", "tokens"]
    assert spec.pruning.enabled and spec.pruning.factor == 2
    assert spec.constraints.prompt_tokens_estimate == 256


# ------------------------------------------------------------------------------------ space

SPACE_BASE: dict[str, Any] = {
    "version": 1, "name": "b",
    "models": {
        "good": {"backend": "scripted", "model": "good", "params": 1e9,
                 "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "bad": {"backend": "scripted", "model": "bad", "params": 1e8,
                "price": {"input_per_mtok": 0.0, "output_per_mtok": 0.0}},  # free
    },
    "defaults": {"max_tokens": 100},
    "nodes": {
        "plan": {"role": "planner", "model": "good"},
        "solve": {"role": "solver", "model": "bad", "inputs": ["plan"], "samples": 2},
        "vote": {"role": "vote", "inputs": ["solve"]},
        "judge": {"role": "judge", "model": "good", "inputs": ["solve", "vote"]},
    },
    "output": "judge",
}


def space(choices: list[dict[str, Any]], **constraints: Any) -> Space:
    spec = SearchSpec.model_validate({
        "name": "s", "base": "b.yaml", "task": {"name": "easy"}, "choices": choices,
        "constraints": constraints, "budget": {"trials": 3}, "searcher": {"name": "random"}})
    return Space(spec, SPACE_BASE)


ALL_CHOICES: list[dict[str, Any]] = [
    {"node": "plan"}, {"node": "vote"}, {"edge": ["solve", "judge"]},
    {"edge": ["vote", "judge"]},
    {"node": "solve", "field": "samples", "int": [1, 8]},
    {"node": "solve", "field": "temperature", "float": [0.1, 1.0], "log": True},
    {"node": "solve", "field": "model", "values": ["good", "bad"]},
]


def inputs(sp: Space, config: dict[str, Any]) -> dict[str, list[str]]:
    return {k: v.get("inputs", []) for k, v in sp.graph_dict(config)["nodes"].items()}


def test_space_parameter_names_and_kinds() -> None:
    sp = space(ALL_CHOICES)
    assert [(p.name, p.kind) for p in sp.params] == [
        ("plan.enabled", "categorical"), ("vote.enabled", "categorical"),
        ("edge:solve->judge", "categorical"), ("edge:vote->judge", "categorical"),
        ("solve.samples", "int"), ("solve.temperature", "float"),
        ("solve.model", "categorical")]
    assert sp.params[0].choices == (True, False)
    assert sp.params[5].log


def test_space_switching_a_node_off_bypasses_it() -> None:
    sp = space(ALL_CHOICES)
    assert inputs(sp, {}) == {"plan": [], "solve": ["plan"], "vote": ["solve"],
                              "judge": ["solve", "vote"]}
    # vote off: the judge reads vote's input (solve), once
    assert inputs(sp, {"vote.enabled": False}) == {"plan": [], "solve": ["plan"],
                                                   "judge": ["solve"]}
    # plan off: the solver reads plan's inputs (none)
    assert inputs(sp, {"plan.enabled": False})["solve"] == []
    sp.compile({"plan.enabled": False, "vote.enabled": False})  # still a valid graph


def test_space_edge_removal_and_field_setting() -> None:
    sp = space(ALL_CHOICES)
    assert inputs(sp, {"edge:solve->judge": False})["judge"] == ["vote"]
    assert inputs(sp, {"edge:solve->judge": True})["judge"] == ["solve", "vote"]
    g = sp.graph_dict({"solve.samples": 5, "solve.model": "good", "solve.temperature": 0.3})
    assert g["nodes"]["solve"] == {"role": "solver", "model": "good", "inputs": ["plan"],
                                   "samples": 5, "temperature": 0.3}
    assert SPACE_BASE["nodes"]["solve"]["samples"] == 2  # the base is never changed
    compiled = sp.compile({"solve.samples": 5, "solve.model": "good"})
    assert compiled.spec.nodes["solve"].samples == 5
    assert g["name"] != sp.graph_dict({"solve.samples": 4})["name"]  # one name per config


def test_space_refuses_an_invalid_graph_as_infeasible() -> None:
    sp = space(ALL_CHOICES)
    with pytest.raises(Infeasible, match=r"nodes\.judge\.inputs"):
        sp.compile({"edge:solve->judge": False, "edge:vote->judge": False})


def test_space_choice_errors() -> None:
    with pytest.raises(GraphError, match="output node cannot be switched off") as info:
        space([{"node": "judge"}])
    assert info.value.path == "choices.0.node"
    with pytest.raises(GraphError, match="no edge plan -> judge"):
        space([{"edge": ["plan", "judge"]}])
    with pytest.raises(GraphError, match="chosen more than once"):
        space([{"node": "vote"}, {"node": "vote", "enabled": [False]}])


def test_space_worst_case_estimate() -> None:
    sp = space(ALL_CHOICES)
    est = sp.estimate(sp.compile({}), prompt_tokens=50)
    # plan 1 call + solve 2 samples + judge over 3 candidates (2 samples + the vote), each
    # call 50 prompt + 100 completion tokens
    assert est.calls == 6
    assert est.tokens == 6 * 150
    # good (1e9 params, $1/$2 per Mtok) makes 4 calls, bad (1e8, free) 2
    assert est.cost_usd == pytest.approx(4 * (50 * 1.0 + 100 * 2.0) / 1e6)
    assert est.flops == pytest.approx(2 * 1e9 * 600 + 2 * 1e8 * 300)
    bigger = sp.estimate(sp.compile({"solve.samples": 8}), prompt_tokens=50)
    assert bigger.tokens > est.tokens and bigger.calls == 1 + 8 + 9


@pytest.mark.parametrize(("constraint", "cap", "message"), [
    ("max_tokens_per_query", 1000, "tokens/query > 1000"),
    ("max_cost_usd_per_query", 0.0011, "/query > $0.0011"),
    ("max_flops_per_query", 1.3e12, "FLOPs/query > 1.3e+12"),
])
def test_space_constraints(constraint: str, cap: float, message: str) -> None:
    sp = space(ALL_CHOICES, **{constraint: cap, "prompt_tokens_estimate": 50})
    c = sp.spec.constraints
    sp.check_constraints(sp.estimate(sp.compile({}), 50), c)  # 900 tok, $0.001, 1.26e12
    with pytest.raises(Infeasible, match=message.replace("$", r"\$").replace("+", r"\+")):
        sp.check_constraints(sp.estimate(sp.compile({"solve.samples": 3}), 50), c)


def test_space_grid_enumerates_every_configuration() -> None:
    sp = space([{"node": "vote"}, {"node": "solve", "field": "samples", "int": [1, 3]},
                {"node": "solve", "field": "model", "values": ["good", "bad"]}])
    grid = sp.grid()
    assert len(grid) == sp.size() == 2 * 3 * 2
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == len(grid)
    assert {c["solve.samples"] for c in grid} == {1, 2, 3}
    rng = space([{"node": "solve", "field": "temperature", "float": [0.1, 1.0], "step": 0.3}])
    assert rng.params[0].levels() == [0.1, 0.4, 0.7, 1.0]
    wide = space([{"node": "solve", "field": "samples", "int": [1, 64], "log": True}])
    assert wide.params[0].levels() == [1, 3, 8, 23, 64]


# ------------------------------------------------------------------------ conditional space

COND_CHOICES: list[dict[str, Any]] = [
    {"node": "plan"}, {"node": "plan", "field": "model", "values": ["good", "bad"]},
    {"node": "vote"}, {"edge": ["vote", "judge"]},
    {"node": "solve", "field": "samples", "values": [1, 2, 3]},
]


def test_a_switched_off_nodes_fields_and_edges_are_not_parameters() -> None:
    sp = space(COND_CHOICES)
    req = {p.name: p.requires for p in sp.params}
    assert req == {"plan.enabled": (), "plan.model": ("plan.enabled",), "vote.enabled": (),
                   "edge:vote->judge": ("vote.enabled",), "solve.samples": ()}
    off = {"plan.enabled": False, "plan.model": "good", "vote.enabled": False,
           "edge:vote->judge": True, "solve.samples": 2}
    assert sp.normalize(off) == {"plan.enabled": False, "vote.enabled": False,
                                 "solve.samples": 2}
    # the same graph, whatever the switched-off node's model and the gone edge's toggle
    assert sp.key(off) == sp.key({**off, "plan.model": "bad", "edge:vote->judge": False})
    assert sp.key(off) != sp.key({**off, "solve.samples": 3})
    on = {**off, "plan.enabled": True}
    assert sp.key(on) != sp.key({**on, "plan.model": "bad"})


def test_size_and_grid_count_distinct_graphs() -> None:
    sp = space(COND_CHOICES)
    c = sp.census()
    # product 2·2·2·2·3 = 48; conditional: plan (off, good, bad) × vote (off, on × edge 2)
    # × samples 3 = 27; vote on without its edge to the judge is a vote that leads nowhere:
    # invalid (9 of them); the rest are distinct graphs
    assert (c.configurations, c.conditional, c.invalid) == (48, 27, 9)
    assert sp.size() == c.graphs == 18
    grid = sp.grid()
    assert len(grid) == 18 == len({sp.key(g) for g in grid})
    assert all("plan.model" not in g for g in grid if not g["plan.enabled"])


def test_the_graph_not_the_spelling_is_the_identity() -> None:
    # two names for one model entry, and a description: still the same graph
    base = json.loads(json.dumps(SPACE_BASE))
    base["models"]["good2"] = dict(base["models"]["good"])
    base["description"] = "described"
    spec = SearchSpec.model_validate({
        "name": "s", "base": "b.yaml", "task": {"name": "easy"},
        "choices": [{"node": "plan", "field": "model", "values": ["good", "good2", "bad"]}],
        "budget": {"trials": 3}, "searcher": {"name": "random"}})
    sp = Space(spec, base)
    assert sp.key({"plan.model": "good"}) == sp.key({"plan.model": "good2"})
    assert sp.key({"plan.model": "good"}) != sp.key({"plan.model": "bad"})
    assert sp.size() == 2


def test_optuna_asks_only_for_the_parameters_a_configuration_keeps(tmp_path: Path) -> None:
    search = SEARCH.replace("choices:\n", "choices:\n  - {node: solve}\n").replace(
        "objectives: [accuracy, tokens]", "objectives: [accuracy]").replace(
        "optuna-motpe", "random")
    base = BASE.replace("solve: {role: solver, model: bad, samples: 1}\n  vote: {role: vote, "
                        "inputs: [solve]}",
                        "solve: {role: solver, model: bad, samples: 1}\n  other: {role: "
                        "solver, model: good}\n  vote: {role: vote, inputs: [solve, other]}")
    path = write_toy(tmp_path, search=search)
    (tmp_path / "base.yaml").write_text(base)
    s = SearchSession(path, out_dir=tmp_path / "out", storage=None)
    assert s.space.size() == 1 + 2 * 3  # solve off is one graph, on: 2 models × 3 widths
    s.REPEATS = 20
    run(s)
    ts = [t for t in trials(s) if t.state.is_finished()]
    for t in ts:
        assert set(t.params) == ({"solve.enabled", "solve.model", "solve.samples"}
                                 if t.params["solve.enabled"] else {"solve.enabled"})
    # one trial per graph is run; every other proposal of a graph is a repeat, told not run
    run_graphs = [t.user_attrs["graph"] for t in ts if "repeat_of" not in t.user_attrs]
    assert len(run_graphs) == len(set(run_graphs)) == s.spent()[0]
    front = s.front()
    assert len({e.graph for e in front}) == len(front)


def test_front_confidence_and_intervals(tmp_path: Path) -> None:
    s = session(tmp_path, objectives=["accuracy"], searcher={"name": "grid"},
                budget={"trials": 6})
    run(s)
    front = s.front()
    # good ×1/×2/×4 all 8/8: near-ties, cheapest first, each a third likely to be the best
    assert front[0].config == GOOD_1
    assert all(e.search_ci is not None and e.search_ci[1] == 1.0 for e in front)
    assert sum(e.confidence or 0 for e in front) == pytest.approx(1.0, abs=0.02)
    data = json.loads(s.write_report(front).read_text())
    assert {"confidence", "search_ci", "graph"} <= set(data["front"][0])


# ----------------------------------------------------------------------------------- trials


def test_rungs_of_successive_halving() -> None:
    assert rungs(16, 4, 2, True) == [4, 8, 16]
    assert rungs(10, 4, 2, True) == [4, 8, 10]
    assert rungs(27, 3, 3, True) == [3, 9, 27]
    assert rungs(3, 4, 2, True) == [3]
    assert rungs(16, 4, 2, False) == [16]


@pytest.mark.parametrize(("constraint", "cap"), [
    ("max_tokens_per_query", 400), ("max_cost_usd_per_query", 0.0008),
    ("max_flops_per_query", 6e12),
])
def test_configuration_over_a_constraint_is_never_run(
        tmp_path: Path, calls: list[Any], constraint: str, cap: float) -> None:
    # good x4 samples, 256 + 32 tokens a call: 1152 tok, $0.00128, 1.8e13 FLOPs
    s = session(tmp_path, constraints={constraint: cap}, budget={"trials": 2})
    s.study.enqueue_trial({"solve.model": "good", "solve.samples": 4})
    s.study.enqueue_trial(GOOD_1)  # 288 tok, $0.00032, 4.6e12 FLOPs: within every cap
    assert run(s) == 2
    over, within = trials(s)
    assert over.user_attrs["state"] == "infeasible"
    assert over.state == optuna.trial.TrialState.FAIL
    assert over.user_attrs["reason"].startswith("worst case ")
    assert over.user_attrs["worst_tokens_per_query"] == 4 * (256 + 32)
    assert within.state == optuna.trial.TrialState.COMPLETE
    assert all(req.n == 1 for _, req in calls)  # only the samples-1 trial sent anything
    assert len(calls) == 8  # one call for each of the 8 search questions
    assert not list((tmp_path / "out" / "trials").glob("trial-00000*"))


def test_successive_halving_scores_on_growing_subsets(tmp_path: Path, calls: list[Any]
                                                      ) -> None:
    s = session(tmp_path, budget={"trials": 1}, pruning={"min_questions": 2})
    s.study.enqueue_trial(GOOD_1)
    run(s)
    (t,) = trials(s)
    assert t.user_attrs["questions"] == 8
    assert len(calls) == 8  # rungs of 2, 4 then 8 questions: each question asked once


def test_tpe_prunes_a_clearly_worse_trial(tmp_path: Path, calls: list[Any]) -> None:
    s = session(tmp_path, objectives=["accuracy"], budget={"trials": 2},
                searcher={"name": "optuna-tpe"}, pruning={"min_questions": 2})
    assert s.study.pruner.__class__.__name__ == "SuccessiveHalvingPruner"
    s.study.enqueue_trial(GOOD_1)
    s.study.enqueue_trial(BAD_4)
    run(s)
    good, bad = trials(s)
    assert good.state == optuna.trial.TrialState.COMPLETE and good.values == [1.0]
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["questions"] == 2  # cut after the first rung
    assert sum(req.n for ident, req in calls if ident == "scripted:bad") == 2 * 4


@pytest.mark.parametrize(("first", "second", "pruned"), [
    (GOOD_1, BAD_4, True),  # worse and dearer: dominated, cut
    ({"solve.model": "good", "solve.samples": 4}, {"solve.model": "bad", "solve.samples": 1},
     False),  # worse but cheaper: it may be on the front, kept
])
def test_pareto_search_prunes_by_dominance(tmp_path: Path, first: dict[str, Any],
                                           second: dict[str, Any], pruned: bool) -> None:
    s = session(tmp_path, budget={"trials": 2}, pruning={"min_questions": 2})
    assert s.study.pruner.__class__.__name__ == "NopPruner"
    s.study.enqueue_trial(first)
    s.study.enqueue_trial(second)
    run(s)
    a, b = trials(s)
    assert a.state == optuna.trial.TrialState.COMPLETE
    if pruned:
        assert b.state == optuna.trial.TrialState.PRUNED and b.user_attrs["questions"] == 2
    else:
        assert b.state == optuna.trial.TrialState.COMPLETE and b.user_attrs["questions"] == 8


def test_trial_budget_stops_the_loop(tmp_path: Path) -> None:
    s = session(tmp_path, budget={"trials": 3}, searcher={"name": "random"})
    assert run(s) == 3
    assert len([t for t in trials(s) if "repeat_of" not in t.user_attrs]) == 3
    assert run(s) == 0  # used up


def test_token_budget_stops_the_loop(tmp_path: Path) -> None:
    s = session(tmp_path, budget={"max_tokens": 300}, searcher={"name": "random"},
                pruning={"enabled": False})
    for c in ({"solve.model": m, "solve.samples": k} for m in ("good", "bad") for k in (1, 2, 4)):
        s.study.enqueue_trial(c)  # six different configurations, none cached
    ran = run(s)
    spent = [t.user_attrs["live_tokens"] for t in trials(s) if t.state.is_finished()]
    assert sum(spent) >= 300 and sum(spent[:-1]) < 300
    assert ran == len(spent) < 6


def test_spending_budget_ends_when_nothing_new_is_spent(tmp_path: Path) -> None:
    # two configurations, every repeat cached: without a guard this would never end
    s = session(tmp_path, budget={"max_tokens": 10**9}, searcher={"name": "random"},
                choices=[{"node": "solve", "field": "model", "values": ["good", "bad"]}])
    s.IDLE_TRIALS = 8
    ran = run(s)
    assert ran <= 2  # each configuration ran once; the repeats were told, not run
    assert "already evaluated" in s.stop_reason


def test_rerun_with_the_same_storage_resumes(tmp_path: Path, calls: list[Any]) -> None:
    path = write_toy(tmp_path, budget={"trials": 3}, searcher={"name": "random", "seed": 3})
    first = SearchSession(path, out_dir=tmp_path / "out")
    assert run(first) == 3
    sent = len(calls)
    again = SearchSession(path, out_dir=tmp_path / "out")
    assert run(again) == 0 and len(calls) == sent  # nothing re-run
    write_toy(tmp_path, budget={"trials": 5}, searcher={"name": "random", "seed": 3})
    more = SearchSession(path, out_dir=tmp_path / "out")
    assert run(more) == 2
    counted = [t for t in trials(more) if "repeat_of" not in t.user_attrs]
    assert len(counted) == 5 and len({json.dumps(t.params) for t in counted}) == 5
    assert all(t.state.is_finished() for t in trials(more))


def test_a_repeated_configuration_is_not_run_again_nor_counted(tmp_path: Path,
                                                                calls: list[Any]) -> None:
    s = SearchSession(write_toy(tmp_path, budget={"trials": 2}, objectives=["accuracy"],
                                searcher={"name": "grid"}),
                      out_dir=tmp_path / "out", use_cache=False)  # a re-run would call again
    s.study.enqueue_trial({"solve.model": "good", "solve.samples": 2})
    s.study.enqueue_trial({"solve.model": "good", "solve.samples": 2})
    assert run(s) == 2
    first, second, *rest = trials(s)
    [third] = [t for t in rest if "repeat_of" not in t.user_attrs]  # grid may repeat too
    assert second.user_attrs["repeat_of"] == 0
    assert second.values == first.values  # the searcher is told what the first one scored
    assert second.user_attrs["live_tokens"] == 0
    assert second.user_attrs["value_tokens"] == first.user_attrs["value_tokens"]
    assert "repeat of trial 0" in second.user_attrs["reason"]
    assert first.intermediate_values  # its rungs, replayed for a pruner to compare
    assert second.intermediate_values == first.intermediate_values
    assert third.params != first.params  # the budget went to a configuration not yet seen
    assert s.spent()[0] == 2
    # good x2 was asked once per search question (8), by trial 0 only
    assert sum(1 for who, req in calls if "good" in who and req.n == 2) == 8


def test_a_search_that_only_repeats_itself_stops(tmp_path: Path, calls: list[Any]) -> None:
    # a 6-configuration space and a budget of 10: once every configuration is evaluated the
    # searcher can only repeat one; the loop stops after REPEATS of those, saying why
    s = SearchSession(write_toy(tmp_path, budget={"trials": 10}, pruning={"enabled": False},
                                searcher={"name": "random", "seed": 0}),
                      out_dir=tmp_path / "out", use_cache=False)  # a re-run would call again
    s.REPEATS = 200  # random finds all 6 long before 200 repeats in a row
    ran = run(s)
    assert ran == 6 and s.spent()[0] == 6
    assert "200 proposals in a row" in s.stop_reason and "already evaluated" in s.stop_reason
    repeats = [t for t in trials(s) if "repeat_of" in t.user_attrs]
    assert len(repeats) >= 200
    assert all(t.user_attrs["live_tokens"] == 0 for t in repeats)
    # one call per search question (8) for each of the 6 configurations, none for a repeat
    assert len(calls) == 6 * 8


def test_a_worker_over_the_trial_budget_records_its_trial_and_stops(tmp_path: Path,
                                                                    calls: list[Any]) -> None:
    """Two workers both saw one slot left; the one that opened its trial second stops."""
    s = session(tmp_path, budget={"trials": 1}, searcher={"name": "random"})
    other = s.study.ask()  # another worker took the last slot, still running
    checks = iter([True, False])
    s.budget_left = lambda: next(checks)  # type: ignore[method-assign]
    assert run(s) == 0
    assert not calls
    mine = trials(s)[1]
    assert mine.state == optuna.trial.TrialState.FAIL and mine.user_attrs["over_budget"]
    assert s.spent()[0] == 1
    assert other.number == 0


def test_a_dead_workers_trial_is_failed_by_heartbeat_and_not_counted(
        tmp_path: Path, calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that died left its trial RUNNING; once its heartbeat is older than the grace
    period, the next worker marks it failed and runs the whole budget itself."""
    import tts_graph.search.base as sbase

    monkeypatch.setattr(sbase, "GRACE_S", 1)
    s = session(tmp_path, budget={"trials": 2}, searcher={"name": "random", "seed": 1})
    storage = s._heartbeats()
    assert storage is not None  # the SQLite study keeps heartbeats
    dead = s.study.ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.2)  # longer than the grace period, with no heartbeat since
    assert run(s) == 2
    got = trials(s)
    assert got[0].number == dead.number and got[0].state == optuna.trial.TrialState.FAIL
    assert "state" not in got[0].user_attrs  # no outcome was ever told for it
    assert [t.state for t in got[1:]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert s.spent()[0] == 2


def test_a_live_workers_trial_keeps_its_heartbeat(tmp_path: Path, calls: list[Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import tts_graph.search.base as sbase

    monkeypatch.setattr(sbase, "GRACE_S", 1)
    s = session(tmp_path, budget={"trials": 1}, searcher={"name": "random", "seed": 1})
    seen: list[bool] = []
    real = s.runner.run

    async def slow(*a: Any, **kw: Any) -> Any:
        await asyncio.sleep(2.2)  # past the grace period: only heartbeats keep it alive
        other = SearchSession(s.path, out_dir=s.out_dir)
        other._fail_stale_trials()
        seen.append(trials(other)[0].state == optuna.trial.TrialState.RUNNING)
        return await real(*a, **kw)

    s.runner.run = slow  # type: ignore[method-assign]
    monkeypatch.setattr(s._heartbeats(), "heartbeat_interval", 0.2)
    assert run(s) == 1 and seen == [True]
    assert trials(s)[0].state == optuna.trial.TrialState.COMPLETE


def test_workers_get_distinct_seeds() -> None:
    assert len({worker_seed(0, w) for w in range(8)}) == 8


# ----------------------------------------------------------------------- searchers, end to end


@pytest.mark.parametrize("name", ["random", "grid", "optuna-tpe", "optuna-nsga2",
                                  "optuna-motpe"])
def test_searcher_finds_the_good_configuration(tmp_path: Path, name: str) -> None:
    objectives = ["accuracy"] if name == "optuna-tpe" else ["accuracy", "tokens"]
    s = session(tmp_path, objectives=objectives, searcher={"name": name, "seed": 1},
                budget={"trials": 10})
    s.REPEATS = 8
    ran = run(s)
    # 6 configurations: each runs once at most (repeats are told, not run); grid runs them all
    assert ran == 6 if name == "grid" else 3 <= ran <= 6
    assert s.spent()[0] == ran
    front = s.front()
    assert front and front[0].config["solve.model"] == "good"
    assert front[0].search["accuracy"] == 1.0
    if name == "grid":  # every configuration seen: the cheapest right one leads the front
        assert front[0].config == GOOD_1 and len(front) == 2  # and bad x1 (cheapest)
        assert front[1].config == {"solve.model": "bad", "solve.samples": 1}

    s.export(front)
    asyncio.run(s.rescore(front))
    report = s.write_report(front)
    plot = s.plot(front)
    assert plot is not None and plot.name == "search.png" and plot.stat().st_size > 1000
    data = json.loads(report.read_text())
    assert data["objectives"] == objectives and len(data["front"]) == len(front)
    assert data["front"][0]["heldout"]["accuracy"] == 1.0  # held-out questions agree
    assert {Path(e.graph_file).name for e in front} == {
        p.name for p in (tmp_path / "out" / "front").glob("*.yaml")}
    # every exported graph is a runnable graph file on its own
    for e in front:
        graph = compile_graph(load_graph(e.graph_file), backends=backend_names())
        assert graph.spec.nodes["solve"].model == e.config["solve.model"]
    best = Executor(front[0].graph_file).run("What is 40 + 2?")
    assert best.answer == "42"


def test_one_objective_ties_go_to_fewer_tokens_and_keep_every_figure(tmp_path: Path) -> None:
    # good x1, x2, x4 all score 100%: the front lists the three, the cheapest first, each with
    # its tokens measured on the search questions (the plot places them by those)
    s = session(tmp_path, objectives=["accuracy"], searcher={"name": "grid"},
                budget={"trials": 6})
    run(s)
    front = s.front()
    assert [e.config for e in front] == [
        GOOD_1, {"solve.model": "good", "solve.samples": 2},
        {"solve.model": "good", "solve.samples": 4}]
    tokens = [e.search["tokens"] for e in front]
    assert tokens[0] > 0 and tokens == sorted(tokens) and tokens[0] < tokens[2]
    assert {"accuracy", "cost", "latency", "flops", "tokens"} <= set(front[0].search)
    data = json.loads(s.write_report(front).read_text())
    assert data["front"][0]["search"]["tokens"] == tokens[0]


def test_cli_search_table_shows_tokens_and_whole_paths(tmp_path: Path) -> None:
    path = write_toy(tmp_path, budget={"trials": 6}, searcher={"name": "grid"},
                     objectives=["accuracy"])
    out = tmp_path / ("a-rather-long-directory-name-for-the-output-of-this-search" * 2)
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(out), "--no-heldout"], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert "tokens (search)" in proc.stdout
    assert "…" not in proc.stdout  # names and the folder are folded over lines, never cut
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert any("01-trial" in r and ".yaml" in r for r in rows)  # a name within the folder
    assert str(out / "front") in proc.stdout.replace("\n", "")  # the folder, below


def test_heldout_questions_are_apart_from_search_questions(tmp_path: Path) -> None:
    s = session(tmp_path)
    assert len(s.search_items) == 8 and len(s.heldout_items) == 4
    assert not {it.id for it in s.search_items} & {it.id for it in s.heldout_items}


def test_study_loads_in_plain_optuna_for_the_dashboard(tmp_path: Path) -> None:
    s = session(tmp_path, budget={"trials": 4}, searcher={"name": "random"},
                pruning={"enabled": False})
    run(s)
    study = optuna.load_study(study_name="toy-search", storage=s.storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len([t for t in done if "repeat_of" not in t.user_attrs]) == 4
    for t in done:
        assert set(t.params) == {"solve.model", "solve.samples"}
        assert len(t.values) == 2 and t.values[0] == t.user_attrs["value_accuracy"]
        assert t.user_attrs["state"] == "complete" and t.user_attrs["questions"] == 8
        assert t.user_attrs["live_tokens"] >= 0 and "billed_usd" in t.user_attrs


def test_cli_search_end_to_end(tmp_path: Path) -> None:
    path = write_toy(tmp_path, budget={"trials": 4}, searcher={"name": "random"})
    out = tmp_path / "elsewhere"
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(out), "--json"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)  # the task file is found beside the search
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["search"] == "toy-search" and report["front"]
    assert (out / "front.json").exists() and (out / "search.png").exists()
    assert all(Path(e["graph_file"]).exists() for e in report["front"])
    assert report["front"][0]["heldout"]


# ------------------------------------------------------------------------ shipped searchers


@pytest.mark.parametrize("path", sorted((ROOT / "searchers").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_search_files_start(tmp_path: Path, path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    if "choices" not in data:  # a base graph kept beside the searches
        compile_graph(load_graph(path), backends=backend_names())
        return
    spec, _ = load_search(path)
    s = SearchSession(path, out_dir=tmp_path / "out")  # builds the space, study and task
    assert s.space.size() >= 4 and s.search_items and s.heldout_items
    assert s.spec == spec
    config = {p.name: p.levels(3)[0] for p in s.space.params}
    s.space.compile(config)  # a configuration of it compiles
    assert not list((tmp_path / "out").glob("trials/*"))  # nothing was run


def test_search_with_the_code_scorer_refuses_guard_mode_without_the_flag(
        tmp_path: Path) -> None:
    path = write_toy(tmp_path, task={"name": "humaneval", "search_limit": 2,
                                     "heldout_limit": 1})
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "TTS_GRAPH_SANDBOX_MODE": "guard"}
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(tmp_path / "out"), "--no-heldout"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "guard mode" in lines[0] and "--accept-weak-sandbox" in lines[0]
    assert not list((tmp_path / "out").glob("trials/*"))  # nothing ran
    import tts_graph.sandbox.host as sandbox

    old = sandbox._MODE
    sandbox._MODE = ("guard", False)
    try:
        s = SearchSession(path, out_dir=tmp_path / "out2", accept_weak_sandbox=True)
        assert s.sandbox == "guard"
        s.close()
    finally:
        sandbox._MODE = old
