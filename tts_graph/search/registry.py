"""Searchers by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Searcher, make_study
from .space import Space
from .spec import Pruning, SearcherSpec

OPTUNA_SAMPLERS = ("random", "grid", "optuna-tpe", "optuna-nsga2", "optuna-motpe")


def worker_seed(seed: int, worker: int) -> int:
    """Workers sharing a study must not propose the same sequence: each gets its own seed
    (wrapped into the 0 <= seed < 2**32 the generators take: any worker number works)."""
    return (seed + 7919 * worker) % 2**32


def create_searcher(spec: SearcherSpec, space: Space, *, study_name: str, storage: str | None,
                    objectives: list[str], pruning: Pruning, worker: int = 0,
                    base_models: dict[str, Any] | None = None,
                    base_dir: Path | None = None) -> Searcher:
    seed = worker_seed(spec.seed, worker)
    if spec.name in OPTUNA_SAMPLERS:
        from .optuna_searchers import (
            OPTIONS,
            GridSearcher,
            OptunaSearcher,
            check_options,
            pruner_for,
            sampler_for,
        )

        check_options(OPTIONS[spec.name], spec.options)  # before the study is made

        study = make_study(study_name, storage, objectives,
                           sampler=sampler_for(spec.name, seed, space, spec.options),
                           pruner=pruner_for(spec.name, objectives, pruning))
        kind = GridSearcher if spec.name == "grid" else OptunaSearcher
        searcher: Searcher = kind(space, study, objectives, seed=seed, options=spec.options)
        searcher.name = spec.name
        return searcher
    if spec.name == "agent-reinforce":
        from .agent_reinforce import AgentReinforceOptions, AgentReinforceSearcher
        from .optuna_searchers import check_options

        check_options(AgentReinforceOptions, spec.options)  # before the study is made
        study = make_study(study_name, storage, objectives)
        return AgentReinforceSearcher(space, study, objectives, seed=seed,
                                      options=spec.options, batch=spec.batch,
                                      feedback_model=spec.feedback_model,
                                      base_models=base_models or {}, base_dir=base_dir)
    raise ValueError(f"unknown searcher {spec.name!r}")
