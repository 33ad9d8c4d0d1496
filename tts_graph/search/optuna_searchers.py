"""Searchers that are Optuna samplers: ``random`` and ``grid`` (baselines), ``optuna-tpe``
(one objective, with Optuna's successive-halving pruner), ``optuna-nsga2`` and
``optuna-motpe`` (Pareto)."""

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


def sampler_for(name: str, seed: int, space: Any, options: dict[str, Any]
                ) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        levels = int(options.get("levels", 5))
        return optuna.samplers.GridSampler(
            {p.name: p.levels(levels) for p in space.params}, seed=seed)
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
               ) -> optuna.pruners.BasePruner | None:
    if name == "optuna-tpe" and len(objectives) == 1 and spec_pruning.enabled:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec_pruning.min_questions, reduction_factor=spec_pruning.factor)
    return None
