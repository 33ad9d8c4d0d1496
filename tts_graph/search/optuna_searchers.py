"""Searchers that are Optuna samplers: ``random`` and ``grid`` (baselines), ``optuna-tpe``
(one objective), ``optuna-nsga2`` and ``optuna-motpe`` (Pareto). With one objective every one
of them prunes with Optuna's successive-halving pruner; with several, by dominance."""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import TTSGraphError
from ..evaluate.summary import Summary
from .base import Proposal, Searcher


class _Options(BaseModel):
    # a misspelt option would silently keep its default: refused instead
    model_config = ConfigDict(extra="forbid")


class RandomOptions(_Options):
    pass


class GridOptions(_Options):
    levels: int = Field(default=5, ge=2, description="levels of a discretized range")


class TPEOptions(_Options):
    n_startup_trials: int = Field(default=8, ge=0, description="random trials first")


class NSGA2Options(_Options):
    population_size: int = Field(default=16, ge=2)


OPTIONS: dict[str, type[_Options]] = {
    "random": RandomOptions, "grid": GridOptions, "optuna-tpe": TPEOptions,
    "optuna-motpe": TPEOptions, "optuna-nsga2": NSGA2Options}


def check_options(model: type[BaseModel], options: dict[str, Any]) -> None:
    """``searcher.options`` valid for ``model``, or a TTSGraphError naming the first bad one
    by its path in the search file (the driver turns the path into a line)."""
    try:
        model.model_validate(options)
    except ValidationError as exc:
        from ..spec import _message

        err = exc.errors()[0]
        where = ".".join(map(str, ("searcher", "options", *err["loc"])))
        known = ", ".join(model.model_fields) or "none"
        msg = (f"unknown option (known: {known})" if err["type"] == "extra_forbidden"
               else _message(dict(err)))
        raise TTSGraphError(f"{where}: {msg}") from None


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
