"""The search loop: ask → evaluate → tell until the trial (or spending) budget is used, shared
through the Optuna study by every worker on the same storage; then the Pareto front, exported
as runnable graphs and re-scored on the held-out questions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..cache import ResponseCache
from ..errors import GraphErrors, TTSGraphError
from ..spec import load_graph
from ..yamlpos import load_yaml_file
from .base import Proposal, Searcher
from .registry import create_searcher
from .space import Space
from .spec import SearchSpec, load_search
from .trial import TrialResult, TrialRunner


@dataclass
class FrontEntry:
    trial: int
    config: dict[str, Any]
    search: dict[str, float]
    heldout: dict[str, float] = field(default_factory=dict)
    heldout_ci: tuple[float, float] | None = None
    graph_file: str = ""


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
                 use_cache: bool = True) -> None:
        from ..evaluate.tasks import load_task, split_items

        self.path = Path(path)
        self.spec, _ = load_search(self.path)
        spec: SearchSpec = self.spec
        base_path = (self.path.parent / spec.base).resolve()
        try:
            load_graph(base_path)  # the base graph must be valid on its own
        except GraphErrors:
            raise
        base, _lines = load_yaml_file(base_path)
        self.base_path = base_path
        self.space = Space(spec, base, source=str(base_path))
        self.out_dir = Path(out_dir or Path("runs") / f"search-{spec.name}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.storage = storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"
        t = spec.task
        self.task = load_task(t.name, question_field=t.question_field,
                              answer_field=t.answer_field, id_field=t.id_field,
                              scorer=t.scorer)
        self.search_items = split_items(self.task.items, "search", seed=t.seed,
                                        limit=t.search_limit)
        self.heldout_items = split_items(self.task.items, "test", seed=t.seed,
                                         limit=t.heldout_limit)
        if not self.search_items:
            raise TTSGraphError(f"task {t.name}: no search questions")
        self.cache = ResponseCache(self.out_dir / "cache.sqlite") if use_cache else None
        self.searcher: Searcher = create_searcher(
            spec.searcher, self.space, study_name=spec.name, storage=self.storage,
            objectives=list(spec.objectives), pruning=spec.pruning, worker=worker,
            base_models=dict(base.get("models") or {}), base_dir=base_path.parent)
        self.study = self.searcher.study
        self.runner = TrialRunner(self.space, self.task.scorer, self.search_items,
                                  out_dir=self.out_dir, cache=self.cache,
                                  concurrency=spec.concurrency)

    # ------------------------------------------------------------------------ budget

    def spent(self) -> tuple[int, int, float]:
        """(trials started in the study by any worker, live tokens, billed USD)."""
        trials = self.study.get_trials(deepcopy=False)
        tokens = sum(int(t.user_attrs.get("live_tokens", 0)) for t in trials)
        usd = sum(float(t.user_attrs.get("billed_usd", 0.0)) for t in trials)
        return len(trials), tokens, usd

    def budget_left(self) -> bool:
        b = self.spec.budget
        n, tokens, usd = self.spent()
        limit = b.trials
        if self.spec.searcher.name == "grid":
            size = self.space.size(int(self.spec.searcher.options.get("levels", 5)))
            limit = min(limit, size) if limit else size
        if limit is not None and n >= limit:
            return False
        if b.max_tokens is not None and tokens >= b.max_tokens:
            return False
        return not (b.max_cost_usd is not None and usd >= b.max_cost_usd)

    # --------------------------------------------------------------------------- loop

    async def run(self, on_trial: Callable[[Proposal, TrialResult], None] | None = None
                  ) -> int:
        ran = 0
        while self.budget_left():
            proposal = self.searcher.ask()
            result = await self.runner.run(
                proposal.config, proposal.number,
                lambda q, v, s, p=proposal: self.searcher.should_prune(p, q, v, s))
            self.searcher.tell(proposal, result)
            ran += 1
            if on_trial is not None:
                on_trial(proposal, result)
        return ran

    # ------------------------------------------------------------------------ results

    def front(self) -> list[FrontEntry]:
        complete = [t for t in self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if not complete:
            return []
        best = self.study.best_trials  # the Pareto front (or the best, for one objective)
        objs = list(self.spec.objectives)
        entries = []
        seen: set[str] = set()
        for t in sorted(best, key=lambda t: [-t.values[0], *t.values[1:], t.number]):
            key = json.dumps(t.params, sort_keys=True, default=str)
            if key in seen:  # the same configuration proposed twice: one entry
                continue
            seen.add(key)
            entries.append(FrontEntry(
                trial=t.number, config=dict(t.params),
                search={k: float(t.user_attrs.get(f"value_{k}", v))
                        for k, v in zip(objs, t.values, strict=True)}))
        return entries

    def export(self, entries: list[FrontEntry]) -> None:
        front_dir = self.out_dir / "front"
        front_dir.mkdir(exist_ok=True)
        for rank, e in enumerate(entries, start=1):
            g = self.space.graph_dict(e.config)
            g["description"] = (f"found by tts-graph search '{self.spec.name}' (trial "
                                f"{e.trial}): " + ", ".join(f"{k}={v}" for k, v in
                                                            sorted(e.config.items())))
            _rebase_model_paths(g, self.base_path.parent, front_dir)
            path = front_dir / f"{rank:02d}-trial{e.trial}.yaml"
            path.write_text(yaml.safe_dump(g, sort_keys=False, allow_unicode=True))
            e.graph_file = str(path)

    async def rescore(self, entries: list[FrontEntry]) -> None:
        from ..evaluate.runner import run_items
        from ..evaluate.store import ResultStore
        from ..evaluate.summary import summarize
        from ..executor import Executor
        from .trial import objective_values

        for e in entries:
            graph = self.space.compile(e.config)
            store = ResultStore(self.out_dir / "heldout" / f"trial-{e.trial:05d}")
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
        out.write_text(json.dumps(data, indent=2, default=str))
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
        ax.plot([fx[i] for i in order], [fy[i] for i in order], "o--", color="C3",
                label="Pareto front")
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
        fig.savefig(out)
        plt.close(fig)
        return out


def _rebase_model_paths(g: dict[str, Any], base_dir: Path, out_dir: Path) -> None:
    """Local model paths in the base graph are relative to it; keep them valid from DIR."""
    import os

    for m in (g.get("models") or {}).values():
        opts = m.get("options") if isinstance(m, dict) else None
        if isinstance(opts, dict) and isinstance(opts.get("path"), str):
            p = Path(opts["path"])
            if not p.is_absolute():
                opts["path"] = os.path.relpath(base_dir / p, out_dir)


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
