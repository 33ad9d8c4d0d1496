"""The search loop: ask → evaluate → tell until the trial (or spending) budget is used, shared
through the Optuna study by every worker on the same storage; then the Pareto front, exported
as runnable graphs and re-scored on the held-out questions."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages._heartbeat import BaseHeartbeat  # not re-exported; RDBStorage is one

from ..backends.registry import backend_names
from ..cache import ResponseCache
from ..compile import compile_graph
from ..errors import GraphError, TTSGraphError
from ..evaluate.summary import wilson
from ..files import write_whole
from ..spec import load_graph
from ..yamlpos import line_of, load_yaml_file
from .base import HEARTBEAT_S, Proposal, Searcher, measured_values
from .ranking import Scored, one_objective_front, pareto_confidence
from .registry import create_searcher
from .space import Space
from .spec import SearchSpec, load_search
from .trial import TrialResult, TrialRunner

log = logging.getLogger("tts_graph.search")


@dataclass
class FrontEntry:
    trial: int
    config: dict[str, Any]
    search: dict[str, float]
    heldout: dict[str, float] = field(default_factory=dict)
    heldout_ci: tuple[float, float] | None = None
    graph_file: str = ""
    graph: str = ""  # the graph's identity (Space.key)
    search_ci: tuple[float, float] | None = None  # 95% interval of the search accuracy
    #: how sure the ranking is: one objective, the chance this entry is the most accurate
    #: of the front; Pareto, the chance it is more accurate than the next cheaper entry
    confidence: float | None = None


@dataclass
class Outcome:
    study: optuna.Study
    front: list[FrontEntry]
    trials_run_here: int
    out_dir: Path
    plot: Path | None = None


class SearchSession:
    def __init__(self, path: str | Path, *, storage: str | None = None,
                 out_dir: str | Path | None = None, worker: int = 0,
                 use_cache: bool = True, accept_weak_sandbox: bool = False) -> None:
        from ..evaluate.tasks import TaskError, load_task, split_items

        self.path = Path(path)
        self.stop_reason = ""  # why the last ``run`` ended
        self.worker = worker
        self.spec, holder = load_search(self.path)
        spec: SearchSpec = self.spec

        def here(exc: TTSGraphError) -> GraphError:
            """An error whose message starts with its path in the search file (``searcher.
            options.levels: ...``), at that line of the search file."""
            path, sep, message = str(exc).partition(": ")
            if not sep or not re.fullmatch(r"[\w\-]+(\.[\w\-]+)*", path):
                path, message = "", str(exc)
            loc = tuple(int(x) if x.isdigit() else x for x in path.split(".") if x)
            return GraphError(message, path=path, source=str(self.path),
                              line=line_of(holder.lines, loc))

        base_path = (self.path.parent / spec.base).resolve()
        if not base_path.is_file():  # said where the search file names it
            what = "is a directory" if base_path.is_dir() else "file not found"
            raise GraphError(f"{spec.base}: {what}", path="base", source=str(self.path),
                             line=line_of(holder.lines, ("base",)))
        base, _lines = load_yaml_file(base_path)
        if isinstance(base, dict) and {"base", "choices"} <= set(base):
            # not a page of "unknown field" lines about a graph it never was
            raise GraphError(f"{spec.base}: is a search file, not a graph", path="base",
                             source=str(self.path), line=line_of(holder.lines, ("base",)))
        # the base graph must be valid on its own
        compile_graph(load_graph(base_path), backends=backend_names())
        self.base_path = base_path
        try:
            self.space = Space(spec, base, source=str(base_path), base_dir=base_path.parent)
        except GraphError as exc:  # a choice that does not fit the base graph: where it is
            loc = tuple(int(x) if x.isdigit() else x for x in exc.path.split(".") if x)
            raise GraphError(exc.message, path=exc.path, source=str(self.path),
                             line=line_of(holder.lines, loc)) from None
        unfit = self.space.unfit()  # else every trial would be infeasible, and exit 0
        if unfit is not None:
            raise GraphError(unfit[1], path=unfit[0], source=str(self.path),
                             line=line_of(holder.lines, (unfit[0],)))
        self.out_dir = Path(out_dir or Path("runs") / f"search-{spec.name}")
        _make_out_dir(self.out_dir)
        if isinstance(storage, str):  # the Python API may pass an Optuna storage object
            _check_storage(storage)
        self.storage = storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"
        t = spec.task
        try:
            self.task = load_task(_task_path(t.name, self.path.parent),
                                  question_field=t.question_field,
                                  answer_field=t.answer_field, id_field=t.id_field,
                                  scorer=t.scorer)
        except TaskError as exc:
            raise GraphError(str(exc), path="task.name", source=str(self.path),
                             line=line_of(holder.lines, ("task", "name"))) from None
        from ..evaluate.scorers import code_sandbox

        # model-written code runs in every trial: guard mode only when the user accepts it
        self.sandbox = code_sandbox(self.task.scorer, accept_weak=accept_weak_sandbox)
        self.search_items = split_items(self.task.items, "search", seed=t.seed,
                                        limit=t.search_limit)
        self.heldout_items = split_items(self.task.items, "test", seed=t.seed,
                                         limit=t.heldout_limit)
        if not self.search_items:
            raise TTSGraphError(f"task {t.name}: no search questions")
        self.cache = ResponseCache(self.out_dir / "cache.sqlite") if use_cache else None
        try:
            self.searcher: Searcher = create_searcher(
                spec.searcher, self.space, study_name=spec.name, storage=self.storage,
                objectives=list(spec.objectives), pruning=spec.pruning, worker=worker,
                base_models=dict(base.get("models") or {}), base_dir=base_path.parent)
        except TTSGraphError as exc:
            if self.cache is not None:
                self.cache.close()
            raise here(exc) from None
        except Exception as exc:  # the storage's driver (sqlalchemy, psycopg) failed
            if self.cache is not None:
                self.cache.close()
            first = (str(exc).strip().splitlines() or [""])[0]  # drivers add lines of help
            raise TTSGraphError(f"storage {_safe_storage(str(self.storage))}: cannot open: "
                                f"{type(exc).__name__}: {first}") from None
        self.study = self.searcher.study
        changed = _changed_space(self.study, _space_digests(spec, base))
        if changed:
            self.close()
            raise GraphError(
                f"study '{spec.name}' in {_safe_storage(str(self.storage))} was made by "
                f"another search: its {' and '.join(changed)} differ, so its trials would "
                "not compare with this one's; restore the file, or give another --out, "
                "--storage or name (budget, searcher and concurrency may change on a resume)",
                path=changed[0], source=str(self.path),
                line=line_of(holder.lines, (changed[0],)))
        self.runner = TrialRunner(self.space, self.task.scorer, self.search_items,
                                  out_dir=self.out_dir, cache=self.cache,
                                  concurrency=spec.concurrency)

    # ------------------------------------------------------------------------ budget

    def spent(self) -> tuple[int, int, float]:
        """(trials started in the study by any worker, live tokens, billed USD). Trials a
        worker opened after the budget was used (see ``run``) do not count, nor trials
        enqueued and not yet started."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if _counts(t)]
        tokens = sum(int(t.user_attrs.get("live_tokens", 0)) for t in trials)
        usd = sum(float(t.user_attrs.get("billed_usd", 0.0)) for t in trials)
        return len(trials), tokens, usd

    def trial_limit(self) -> int | None:
        limit = self.spec.budget.trials
        if self.spec.searcher.name == "grid":
            size = self.space.size(int(self.spec.searcher.options.get("levels", 5)))
            limit = min(limit, size) if limit else size
        return limit

    def budget_left(self) -> bool:
        b = self.spec.budget
        n, tokens, usd = self.spent()
        limit = self.trial_limit()
        if limit is not None and n >= limit:
            return False
        if b.max_tokens is not None and tokens >= b.max_tokens:
            return False
        return not (b.max_cost_usd is not None and usd >= b.max_cost_usd)

    def _over_trial_budget(self, proposal: Proposal) -> bool:
        """Whether ``proposal`` came after the trial budget was used up. Workers sharing a
        study check the budget and then open a trial, so two may both see one slot left; the
        storage numbers trials in the order they were opened, so the trial opened later is
        the one over budget, whichever worker looks."""
        limit = self.trial_limit()
        if limit is None:
            return False
        before = sum(1 for t in self.study.get_trials(deepcopy=False)
                     if t.number < proposal.number and _counts(t))
        return before >= limit

    # --------------------------------------------------------------------------- loop

    #: with a budget in tokens or $ only, stop after this many trials in a row that spent
    #: nothing (every call cached, or infeasible): the searcher has nothing new to try
    IDLE_TRIALS = 32
    #: stop after this many proposals in a row of configurations already evaluated (the
    #: searcher keeps coming back to what it has seen: the space looks exhausted)
    REPEATS = 32

    def close(self) -> None:
        """Release the searcher (agent-reinforce's feedback thread) and the cache."""
        self.searcher.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> SearchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(self, on_trial: Callable[[Proposal, TrialResult], None] | None = None
                  ) -> int:
        """Run trials until the budget is used; returns how many ran here.

        With a trial budget, a study holds exactly that many evaluated trials however many
        workers share it: a worker whose newly opened trial is over the budget records it as
        failed with the user attribute ``over_budget`` (never evaluated, never counted) and
        stops. A proposal of a configuration already evaluated (complete or pruned) is not
        run again: its trial is told the earlier outcome (so the searcher learns it was seen),
        carries ``repeat_of``, and does not count against the trial budget. ``stop_reason``
        says why the loop ended."""
        ran = 0
        idle = 0
        repeats = 0
        self.stop_reason = "budget used"
        open_trial: optuna.trial.Trial | None = None
        try:
            while True:
                self._fail_stale_trials()
                if not self.budget_left():
                    break
                with warnings.catch_warnings():
                    # we do keep the heartbeat of trials opened with ask (see _heartbeat)
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed")
                    proposal = self.searcher.ask()
                open_trial = proposal.trial
                proposal.trial.set_user_attr("worker", self.worker)
                # one configuration per graph: the identity decides repeats, stores and the front
                proposal.trial.set_user_attr("graph", self.space.key(proposal.config))
                if self._over_trial_budget(proposal):
                    proposal.trial.set_user_attr("over_budget", True)
                    proposal.trial.set_user_attr("state", "over_budget")
                    self.study.tell(proposal.trial, state=optuna.trial.TrialState.FAIL)
                    self.stop_reason = "budget used (by another worker)"
                    break
                earlier = self._evaluated(proposal) if self.searcher.skips_repeats else None
                if earlier is not None:
                    result = _replayed(earlier)
                    proposal.trial.set_user_attr("repeat_of", earlier.number)
                    # its rungs too, so a pruner comparing trials at a rung sees what a re-run
                    # would have reported (only one-objective studies have them)
                    for step, value in sorted(earlier.intermediate_values.items()):
                        proposal.trial.report(value, step)
                    self.searcher.tell(proposal, result)
                    if on_trial is not None:
                        on_trial(proposal, result)
                    repeats += 1
                    if repeats >= self.REPEATS:
                        self.stop_reason = (f"{repeats} proposals in a row were configurations "
                                            "already evaluated: nothing new to try")
                        break
                    continue
                repeats = 0
                beat = asyncio.create_task(self._heartbeat(proposal.trial._trial_id))
                try:
                    result = await self.runner.run(
                        proposal.config, proposal.number,
                        lambda q, v, s, p=proposal: self.searcher.should_prune(p, q, v, s))
                finally:
                    beat.cancel()
                self.searcher.tell(proposal, result)
                ran += 1
                if on_trial is not None:
                    on_trial(proposal, result)
                idle = idle + 1 if result.live_tokens == 0 and result.billed_usd == 0 else 0
                if self.spec.budget.trials is None and idle >= self.IDLE_TRIALS:
                    self.stop_reason = (f"{idle} trials in a row spent nothing (cached or "
                                        "infeasible): nothing new to try")
                    break
        except BaseException:
            # Ctrl-C (or a crash) mid-trial: the open trial is failed as interrupted, so it
            # counts for nothing and a rerun resumes at once (no waiting for its heartbeat
            # to go stale); finished trials are already in the storage
            if open_trial is not None:
                self._abandon(open_trial)
            raise
        return ran

    def _abandon(self, trial: optuna.trial.Trial) -> None:
        """Fail ``trial`` as interrupted when it was left open (never told an outcome)."""
        running = optuna.trial.TrialState.RUNNING
        try:
            if self.study._storage.get_trial(trial._trial_id).state != running:
                return
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except Exception as exc:  # the storage is gone too: its heartbeat will fail it
            log.warning("could not mark interrupted trial %d failed: %s", trial.number, exc)

    def _evaluated(self, proposal: Proposal) -> optuna.trial.FrozenTrial | None:
        """The first finished trial (complete or pruned) of the same graph."""
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        key = self.space.key(proposal.config)
        for t in self.study.get_trials(deepcopy=False, states=done):
            if t.number != proposal.number and self._graph_of(t) == key:
                return t
        return None

    def _graph_of(self, t: optuna.trial.FrozenTrial) -> str:
        found = t.user_attrs.get("graph")
        return str(found) if found else self.space.key(t.params)

    def _heartbeats(self) -> Any:
        """The study's storage when it keeps heartbeats (RDB storages opened here)."""
        storage = self.study._storage  # Optuna's own code reaches the storage the same way
        storage = getattr(storage, "_backend", storage)  # behind Optuna's cache wrapper
        ok = isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None
        return storage if ok else None

    async def _heartbeat(self, trial_id: int) -> None:
        storage = self._heartbeats()
        if storage is None:
            return
        while True:
            await asyncio.to_thread(storage.record_heartbeat, trial_id)
            await asyncio.sleep(storage.get_heartbeat_interval() or HEARTBEAT_S)

    def _fail_stale_trials(self) -> None:
        """Trials left RUNNING by a worker that died (no heartbeat within the grace period)
        become FAIL, so they stop counting against the budget; the log says which."""
        if self._heartbeats() is None:
            return
        running = optuna.trial.TrialState.RUNNING
        before = {t.number for t in self.study.get_trials(deepcopy=False, states=(running,))}
        if not before:
            return
        with warnings.catch_warnings():  # Optuna calls its heartbeat experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        after = {t.number for t in self.study.get_trials(deepcopy=False, states=(running,))}
        if before - after:
            log.warning("trials %s were left running by a worker that stopped: marked failed",
                        sorted(before - after))

    # ------------------------------------------------------------------------ results

    def front(self) -> list[FrontEntry]:
        """The best trials, each graph once, ranked with intervals (``search.ranking``): for
        one objective every trial not surely less accurate than the leader, near-ties to
        fewer tokens; for several, the Pareto front (most accurate first), each entry with
        the chance that its accuracy beats the next cheaper entry's."""
        complete = self.study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            return []
        objs = list(self.spec.objectives)

        def measured(t: optuna.trial.FrozenTrial) -> dict[str, float]:
            """Every figure the trial measured, objectives first (as told where missing)."""
            return {**dict(zip(objs, map(float, t.values), strict=True)),
                    **measured_values(t)}

        def scored(t: optuna.trial.FrozenTrial) -> Scored:
            n = t.user_attrs.get("scored")
            c = t.user_attrs.get("correct")
            acc = float(t.values[0])
            if not isinstance(n, int) or not isinstance(c, int) or n <= 0:
                n = max(1, int(t.user_attrs.get("questions", 1)))
                c = round(acc * n)
            return Scored(t.number, c, n, acc, measured(t).get("tokens", 0.0))

        # each graph once: its first complete trial
        firsts: dict[str, optuna.trial.FrozenTrial] = {}
        for t in sorted(complete, key=lambda t: t.number):
            firsts.setdefault(self._graph_of(t), t)
        trials = {t.number: t for t in firsts.values()}
        if len(objs) == 1:
            ranked = one_objective_front([scored(t) for t in trials.values()])
            picked = [(trials[s.ref], pb) for s, pb, _ in ranked]
        else:
            best = {t.number for t in self.study.best_trials}
            by_cost = sorted((t for t in trials.values() if t.number in best),
                             key=lambda t: [*t.values[1:], -t.values[0], t.number])
            sure = dict(zip((t.number for t in by_cost),
                            pareto_confidence([scored(t) for t in by_cost]), strict=True))
            picked = [(t, sure[t.number]) for t in sorted(
                by_cost, key=lambda t: [-t.values[0], *t.values[1:], t.number])]
        entries = []
        for t, confidence in picked:
            s = scored(t)
            entries.append(FrontEntry(trial=t.number, config=dict(t.params), search=measured(t),
                                      graph=self._graph_of(t), confidence=round(confidence, 4),
                                      search_ci=wilson(s.correct, s.scored)))
        return entries

    def export(self, entries: list[FrontEntry]) -> None:
        front_dir = self.out_dir / "front"
        front_dir.mkdir(exist_ok=True)
        earlier = set(front_dir.glob("[0-9][0-9]-trial*.yaml"))  # an earlier, other front
        for rank, e in enumerate(entries, start=1):
            g = self.space.graph_dict(e.config)
            g["description"] = (f"found by tts-graph search '{self.spec.name}' (trial "
                                f"{e.trial}): " + ", ".join(f"{k}={v}" for k, v in
                                                            sorted(e.config.items())))
            _rebase_model_paths(g, self.base_path.parent, front_dir)
            path = front_dir / f"{rank:02d}-trial{e.trial}.yaml"
            write_whole(path, yaml.safe_dump(g, sort_keys=False, allow_unicode=True))
            earlier.discard(path)
            e.graph_file = str(path)
        for old in earlier:  # only once the new front is whole
            old.unlink(missing_ok=True)

    async def rescore(self, entries: list[FrontEntry]) -> None:
        from ..evaluate.runner import run_items
        from ..evaluate.store import ResultStore
        from ..evaluate.summary import summarize
        from ..executor import Executor
        from .trial import objective_values

        for e in entries:
            graph = self.space.compile(e.config)
            store = ResultStore(self.out_dir / "heldout"
                                / f"trial-{e.trial:05d}-{self.space.key(e.config)[:8]}")
            store.bind({"graph_name": graph.name, "heldout": True,
                        "planned": len(self.heldout_items)}, resume=True)
            ex = Executor(graph, cache=self.cache)
            await run_items(ex, self.task.scorer, self.heldout_items, store,
                            concurrency=self.spec.concurrency,
                            threaded_scoring=self.task.scorer.name == "code")
            s = summarize(store)
            e.heldout = objective_values(s)
            e.heldout_ci = s.ci95
            store.close()

    def write_report(self, entries: list[FrontEntry]) -> Path:
        data = {"search": self.spec.name, "storage": _safe_storage(self.storage),
                "objectives": list(self.spec.objectives),
                "front": [e.__dict__ for e in entries]}
        out = self.out_dir / "front.json"
        write_whole(out, json.dumps(data, indent=2, default=str))
        return out

    def plot(self, entries: list[FrontEntry]) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        trials = self.study.get_trials(deepcopy=False,
                                       states=(optuna.trial.TrialState.COMPLETE,))
        if not trials:
            return None
        xkey = next((o for o in self.spec.objectives[1:]), "tokens")
        xs = [float(t.user_attrs.get(f"value_{xkey}", 0.0)) for t in trials]
        ys = [float(t.user_attrs.get("value_accuracy", 0.0)) * 100 for t in trials]
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        ax.scatter(xs, ys, s=14, alpha=0.5, label="trials (search questions)")
        fx = [e.search.get(xkey, 0.0) for e in entries]
        fy = [e.search["accuracy"] * 100 for e in entries]
        order = sorted(range(len(fx)), key=lambda i: fx[i])
        label = "Pareto front" if len(self.spec.objectives) > 1 else "best"
        if label == "best" and len(entries) > 1:
            label = "best (tied)"  # one objective: every trial at the best accuracy
        ax.plot([fx[i] for i in order], [fy[i] for i in order], "o--", color="C3",
                label=label)
        if any(e.heldout for e in entries):
            hx = [e.heldout.get(xkey, 0.0) for e in entries]
            hy = [e.heldout.get("accuracy", 0.0) * 100 for e in entries]
            ax.scatter(hx, hy, marker="x", color="C2", label="front, held-out")
        ax.set_xlabel(f"{xkey} per question")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"search '{self.spec.name}' — {self.task.name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out = self.out_dir / "search.png"
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png")
        finally:
            plt.close(fig)
        write_whole(out, buf.getvalue())  # a plot is never left half-written
        return out


def _replayed(earlier: optuna.trial.FrozenTrial) -> TrialResult:
    """The outcome of ``earlier`` told again for a repeated proposal (nothing spent)."""
    values = measured_values(earlier)
    questions = int(earlier.user_attrs.get("questions", 0))
    reason = f"repeat of trial {earlier.number}, not run again"
    if earlier.state == optuna.trial.TrialState.COMPLETE:
        return TrialResult("complete", values=values, questions=questions, reason=reason)
    return TrialResult("pruned", values=values, questions=questions, reason=reason)


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts against the trial budget: not one waiting in the queue, opened
    over the budget, a repeat of an evaluated configuration, interrupted (Ctrl-C), or failed
    as stale (a dead worker's: failed without an outcome told)."""
    if (t.state == optuna.trial.TrialState.WAITING or t.user_attrs.get("over_budget")
            or "repeat_of" in t.user_attrs or t.user_attrs.get("interrupted")):
        return False
    return not (t.state == optuna.trial.TrialState.FAIL and "state" not in t.user_attrs)


def _task_path(name: str, search_dir: Path) -> str:
    """A task file is found next to the search file (like the base graph), else as given."""
    from ..evaluate.tasks import task_names

    if (name.partition(":")[0] in task_names() or name.startswith("hf:")
            or Path(name).is_absolute()):
        return name
    beside = search_dir / name
    return str(beside) if beside.exists() else name


def _rebase_model_paths(g: dict[str, Any], base_dir: Path, out_dir: Path) -> None:
    """Local model paths in the base graph are relative to it; keep them valid from DIR."""

    for m in (g.get("models") or {}).values():
        opts = m.get("options") if isinstance(m, dict) else None
        if isinstance(opts, dict) and isinstance(opts.get("path"), str):
            p = Path(opts["path"])
            if not p.is_absolute():
                opts["path"] = os.path.relpath(base_dir / p, out_dir)


#: the parts of a search that its trials' outcomes depend on, by their key in the file
#: (the budget, the searcher and the concurrency may change between runs of one study)
SPACE_PARTS = ("base", "task", "choices", "objectives", "constraints", "pruning")
SPACE_ATTR = "search_space"


def _space_digests(spec: SearchSpec, base: dict[str, Any]) -> dict[str, str]:
    """A digest of each part of ``SPACE_PARTS``; the base graph's by its content (not its
    name, description or file name)."""
    import hashlib

    graph = {k: v for k, v in base.items() if k not in ("name", "description")}
    parts: dict[str, Any] = {"base": graph}
    for name in SPACE_PARTS[1:]:
        value = getattr(spec, name)
        parts[name] = ([c.model_dump(by_alias=True) for c in value] if name == "choices"
                       else value if isinstance(value, list) else value.model_dump())
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode())
            .hexdigest()[:16] for k, v in parts.items()}


def _changed_space(study: optuna.Study, digests: dict[str, str]) -> list[str]:
    """The parts of the search that differ from those the study was made with (recorded
    on the study by its first run; a study from before they were recorded is taken as is)."""
    recorded = study.user_attrs.get(SPACE_ATTR)
    if not isinstance(recorded, dict):
        study.set_user_attr(SPACE_ATTR, digests)
        return []
    return [k for k in SPACE_PARTS if k in recorded and recorded[k] != digests.get(k)]


def _make_out_dir(out: Path) -> None:
    """The output directory, made and known writable before any trial runs, and with room
    for what the search writes at its end (a ``front`` that is a file would fail only then,
    after every trial was paid for)."""
    if out.exists() and not out.is_dir():
        raise TTSGraphError(f"output directory {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TTSGraphError(f"output directory {out}: cannot write: "
                            f"{exc.strerror or exc}") from None
    for name in ("front", "trials", "heldout"):
        if (out / name).exists() and not (out / name).is_dir():
            raise TTSGraphError(f"output directory {out}: {name} is not a directory: "
                                "move it away, or give another --out")
    for name in ("front.json", "search.png"):
        if (out / name).is_dir():
            raise TTSGraphError(f"output directory {out}: {name} is a directory: "
                                "move it away, or give another --out")


def _check_storage(url: str) -> None:
    """A storage URL that cannot work, said in one line before anything is made (drivers
    report these in several lines, or an SQLite file in a missing directory as 'unable to
    open database file')."""
    safe = _safe_storage(url)
    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise TTSGraphError(f"storage {safe!r}: an SQLite URL is sqlite:///FILE "
                            "(sqlite:////ABSOLUTE/FILE)")
    if "://" not in url:
        raise TTSGraphError(f"storage {safe!r}: not a storage URL (sqlite:///FILE or "
                            "postgresql://USER@HOST/DB)")
    if not url.startswith("sqlite:"):
        return
    file = url.removeprefix("sqlite:///").partition("?")[0]
    if not file or file == ":memory:":
        return
    path = Path(file)
    if path.exists() and not path.is_file():
        raise TTSGraphError(f"storage {safe}: {path} is not a file")
    parent = path.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise TTSGraphError(f"storage {safe}: directory {parent} {why}")


def _safe_storage(url: str) -> str:
    """Storage URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def run_search_sync(session: SearchSession, on_trial: Any = None) -> int:
    return asyncio.run(session.run(on_trial))
