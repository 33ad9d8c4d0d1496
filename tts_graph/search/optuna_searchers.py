"""Searchers that are Optuna samplers: ``random`` and ``grid`` (baselines), ``optuna-tpe``
(one objective), ``optuna-nsga2`` and ``optuna-motpe`` (Pareto). With one objective every one
of them prunes with Optuna's successive-halving pruner; with several, by dominance."""

from __future__ import annotations

from typing import Any

import optuna

from ..evaluate.summary import Summary
from .base import Proposal, Searcher


class OptunaSearcher(Searcher):
    def ask(self) -> Proposal:
        trial = self.study.ask()
        return Proposal(self.space.suggest(trial), trial)  # define-by-run

    def should_prune(self, proposal: Proposal, questions: int, values: dict[str, float],
                     summary: Summary) -> bool:
        if len(self.objectives) == 1:
            # Optuna's pruners work on single-objective studies: report the rung's accuracy.
            # They rank by the point value; a cut also needs a finished trial surely ahead
            # (intervals apart), or a lucky rung of noise would decide
            proposal.trial.report(values["accuracy"], step=questions)
            return bool(proposal.trial.should_prune()) and self.surely_behind(summary)
        return super().should_prune(proposal, questions, values, summary)


class GridSearcher(OptunaSearcher):
    """Every distinct graph of the space once (``Space.grid``), in a seeded order; workers
    sharing a study skip the graphs it already holds. Optuna's ``GridSampler`` needs a fixed
    space, and would enumerate the settings of switched-off nodes as separate points."""

    name = "grid"

    def ask(self) -> Proposal:
        import random

        levels = int(self.options.get("levels", 5))
        order = self.space.grid(levels)
        random.Random(self.seed).shuffle(order)
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            return super().ask()  # configurations queued by hand (or a worker) go first
        taken = {t.user_attrs.get("graph") for t in trials}
        nxt = next((c for c in order if self.space.key(c) not in taken), None)
        if nxt is not None:  # else every graph was tried: a repeat, which the driver skips
            self.study.enqueue_trial(nxt, skip_if_exists=False)
        return super().ask()


def sampler_for(name: str, seed: int, space: Any, options: dict[str, Any]
                ) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":  # the grid itself comes from GridSearcher.ask (enqueued trials)
        return optuna.samplers.RandomSampler(seed=seed)
    if name in ("optuna-tpe", "optuna-motpe"):
        # group: one multivariate model per set of parameters that occur together, which is
        # how TPE handles a conditional (define-by-run) space
        import warnings

        with warnings.catch_warnings():  # Optuna calls group (and constant_liar) experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True,
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
