"""Searchers that are Optuna samplers: ``random`` and ``grid`` (baselines), ``optuna-tpe``
(one objective), ``optuna-nsga2`` and ``optuna-motpe`` (Pareto). With one objective every one
of them prunes with Optuna's successive-halving pruner; with several, by dominance."""

from __future__ import annotations

from typing import Any

import optuna

from ..evaluate.summary import Summary
from .base import Proposal, Searcher, suggest


class OptunaSearcher(Searcher):
    def ask(self) -> Proposal:
        trial = self.study.ask()
        config = {p.name: suggest(trial, p) for p in self.space.params}
        return Proposal(config, trial)

    def should_prune(self, proposal: Proposal, questions: int, values: dict[str, float],
                     summary: Summary) -> bool:
        if len(self.objectives) == 1:
            # Optuna's pruners work on single-objective studies: report the rung's accuracy
            proposal.trial.report(values["accuracy"], step=questions)
            return bool(proposal.trial.should_prune())
        return super().should_prune(proposal, questions, values, summary)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its ``study.stop()`` once the grid is covered: that call
    only works inside ``study.optimize`` (ask-and-tell raises RuntimeError on the last grid
    point). The driver stops a grid search after as many trials as the grid has points."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Any) -> None:
        return None


def sampler_for(name: str, seed: int, space: Any, options: dict[str, Any]
                ) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        levels = int(options.get("levels", 5))
        return _GridSampler({p.name: p.levels(levels) for p in space.params}, seed=seed)
    if name == "optuna-tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True,
            n_startup_trials=int(options.get("n_startup_trials", 8)))
    if name == "optuna-motpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True,
            n_startup_trials=int(options.get("n_startup_trials", 8)))
    if name == "optuna-nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=int(options.get("population_size", 16)))
    raise ValueError(name)


def pruner_for(name: str, objectives: list[str], spec_pruning: Any
               ) -> optuna.pruners.BasePruner:
    """Single objective: Optuna's successive-halving pruner on the rungs' accuracy, for every
    sampler alike. Pareto searches prune by dominance (``Searcher.should_prune``) and get
    Optuna's no-op pruner, never its implicit default (a median pruner)."""
    if len(objectives) == 1 and spec_pruning.enabled:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec_pruning.min_questions, reduction_factor=spec_pruning.factor)
    return optuna.pruners.NopPruner()
