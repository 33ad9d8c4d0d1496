"""Setting up an evaluation run: the graph, the task and its split, the store and the cache —
fresh, or resumed from what a run directory recorded."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.registry import backend_names
from ..cache import ResponseCache
from ..collector import freeze_setup
from ..compile import CompiledGraph, compile_graph
from ..errors import TTSGraphError
from ..executor import Executor
from ..spec import loads_graph
from ..yamlpos import read_source
from .runner import RunIdentity, graph_digest, items_digest
from .store import ResultStore


@dataclass
class TaskArgs:
    task: str
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    scorer: str | None = None
    split: str = "all"
    seed: int = 0
    limit: int | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass
class RunPlan:
    store: ResultStore
    graph: CompiledGraph
    task: Any
    items: list[Any]
    executor: Executor
    args: TaskArgs
    resumed: bool = False
    already_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_run_dir(graph_name: str, task: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(task).stem)
    return Path("runs") / f"{graph_name}-{safe}-{stamp}"


def _load_graph_text(path: Path) -> str:
    return read_source(path)


def _compile(text: str, source: str) -> CompiledGraph:
    doc = loads_graph(text, source=source)
    doc.base_dir = Path(source).parent
    return compile_graph(doc, backends=backend_names())


def _check_workers(graph: CompiledGraph, workers: int, share: int = 1) -> None:
    """More workers (times the processes sharing the limits: ``--share-limits``) than a
    model's cap: refused at the cap's line of the graph file."""
    each = f"--workers {workers}" + (f" on each of --share-limits {share} processes"
                                     if share > 1 else "")
    for name in graph.used_models():
        cap = graph.spec.models[name].max_concurrency
        if cap is not None and workers * share > cap:
            raise graph.doc.error(
                ("models", name, "max_concurrency"),
                f"{cap} calls at a time, and each of {each} takes at least one "
                f"({workers * share}); " + (f"use --workers {cap // share} or fewer"
                                            if cap >= share else
                                            f"at most {cap} processes can share it")
                + " (or raise the cap)")


def plan_run(
    *,
    graph_path: Path | None,
    args: TaskArgs | None,
    out: Path | None,
    resume: Path | None,
    cache: Path | None,
    use_cache: bool = True,
    accept_weak_sandbox: bool = False,
    workers: int = 1,
    share: int = 1,
) -> RunPlan:
    """A fresh run (``graph_path`` + ``args``) or a resumed one (``resume``). A code-scored
    task is refused, before the run is recorded, where the sandbox has only its guard mode
    and ``accept_weak_sandbox`` is not given (``scorers.code_sandbox``); so are more
    ``workers`` on this machine than a model's ``max_concurrency`` (each worker takes at
    least one call at a time of it: together they would exceed it), counting the ``share``
    processes this one shares the limits with (``--share-limits``)."""
    from .scorers import code_sandbox
    from .tasks import absolute_task, load_task, split_items

    store: ResultStore | None = None
    if resume is not None:
        if not (resume / "results.sqlite").exists():
            raise TTSGraphError(f"--resume {resume}: no run there (no results.sqlite)")
        store = ResultStore(resume)
        meta = store.meta()
        if "graph_text" not in meta or "task_args" not in meta:
            raise TTSGraphError(f"--resume {resume}: the run did not record its graph/task")
        text, source = meta["graph_text"], meta["graph_path"]
        args = TaskArgs(**json.loads(meta["task_args"]))
        run_dir = resume
    else:
        assert graph_path is not None and args is not None
        text, source = _load_graph_text(graph_path), str(graph_path)
        run_dir = out or default_run_dir(Path(graph_path).stem, args.task)
    # everything that can be wrong with the input is found before a fresh run directory is
    # made: a failed start leaves nothing behind that would block the corrected command
    graph = _compile(text, source)
    _check_workers(graph, workers, share)
    task = load_task(args.task, question_field=args.question_field,
                     answer_field=args.answer_field, id_field=args.id_field,
                     scorer=args.scorer)
    items = split_items(task.items, args.split, seed=args.seed, limit=args.limit)  # type: ignore[arg-type]
    if not items:
        raise TTSGraphError(f"task {args.task}: no questions in split '{args.split}'")
    sandbox = code_sandbox(task.scorer, accept_weak=accept_weak_sandbox)
    response_cache = ResponseCache(cache) if use_cache and cache is not None else None
    identity = RunIdentity(
        graph_name=graph.name, graph_sha=graph_digest(text), task=task.name,
        scorer=task.scorer.name, split=args.split, seed=args.seed, limit=args.limit,
        planned=len(items), items_sha=items_digest(items),
    )
    recorded = store.identity() if store is not None else None
    if recorded is not None and "items_sha" not in recorded:  # a run from before it was kept
        identity = dataclasses.replace(identity, items_sha=None)
    made_dir = not run_dir.exists()
    made = [n for n in ("results.sqlite", "cache.sqlite") if not (run_dir / n).exists()]
    fresh = store is None and not (run_dir / "results.sqlite").exists()
    if store is None:
        store = ResultStore(run_dir)
    try:
        store.bind(identity.to_dict(), resume=resume is not None)
        store.put("graph_text", text)
        if resume is None:  # absolute: a resume from another directory finds them again
            # (the graph's own relative paths, a model file say, are read from its directory)
            store.put("graph_path", str(Path(source).resolve()))
            store.put("task_args", dataclasses.replace(args, task=absolute_task(args.task))
                      .to_json())
        if use_cache and response_cache is None:
            response_cache = ResponseCache(run_dir / "cache.sqlite")
        executor = Executor(graph, cache=response_cache)
        executor.bindings()  # configuration problems surface before any question runs
    except TTSGraphError:
        if fresh:  # nothing ran: what was made for it would only block a retry
            store.close()
            if made_dir:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for name in made:
                    for suffix in ("", "-wal", "-shm"):
                        (run_dir / (name + suffix)).unlink(missing_ok=True)
        raise
    freeze_setup()
    return RunPlan(store=store, graph=graph, task=task, items=items, executor=executor,
                   args=args, resumed=resume is not None, already_done=len(store.done_ids()),
                   extra={"sandbox": sandbox} if sandbox else {})
