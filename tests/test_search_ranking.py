"""Noise-aware selection: intervals decide pruning and the front's order, and the front
says how sure each ranking is."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from tts_graph.search.base import make_study
from tts_graph.search.optuna_searchers import OptunaSearcher
from tts_graph.search.ranking import Scored, one_objective_front, p_best, pareto_confidence
from tts_graph.search.space import Space
from tts_graph.search.spec import SearchSpec


def test_near_ties_go_to_the_cheaper_graph_and_the_surely_worse_are_left_off() -> None:
    top = Scored(1, 143, 200, 0.715, tokens=9000)
    close = Scored(2, 138, 200, 0.69, tokens=3000)  # 2.5 points behind: within one SE
    behind = Scored(3, 130, 200, 0.65, tokens=1000)  # not surely worse, not a near-tie
    far = Scored(4, 100, 200, 0.50, tokens=500)  # surely worse
    front = one_objective_front([far, behind, close, top])
    assert [s.ref for s, _, _ in front] == [2, 1, 3]
    pb = [p for _, p, _ in front]
    assert sum(pb) == pytest.approx(1.0, abs=1e-9) and pb[1] > pb[0] > pb[2]
    assert [round(q, 2) for _, _, q in front][1] == 1.0  # the leader vs itself


def test_p_best_reflects_how_far_apart_the_scores_are() -> None:
    sure = p_best([Scored(0, 90, 100, 0.9, 0), Scored(1, 50, 100, 0.5, 0)])
    unsure = p_best([Scored(0, 6, 10, 0.6, 0), Scored(1, 5, 10, 0.5, 0)])
    assert sure[0] > 0.99 and 0.5 < unsure[0] < 0.8


def test_pareto_confidence_is_the_chance_that_more_cost_buys_accuracy() -> None:
    cheap, mid, dear = (Scored(0, 50, 100, 0.5, 0), Scored(1, 52, 100, 0.52, 0),
                        Scored(2, 80, 100, 0.8, 0))
    sure = pareto_confidence([cheap, mid, dear])
    assert sure[0] == 1.0 and 0.5 < sure[1] < 0.7 and sure[2] > 0.99


def _searcher(objectives: list[str]) -> OptunaSearcher:
    spec = SearchSpec.model_validate({
        "name": "s", "base": "b.yaml", "task": {"name": "easy"},
        "choices": [{"node": "solve", "field": "samples", "values": [1, 2]}],
        "objectives": objectives, "budget": {"trials": 3}, "searcher": {"name": "random"}})
    base = {"version": 1, "name": "b", "models": {"m": {"backend": "scripted", "model": "m"}},
            "nodes": {"solve": {"role": "solver", "model": "m"}}, "output": "solve"}
    study = make_study("s", None, objectives)
    return OptunaSearcher(Space(spec, base), study, objectives)


def _finished(s: OptunaSearcher, correct: int, scored: int, tokens: float) -> None:
    t = s.study.ask()
    t.set_user_attr("scored", scored)
    t.set_user_attr("correct", correct)
    values = [correct / scored] + ([tokens] if len(s.objectives) > 1 else [])
    s.study.tell(t, values)


@pytest.mark.parametrize(("correct", "scored", "cut"), [(5, 8, False), (3, 8, False),
                                                        (0, 8, True), (20, 40, False),
                                                        (10, 40, True)])
def test_a_trial_is_cut_only_when_intervals_are_apart(correct: int, scored: int,
                                                      cut: bool) -> None:
    # the incumbent: 70/100 (95% CI 60–78%); a rung of 8 questions at 3/8 still overlaps it
    s = _searcher(["accuracy", "tokens"])
    _finished(s, 70, 100, tokens=100.0)
    summary = SimpleNamespace(scored=scored, correct=correct)
    prop = type("P", (), {"trial": s.study.ask()})()
    values = {"accuracy": correct / scored, "tokens": 200.0}
    assert s.should_prune(prop, scored, values, summary) is cut  # type: ignore[arg-type]
    assert s.surely_behind(summary) is cut


def test_optuna_pruners_are_gated_by_intervals() -> None:
    s = _searcher(["accuracy"])
    _finished(s, 70, 100, tokens=0)
    trial = s.study.ask()
    prop = type("P", (), {"trial": trial})()
    lucky_low = SimpleNamespace(scored=8, correct=4)
    # whatever Optuna's pruner says, a rung whose interval overlaps the incumbent's stays
    s.study.pruner = optuna.pruners.ThresholdPruner(lower=0.9)
    assert not s.should_prune(prop, 8, {"accuracy": 0.5}, lucky_low)  # type: ignore[arg-type]
    hopeless = SimpleNamespace(scored=16, correct=1)
    assert s.should_prune(prop, 16, {"accuracy": 1 / 16}, hopeless)  # type: ignore[arg-type]
