"""``tts-graph eval`` and ``tts-graph compare``: score graphs on a task, and compare finished
runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import GraphErrors, TTSGraphError
from .common import _fail, _traced, err, out
from .files import check_output_dir, check_output_file, check_plot_file

if TYPE_CHECKING:
    from ..evaluate.store import Tally


def eval_(
    graphs: Annotated[list[Path] | None, typer.Argument(help="graph file(s)")] = None,
    task: Annotated[str | None, typer.Option(
        help="gsm8k | aime2025 | gpqa_diamond | humaneval | easy | FILE.jsonl/.csv | hf:DIR "
        "| sim:N (simulated questions, for backend: sim)")
    ] = None,
    question_field: Annotated[str | None, typer.Option(help="question field of a file")] = None,
    answer_field: Annotated[str | None, typer.Option(help="answer field of a file")] = None,
    id_field: Annotated[str | None, typer.Option(help="id field of a file")] = None,
    scorer: Annotated[str | None, typer.Option(
        help="numeric | math | choice | exact | normalized | code")] = None,
    split: Annotated[str, typer.Option(help="search | test | all")] = "all",
    limit: Annotated[int | None, typer.Option(min=1, help="first N questions of the split")
                     ] = None,
    seed: Annotated[int, typer.Option(help="split/shuffle seed")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="questions at once")] = 8,
    workers: Annotated[int, typer.Option(
        min=1, help="processes sharing the run (each runs --concurrency questions at once)")
    ] = 1,
    out: Annotated[Path | None, typer.Option(help="run directory (several graphs: parent)")
                   ] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")
                      ] = None,
    cache: Annotated[Path | None, typer.Option(help="response cache (default: RUN/cache.sqlite)")
                     ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="send every call")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print summaries as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="accuracy-vs-cost PNG (several graphs)")
                    ] = None,
    trace: Annotated[Path | None, typer.Option(
        help="append one JSONL line per call to FILE (summarise: tts-graph trace FILE)")
    ] = None,
    accept_weak_sandbox: Annotated[bool, typer.Option(
        "--accept-weak-sandbox",
        help="--scorer code: run even where the sandbox has only its guard mode")] = False,
    storage: Annotated[str | None, typer.Option(
        help="postgresql://USER:PW@HOST/DB: workers on several machines share the run's "
        "claims (start the same eval on each; the password is never written)")] = None,
    share_limits: Annotated[int, typer.Option(
        min=1, help="this eval is one of N calling the same models at once (machines joined "
        "through --storage): it keeps to an N-th of each model's max_concurrency, rpm and "
        "tpm, its workers dividing that")] = 1,
) -> None:
    """Evaluate GRAPH(s) on a task; every result is stored at once, --resume continues."""
    from ..evaluate.session import TaskArgs, plan_run
    from ..evaluate.store import lock_run
    from ..limits import set_share

    if split not in ("search", "test", "all"):
        raise _fail(["--split: must be search, test or all"])
    if resume is None and (not graphs or task is None):
        raise _fail(["give GRAPH... and --task, or --resume RUN_DIR"])
    if resume is not None and graphs:
        raise _fail(["--resume continues a recorded run: give no GRAPH with it"])
    if resume is not None:  # the run recorded these: a different value would be ignored
        given = [name for name, value, default in (
            ("--task", task, None), ("--question-field", question_field, None),
            ("--answer-field", answer_field, None), ("--id-field", id_field, None),
            ("--scorer", scorer, None), ("--split", split, "all"), ("--limit", limit, None),
            ("--seed", seed, 0), ("--out", out, None)) if value != default]
        if given:
            raise _fail([f"--resume continues the run as it was recorded: drop "
                         f"{', '.join(given)}"])
    _check_outputs(graphs or [], task, out=out, cache=cache, trace=trace, plot=plot)
    if storage is not None:  # a bad or unreachable database: before any run is recorded
        from ..evaluate.pgboard import check_storage

        try:
            check_storage(storage)
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
    set_share(share_limits)  # before any model is bound
    args = TaskArgs(task=task or "", question_field=question_field, answer_field=answer_field,
                    id_field=id_field, scorer=scorer, split=split, seed=seed, limit=limit)
    targets: list[tuple[Path | None, Path | None]] = (
        [(None, resume)] if resume is not None else
        [(g, (out / g.stem) if out is not None and len(graphs or []) > 1 else out)
         for g in graphs or []]
    )
    summaries = []
    infra = left = 0
    for n, (graph_path, run_dir) in enumerate(targets):
        try:
            plan = plan_run(graph_path=graph_path, args=args if resume is None else None,
                            out=run_dir, resume=resume if graph_path is None else None,
                            cache=cache, use_cache=not no_cache,
                            accept_weak_sandbox=accept_weak_sandbox, workers=workers,
                            share=share_limits)
            plan.extra["lock"] = lock_run(plan.store.run_dir)
        except GraphErrors as exc:
            raise _fail(exc.lines()) from None
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
        plan.executor = _traced(plan.executor, trace, plan.graph)
        try:
            with _sigterm_interrupts():
                if workers > 1 or storage is not None:
                    summary, unrun = _run_eval_workers(
                        plan, workers, concurrency, quiet=as_json, cache=cache,
                        use_cache=not no_cache, trace=trace, storage=storage,
                        accept_weak_sandbox=accept_weak_sandbox, share=share_limits)
                    left += unrun
                else:
                    summary = _run_eval(plan, concurrency, quiet=as_json)
        except KeyboardInterrupt as exc:  # Ctrl-C: every finished question is stored already
            raise _fail([_interrupted(plan, [g for g, _ in targets[n + 1:] if g])],
                        code=143 if isinstance(exc, _Terminated) else 130) from None
        summary.sandbox = plan.extra.get("sandbox")
        summaries.append(summary)
        infra += summary.infra_errors
        if not as_json:
            _print_summary(summary)
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries] if len(summaries) > 1
                         else summaries[0].to_dict(), indent=2))
    if len(summaries) > 1:
        if not as_json:
            _compare_table(summaries)
        from ..evaluate.plot import accuracy_vs_cost

        target = plot or ((out or Path("runs")) / "compare.png")
        try:
            path = accuracy_vs_cost(summaries, target)
        except (OSError, ValueError) as exc:  # the runs are stored: only the plot is missing
            raise _fail([f"plot {target}: cannot write: {_why(exc)}"], code=1) from None
        if not as_json:
            err.print(f"plot: {path}", markup=False, soft_wrap=True)
    if left:
        err.print(f"{left} questions were not run (workers ended early); --resume runs them",
                  markup=False, soft_wrap=True)
    if infra:
        err.print(f"{infra} questions ended in infrastructure errors (not scored); "
                  "--resume runs them again", markup=False, soft_wrap=True)
    if infra or left:
        raise typer.Exit(1)


def _check_outputs(graphs: list[Path], task: str | None, *, out: Path | None,
                   cache: Path | None, trace: Path | None, plot: Path | None) -> None:
    """What eval will write, checked before any run is recorded: no file the run writes may
    be one it reads, and several graphs need run directories of their own."""
    inputs: list[Path | None] = [*graphs, Path(task) if task else None]
    if out is not None:
        check_output_dir(out, "--out")
        for source in inputs:
            if source is not None and source.exists() and source.resolve() == out.resolve():
                raise _fail([f"--out {out}: is also an input ({source}): give another "
                             "directory"])
    if cache is not None:
        check_output_file(cache, "--cache", inputs, make_parents=True)
    if trace is not None:
        check_output_file(trace, "--trace", [*inputs, cache])
    if plot is not None:
        check_plot_file(plot, "--plot", [*inputs, cache, trace])
    stems = [g.stem for g in graphs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if len(graphs) > 1 and twice:  # their run directories (OUT/STEM) would collide
        raise _fail([f"several graphs named {', '.join(twice)}: each graph's run directory "
                     "is named after its file; rename or copy one"])


class _Terminated(KeyboardInterrupt):
    """SIGTERM while an eval runs: ended as a Ctrl-C is (workers stopped, one line saying
    what is stored), with exit status 143 (128 + SIGTERM)."""


@contextlib.contextmanager
def _sigterm_interrupts():  # type: ignore[no-untyped-def]
    """SIGTERM (``kill``, ``timeout``, a job scheduler) interrupts the run like Ctrl-C: by
    default it would end the eval at once, its workers left running on their own."""
    import signal

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated()

    try:
        before = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (eval called in-process): left as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _interrupted(plan, not_started: list[Path]) -> str:  # type: ignore[no-untyped-def]
    """The one line a Ctrl-C leaves: what is stored, and the command that goes on."""
    import shlex

    run_dir = plan.store.run_dir
    done = len(plan.store.done_ids())
    rest = (f"; not started: {', '.join(str(g) for g in not_started)}"
            if not_started else "")
    return (f"interrupted: {done} of {len(plan.items)} questions done and stored in "
            f"{run_dir}; continue with: tts-graph eval --resume {shlex.quote(str(run_dir))}"
            + rest)


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


@contextlib.contextmanager
def _eval_progress(plan, quiet: bool, auto_refresh: bool = True):  # type: ignore[no-untyped-def]
    """The progress bar of an eval run (off with --json or when stderr is not a terminal).
    ``auto_refresh=False``: no refresh thread (workers are forked only from a process with
    no other thread); the bar is redrawn on each update."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  disable=quiet or not err.is_terminal, auto_refresh=auto_refresh
                  ) as progress:
        yield progress, progress.add_task(plan.graph.name, total=len(plan.items),
                                          completed=plan.already_done, info="")


def _run_eval(plan, concurrency: int, quiet: bool):  # type: ignore[no-untyped-def]
    from ..evaluate.runner import run_items
    from ..evaluate.summary import summarize

    tally = plan.store.tally()  # a resumed run's figures include its earlier sessions'
    with _eval_progress(plan, quiet) as (progress, bar):

        def on_row(row) -> None:  # type: ignore[no-untyped-def]
            tally.add(row)
            progress.update(bar, advance=1, info=tally.line())

        try:
            asyncio.run(run_items(plan.executor, plan.task.scorer, plan.items, plan.store,
                                  concurrency=concurrency, on_row=on_row,
                                  threaded_scoring=plan.task.scorer.name == "code"))
        except TTSGraphError as exc:
            raise _fail([str(exc)], code=1) from None
    return summarize(plan.store)


def workers_line(tally: Tally, workers: dict[str, tuple[int, int]]) -> str:
    """The progress bar's figures with workers: what one process shows (accuracy, cost,
    tokens, errors: read from the results the workers wrote), then each worker's count."""
    return "  ".join([tally.line(), *(f"{w} {d}" + (f" (+{t} taken over)" if t else "")
                                      for w, (d, t) in workers.items())])


def _run_eval_workers(plan, workers: int, concurrency: int, *, quiet: bool,  # type: ignore[no-untyped-def]
                      cache: Path | None, use_cache: bool, trace: Path | None,
                      storage: str | None = None, accept_weak_sandbox: bool = False,
                      share: int = 1):
    from ..evaluate.summary import summarize
    from ..evaluate.workers import run_workers

    total = len(plan.items)
    with _eval_progress(plan, quiet, auto_refresh=False) as (progress, bar):

        def on_progress(p) -> None:  # type: ignore[no-untyped-def]
            progress.update(bar, completed=total - p["left"], info=workers_line(
                plan.store.tally(), p["workers"]), refresh=True)

        try:
            report = run_workers(plan, workers, concurrency, cache=cache, use_cache=use_cache,
                                 trace=trace, on_progress=on_progress, storage=storage,
                                 accept_weak_sandbox=accept_weak_sandbox, share=share)
        except TTSGraphError as exc:  # the database failed mid-run (checked before it)
            raise _fail([str(exc)], code=1) from None
    if report.failed == report.started and not report.progress.get("workers"):
        raise _fail(report.problems, code=1)  # no worker got going: nothing to summarise
    for line in report.problems:
        err.print(line, markup=False, soft_wrap=True)
    return summarize(plan.store), int(report.progress.get("left", 0))


#: reason codes of a budget report's steps, as the summary names them
WHY = {"planned_narrower": "planned narrower", "planned_late": "planned late",
       "widened": "widened in waves", "cut_draws": "drew with max_tokens cut",
       "stopped_short": "stopped short", "narrowed_at_send": "narrowed when sent",
       "skipped": "skipped", "dropped": "left samples out of later prompts",
       "inputs_trimmed": "quoted fewer inputs"}


def budget_lines(b: dict[str, Any]) -> list[str]:
    """An eval summary's budget figures: how the granted budget was used, and why steps
    drew fewer samples than they wanted (queries per reason)."""
    late = b.get("planned_late", 0)
    short = b.get("share_spent_mean_where_short")
    lines = [
        f"  budget: {b['share_spent_mean']:.0%} spent on average (min "
        f"{b['share_spent_min']:.0%}"
        + (f"; {short:.0%} where a step wanted more" if short is not None else "")
        + f"), peak committed {b['share_committed_peak_max']:.0%}, {b['overruns']} "
        "overruns",
        f"  plan fits {b['plan_fits']}/{b['queries']} (output reached "
        f"{b['output_reached_where_plan_fits']})"
        + (f", planned late {late} (output reached "
           f"{b.get('output_reached_where_planned_late', 0)})" if late else "")
        + f", output reached {b.get('output_reached', '?')}/{b['queries']}; samples "
        f"{b['samples_drawn']}/{b['samples_wanted']}"
        + (f", {b['cut_draws']} with max_tokens cut" if b.get("cut_draws") else "")
        + (f", {b['dropped']} left out of later prompts" if b.get("dropped") else ""),
    ]
    for sid, counts in (b.get("why") or {}).items():
        if counts:
            lines.append(f"  step {sid}: " + ", ".join(
                f"{WHY.get(code, code)} {n}" for code, n in counts.items()))
    if not b.get("why") and b["narrowed"]:
        lines.append("  narrowed: " + ", ".join(f"{k} {n}" for k, n in b["narrowed"].items()))
    return lines


def _print_summary(s) -> None:  # type: ignore[no-untyped-def]
    lo, hi = s.ci95
    acc = (f"accuracy {s.accuracy:.1%} (95% CI {lo:.1%}–{hi:.1%}, {s.correct}/{s.scored})"
           if s.scored else "no accuracy (no question scored)")  # not 0% of nothing
    out.print(f"[bold]{s.graph}[/bold] on {s.task}: {acc}"
              + (f", {s.infra_errors} infrastructure errors" if s.infra_errors else ""),
              soft_wrap=True)
    out.print(f"  tokens {s.prompt_tokens}+{s.completion_tokens} "
              f"({s.tokens_per_question:.0f}/question), cost ${s.cost_usd:.6f} "
              f"(billed ${s.billed_usd:.6f}), FLOPs {s.flops:.3g}, calls {s.calls} "
              f"({s.cached_calls} cached), latency p50/p90/p99 "
              f"{s.latency_p50:.2f}/{s.latency_p90:.2f}/{s.latency_p99:.2f} s", markup=False,
              soft_wrap=True)
    b = getattr(s, "budget", None)
    if b:
        for line in budget_lines(b):
            out.print(line, markup=False, soft_wrap=True)
    t = Table(title_justify="left")
    for col in ("by node / model", "calls", "samples", "tokens", "cost $", "FLOPs"):
        t.add_column(col, justify="left" if col.startswith("by") else "right")
    for prefix, table in (("node ", s.by_node), ("model ", s.by_model)):
        for name, u in table.items():
            t.add_row(prefix + name, f"{u['calls']:.0f}", f"{u['samples']:.0f}",
                      f"{u['prompt_tokens'] + u['completion_tokens']:.0f}",
                      f"{u['cost_usd']:.6f}", f"{u['flops']:.3g}")
    out.print(t)
    if s.sandbox:
        out.print(f"  code sandbox: {s.sandbox} mode", markup=False, soft_wrap=True)
    out.print(f"  results: {s.run_dir}", markup=False, soft_wrap=True)


#: what a run's questions and judging were: runs that differ in one are not comparable
_SAME = ("task", "scorer", "split", "seed", "limit")


def compare_notes(summaries, golds=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Why the rows of a comparison may not be comparable: unfinished runs (their accuracy
    is over the questions done so far), runs on other questions or judged otherwise, and
    (``golds``: each run's {item id: gold answer}) finished runs of the same task whose
    questions or gold answers differ (a task file edited, or another file of that name)."""
    notes = []
    for s in summaries:
        if not s.finished:
            notes.append(f"{s.run_dir}: unfinished, {s.scored} of {s.planned} questions "
                         "scored: its accuracy is over those; --resume finishes it")
    differ = [k for k in _SAME if len({getattr(s, k) for s in summaries}) > 1]
    if differ:
        notes.append("the runs differ in " + ", ".join(differ) + ": their accuracies are "
                     "over other questions or judged otherwise")
    done = [g for s, g in zip(summaries, golds or [], strict=False) if s.finished]
    if not differ and len(done) > 1:
        common = set(done[0]).intersection(*done[1:])
        if any(len(g) != len(common) for g in done):
            notes.append(f"the runs answered other questions ({len(common)} in common): "
                         "their task files differ")
        changed = sum(len({g[i] for g in done}) > 1 for i in common)
        if changed:
            notes.append(f"the gold answers differ on {changed} of the questions the runs "
                         "share: their task files differ")
    return notes


def _compare_table(summaries, golds=None) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="comparison", title_justify="left")
    for col in ("graph", "task", "scorer", "scored", "accuracy", "95% CI", "tokens/q",
                "cost/q $", "p50 s", "infra errors", "run"):
        t.add_column(col, justify="left" if col in ("graph", "task", "scorer", "run")
                     else "right")
    for s in summaries:
        scored = f"{s.scored}" if s.finished else f"{s.scored}/{s.planned}"
        acc, ci = ((f"{s.accuracy:.1%}", f"{s.ci95[0]:.1%}–{s.ci95[1]:.1%}") if s.scored
                   else ("–", "–"))  # no scored question: no accuracy, not 0%
        t.add_row(s.graph, s.task, s.scorer or "?", scored, acc, ci,
                  f"{s.tokens_per_question:.0f}", f"{s.cost_per_question:.6f}",
                  f"{s.latency_p50:.2f}", str(s.infra_errors), s.run_dir)
    out.print(t)
    for line in compare_notes(summaries, golds):
        err.print(f"note: {line}", markup=False, soft_wrap=True)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    plot: Annotated[Path, typer.Option(help="accuracy-vs-cost PNG")] = Path("compare.png"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare finished runs side by side and plot accuracy against cost."""
    from ..evaluate.plot import accuracy_vs_cost
    from ..evaluate.store import ResultStore
    from ..evaluate.summary import gold_answers, summarize

    check_plot_file(plot, "--plot", [r / "results.sqlite" for r in runs])
    summaries, golds = [], []
    for run_dir in runs:
        if not (run_dir / "results.sqlite").exists():
            raise _fail([f"{run_dir}: not a run directory (no results.sqlite)"])
        try:
            store = ResultStore(run_dir)
            if store.identity() is None:
                raise _fail([f"{run_dir}: no run recorded in results.sqlite"])
            summaries.append(summarize(store))
            golds.append(gold_answers(store))
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
    try:
        path = accuracy_vs_cost(summaries, plot)
    except (OSError, ValueError) as exc:
        raise _fail([f"--plot {plot}: cannot write: {_why(exc)}"], code=1) from None
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        _compare_table(summaries, golds)
        out.print(f"plot: {path}", markup=False, soft_wrap=True)
