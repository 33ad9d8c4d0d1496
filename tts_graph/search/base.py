"""The searcher interface (Optuna's sampler idea): ``ask`` proposes a configuration,
the driver evaluates it, ``tell`` records the outcome. Every searcher records its trials in
one Optuna study, so the history lives in Optuna storage (SQLite by default, PostgreSQL for
several workers), a search resumes from it, and ``optuna-dashboard`` can show it.

To add a searcher: subclass ``Searcher``, implement ``ask`` (and ``tell`` if it learns), and
add it to ``tts_graph.search.registry``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import optuna

from ..evaluate.summary import Summary, wilson
from .space import Param, Space, suggest
from .trial import TrialResult

__all__ = ["Proposal", "Searcher", "distribution", "measured_values", "suggest"]

#: a worker records a heartbeat on the trial it evaluates this often (seconds); a RUNNING
#: trial whose heartbeat is older than ``GRACE_S`` belongs to a worker that died: the next
#: worker to ask marks it failed (Optuna's heartbeat), and it no longer counts as spent
HEARTBEAT_S = 30
GRACE_S = 120

DIRECTIONS = {"accuracy": "maximize", "cost": "minimize", "latency": "minimize",
              "flops": "minimize", "tokens": "minimize"}


@dataclass
class Proposal:
    config: dict[str, Any]
    trial: optuna.trial.Trial

    @property
    def number(self) -> int:
        return int(self.trial.number)


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    if p.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.kind == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log,
                                                    step=int(p.step or 1))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)


def measured_values(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """Every per-question figure ``Searcher.tell`` stored on a trial (``value_*`` user
    attributes: accuracy, cost, latency, flops, tokens), objectives or not."""
    return {k.removeprefix("value_"): float(v) for k, v in trial.user_attrs.items()
            if k.startswith("value_") and isinstance(v, int | float)}


class Searcher(ABC):
    """Proposes configurations of ``space`` for ``study`` (whose directions follow
    ``objectives``: accuracy first, then costs)."""

    name: str = ""
    #: whether the driver tells a proposal of an already evaluated configuration the earlier
    #: outcome instead of running it, without counting it against the trial budget
    skips_repeats: bool = True

    def __init__(self, space: Space, study: optuna.Study, objectives: list[str], *,
                 seed: int = 0, options: dict[str, Any] | None = None) -> None:
        self.space = space
        self.study = study
        self.objectives = objectives
        self.seed = seed
        self.options = dict(options or {})

    @abstractmethod
    def ask(self) -> Proposal:
        """The next configuration, with the Optuna trial that records it."""

    def tell(self, proposal: Proposal, result: TrialResult) -> None:
        """Record the outcome in the study (subclasses that learn call this too)."""
        trial = proposal.trial
        if result.summary is not None:  # for intervals (pruning, the front's ranking)
            trial.set_user_attr("scored", result.summary.scored)
            trial.set_user_attr("correct", result.summary.correct)
        for key, value in (("state", result.state), ("questions", result.questions),
                           ("live_tokens", result.live_tokens),
                           ("billed_usd", result.billed_usd),
                           ("infra_errors", result.infra_errors), ("reason", result.reason)):
            trial.set_user_attr(key, value)
        for k, v in result.values.items():
            trial.set_user_attr(f"value_{k}", v)
        if result.estimate is not None:
            trial.set_user_attr("worst_tokens_per_query", result.estimate.tokens)
            trial.set_user_attr("worst_cost_per_query", result.estimate.cost_usd)
        if result.state == "complete":
            self.study.tell(trial, [result.values[o] for o in self.objectives])
        elif result.state == "pruned":
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the searcher holds (threads, a feedback model's backend)."""

    def should_prune(self, proposal: Proposal, questions: int, values: dict[str, float],
                     summary: Summary) -> bool:
        """Cut a trial that cannot win: some finished configuration is at least as good on
        every cost objective and surely more accurate — its 95% interval lies wholly above
        this one's (a trial whose interval still overlaps it is never cut: on a few dozen
        questions that difference is noise)."""
        upper = wilson(summary.correct, summary.scored)[1] if summary.scored else 1.0
        costs = self.objectives[1:]
        for t in self.study.get_trials(deepcopy=False,
                                       states=(optuna.trial.TrialState.COMPLETE,)):
            if accuracy_interval(t)[0] <= upper:
                continue
            if all(t.values[1 + i] <= values[c] for i, c in enumerate(costs)):
                return True
        return False

    def surely_behind(self, summary: Summary) -> bool:
        """Whether a finished trial's accuracy interval lies wholly above this partial
        score's (the check Optuna's rank-based pruners are gated by)."""
        upper = wilson(summary.correct, summary.scored)[1] if summary.scored else 1.0
        return any(accuracy_interval(t)[0] > upper for t in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def accuracy_interval(t: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """The 95% (Wilson) interval of a finished trial's accuracy; a point where the trial
    recorded no counts (a study written before they were kept)."""
    scored, correct = t.user_attrs.get("scored"), t.user_attrs.get("correct")
    if isinstance(scored, int) and isinstance(correct, int) and scored > 0:
        return wilson(correct, scored)
    acc = float(t.values[0]) if t.values else float(t.user_attrs.get("value_accuracy", 0.0))
    return acc, acc


def open_storage(storage: str | optuna.storages.BaseStorage | None
                 ) -> str | optuna.storages.BaseStorage | None:
    """The storage for a URL. SQLite files get a write-ahead log with ``synchronous=NORMAL``:
    Optuna commits once per user attribute, and a full fsync per commit made the bookkeeping
    of a trial cost a third of a second (still safe against a crashed process; other
    processes on the same machine can read and write the study at the same time)."""
    if not isinstance(storage, str):  # None (in memory) or a storage object: as given
        return storage
    if storage.startswith(("postgresql://", "postgres://")):
        return _rdb(_postgres_url(storage))
    if not storage.startswith("sqlite:///"):
        return storage
    import sqlalchemy

    rdb = _rdb(storage)
    rdb.engine.dispose()  # connections made while creating the tables lack the pragmas

    @sqlalchemy.event.listens_for(rdb.engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return rdb


def _rdb(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage that keeps heartbeats (``HEARTBEAT_S``, ``GRACE_S``)."""
    import warnings

    with warnings.catch_warnings():  # Optuna calls its heartbeat experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S)


def _postgres_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy picks psycopg2 (2.0) or
    psycopg 3 (2.1) for a bare ``postgresql://``, whichever of them is missing."""
    import importlib.util

    rest = url.split("://", 1)[1]
    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{module}://{rest}"
    from ..errors import TTSGraphError

    raise TTSGraphError("a PostgreSQL storage needs a driver: pip install psycopg2-binary "
                        "(or psycopg[binary])")


def make_study(name: str, storage: str | optuna.storages.BaseStorage | None, objectives: list[str],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [DIRECTIONS[o] for o in objectives]
    study = _create_study(name, storage, sampler, pruner, directions)
    if [d.name.lower() for d in study.directions] != directions:
        from ..errors import TTSGraphError

        raise TTSGraphError(f"study '{name}' in this storage has other objectives; use "
                            "another --storage or search name")
    return study


def _create_study(name: str, storage: Any, sampler: Any, pruner: Any,
                  directions: list[str]) -> optuna.Study:
    """``optuna.create_study``, retried when workers starting together on a fresh database
    race to create Optuna's tables (one of them then fails on a duplicate key)."""
    import random
    import time

    attempts = 6
    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=name, storage=open_storage(storage),
                                       sampler=sampler, pruner=pruner, directions=directions,
                                       load_if_exists=True)
        except Exception as exc:
            from sqlalchemy.exc import IntegrityError, ProgrammingError

            if attempt == attempts - 1 or not isinstance(exc, IntegrityError | ProgrammingError):
                raise
            time.sleep(0.2 + random.random() * 0.5)
    raise AssertionError("unreachable")
