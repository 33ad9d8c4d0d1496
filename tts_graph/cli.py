"""The ``tts-graph`` command. Bad input exits 2 with one line per problem; an infrastructure
failure exits 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .errors import GraphErrors, TTSGraphError

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts fast
    from .compile import CompiledGraph

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Run and inspect test-time-scaling collaboration graphs.")
out = Console()
err = Console(stderr=True)


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _compile(path: Path):  # type: ignore[no-untyped-def]
    from .backends.registry import backend_names
    from .compile import compile_graph
    from .spec import load_graph

    try:
        return compile_graph(load_graph(path), backends=backend_names())
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None


def _read_questions(path: Path, field: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    questions: list[str] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail([f"{path}:{i}: invalid JSON: {exc.msg}"]) from None
        if isinstance(item, str):
            questions.append(item)
        elif isinstance(item, dict) and isinstance(item.get(field), str):
            questions.append(item[field])
        else:
            raise _fail([f"{path}:{i}: expected a string or an object with a string "
                         f"'{field}' field"]) from None
    if not questions:
        raise _fail([f"{path}: no questions"])
    return questions


def _open_cache(path: Path | None):  # type: ignore[no-untyped-def]
    if path is None:
        return None
    from .cache import ResponseCache

    try:
        return ResponseCache(path)
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None


def _usage_table(result) -> Table:  # type: ignore[no-untyped-def]
    """Per-node usage, narrow enough for 80 columns: short headers, compact numbers, node
    names wrapped (never cut)."""
    from . import compact

    t = Table(title="usage", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("node", "calls", "cached", "samples", "prompt", "output", "sec", "$",
                "FLOPs"):
        t.add_column(col, justify="left" if col == "node" else "right",
                     overflow="fold", no_wrap=col != "node")
    rows = list(result.usage_by_node().items())
    for name, u in [*rows, ("total", result.usage)]:
        t.add_row(name, compact.count(u.calls), compact.count(u.cached_calls),
                  compact.count(u.samples), compact.count(u.prompt_tokens),
                  compact.count(u.completion_tokens), compact.seconds(u.latency_s),
                  compact.usd(u.billed_usd), compact.count(u.flops),
                  style="bold" if name == "total" else None)
    t.caption = "prompt/output: tokens; $: billed; cached calls are not billed"
    t.caption_justify = "left"
    return t


@app.command()
def run(
    graph: Annotated[Path, typer.Argument(help="graph file (YAML)")],
    question: Annotated[str | None, typer.Option("-q", "--question", help="one question")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i",
                                               help="JSONL file of questions")] = None,
    field: Annotated[str, typer.Option(help="question field in --input objects")] = "question",
    as_json: Annotated[bool, typer.Option("--json", help="print the full typed result")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="queries at once")] = 4,
    output: Annotated[Path | None, typer.Option("--out", "-o",
                                                help="write results as JSONL")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="response cache (SQLite): seen samples are replayed, not billed")] = None,
    trace: Annotated[Path | None, typer.Option(
        help="append one JSONL line per call to FILE (summarise: tts-graph trace FILE)")
    ] = None,
    stream: Annotated[bool, typer.Option(
        "--stream", help="print the answer as it is produced (token by token when the "
        "output node is one sample of a solver, fuser or refiner); with -q")] = False,
) -> None:
    """Run GRAPH on a question (-q) or on every question of a JSONL file (--input)."""
    from .executor import Executor

    if (question is None) == (input is None):
        raise _fail(["give exactly one of -q/--question or --input"])
    if stream and (question is None or as_json):
        raise _fail(["--stream prints one answer as it comes: use it with -q, without --json"])
    from .model_checks import check_models

    compiled = _compile(graph)
    # the same file:line as validate; an unset key is fatal here: the model is called now
    checked = check_models(compiled.doc).lines(warnings_fatal=True)
    if checked:
        raise _fail(checked)
    questions = [question] if question is not None else _read_questions(input, field)  # type: ignore[arg-type]
    executor = Executor(compiled, cache=_open_cache(cache))
    try:
        executor.bindings()  # configuration problems (a missing key, an unknown model) now
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    runner = _traced(executor, trace, compiled)
    try:
        if stream:
            def show(piece: str) -> None:
                sys.stdout.write(piece)
                sys.stdout.flush()

            results = [asyncio.run(runner.arun(questions[0], on_text=show))]
            sys.stdout.write("\n")
        elif len(questions) == 1 and question is not None:
            results = [asyncio.run(runner.arun(questions[0]))]
        else:
            results = _run_many(runner, questions, concurrency, quiet=as_json)
    except TTSGraphError as exc:
        raise _fail([str(exc)], code=1) from None
    if output is not None:
        with output.open("w", encoding="utf-8") as fh:
            for r in results:
                fh.write(json.dumps(r.to_dict()) + "\n")
    if as_json:
        if len(results) == 1 and question is not None:
            print(json.dumps(results[0].to_dict(), indent=2))
        else:
            for r in results:
                print(json.dumps(r.to_dict()))
    elif question is not None:
        r = results[0]
        out.print(f"[bold]answer:[/bold] {r.answer if r.answer is not None else '(none)'}"
                  f"   [dim]status: {r.status}, {r.latency_s:.2f}s[/dim]")
        from .vote_summary import vote_lines

        for line in vote_lines(r, compiled):
            out.print(line, markup=False, highlight=False)
        if r.text and not stream:
            out.print(r.text.strip(), markup=False, highlight=False)
        if r.error:
            err.print(f"infrastructure errors: {r.error}", markup=False, soft_wrap=True)
        out.print(_usage_table(r))
    else:
        _summary(results)
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


def _traced(executor, trace: Path | None, graph):  # type: ignore[no-untyped-def]
    """``executor`` traced to ``trace`` (and OpenTelemetry with TTS_GRAPH_OTEL=1)."""
    from .tracing import Tracer

    try:
        tracer = Tracer(trace, graph=graph)
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    return tracer.wrap(executor) if tracer.active else executor


def _run_many(executor, questions: list[str], concurrency: int, quiet: bool):  # type: ignore[no-untyped-def]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal
                  ) as progress:
        task = progress.add_task("queries", total=len(questions))
        return asyncio.run(executor.arun_many(
            questions, concurrency=concurrency,
            on_result=lambda _: progress.advance(task),
        ))


def _summary(results) -> None:  # type: ignore[no-untyped-def]
    from . import compact

    t = Table(title=f"{len(results)} queries", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False)
    for col in ("#", "answer", "status", "tokens", "sec"):
        # a long answer wraps inside its column instead of being cut
        t.add_column(col, justify="right" if col in ("#", "tokens", "sec") else "left",
                     overflow="fold", no_wrap=col != "answer")
    for r in results:
        t.add_row(str(r.id), str(r.answer), r.status, compact.count(r.usage.tokens),
                  compact.seconds(r.latency_s))
    out.print(t)
    from .usage import total

    u = total(c for r in results for c in r.calls)
    out.print(f"total: {u.calls} calls ({u.cached_calls} from the cache), {u.samples} samples, "
              f"{u.tokens} tokens, ${u.billed_usd:.6f} billed, {u.flops:.3g} FLOPs, "
              f"{u.retries} retries, {u.errors} infrastructure errors")


@app.command("eval")
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
) -> None:
    """Evaluate GRAPH(s) on a task; every result is stored at once, --resume continues."""
    from .evaluate.session import TaskArgs, plan_run

    if split not in ("search", "test", "all"):
        raise _fail(["--split: must be search, test or all"])
    if resume is None and (not graphs or task is None):
        raise _fail(["give GRAPH... and --task, or --resume RUN_DIR"])
    if resume is not None and graphs:
        raise _fail(["--resume continues a recorded run: give no GRAPH with it"])
    if storage is not None:  # a bad or unreachable database: before any run is recorded
        from .evaluate.pgboard import check_storage

        try:
            check_storage(storage)
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
    args = TaskArgs(task=task or "", question_field=question_field, answer_field=answer_field,
                    id_field=id_field, scorer=scorer, split=split, seed=seed, limit=limit)
    targets: list[tuple[Path | None, Path | None]] = (
        [(None, resume)] if resume is not None else
        [(g, (out / g.stem) if out is not None and len(graphs or []) > 1 else out)
         for g in graphs or []]
    )
    summaries = []
    infra = left = 0
    for graph_path, run_dir in targets:
        try:
            plan = plan_run(graph_path=graph_path, args=args if resume is None else None,
                            out=run_dir, resume=resume if graph_path is None else None,
                            cache=cache, use_cache=not no_cache,
                            accept_weak_sandbox=accept_weak_sandbox)
        except GraphErrors as exc:
            raise _fail(exc.lines()) from None
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
        plan.executor = _traced(plan.executor, trace, plan.graph)
        if workers > 1 or storage is not None:
            summary, unrun = _run_eval_workers(plan, workers, concurrency, quiet=as_json,
                                               cache=cache, use_cache=not no_cache, trace=trace,
                                               storage=storage)
            left += unrun
        else:
            summary = _run_eval(plan, concurrency, quiet=as_json)
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
        from .evaluate.plot import accuracy_vs_cost

        path = accuracy_vs_cost(summaries, plot or ((out or Path("runs")) / "compare.png"))
        if not as_json:
            err.print(f"plot: {path}", markup=False)
    if left:
        err.print(f"{left} questions were not run (workers ended early); --resume runs them",
                  markup=False)
    if infra:
        err.print(f"{infra} questions ended in infrastructure errors (not scored); "
                  "--resume runs them again", markup=False)
    if infra or left:
        raise typer.Exit(1)


@contextlib.contextmanager
def _eval_progress(plan, quiet: bool):  # type: ignore[no-untyped-def]
    """The progress bar of an eval run (off with --json or when stderr is not a terminal)."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  disable=quiet or not err.is_terminal) as progress:
        yield progress, progress.add_task(plan.graph.name, total=len(plan.items),
                                          completed=plan.already_done, info="")


def _run_eval(plan, concurrency: int, quiet: bool):  # type: ignore[no-untyped-def]
    from .evaluate.runner import run_items
    from .evaluate.summary import summarize

    stats = {"scored": 0, "correct": 0, "cost": 0.0, "tokens": 0, "errors": 0}
    with _eval_progress(plan, quiet) as (progress, bar):

        def on_row(row) -> None:  # type: ignore[no-untyped-def]
            if row.correct is None:
                stats["errors"] += 1
            else:
                stats["scored"] += 1
                stats["correct"] += int(row.correct)
            stats["cost"] += row.billed_usd
            stats["tokens"] += row.prompt_tokens + row.completion_tokens
            acc = stats["correct"] / stats["scored"] if stats["scored"] else 0.0
            progress.update(bar, advance=1, info=(
                f"acc {acc:.1%}  ${stats['cost']:.4f}  {stats['tokens']} tok"
                + (f"  {stats['errors']} infra errors" if stats["errors"] else "")))

        try:
            asyncio.run(run_items(plan.executor, plan.task.scorer, plan.items, plan.store,
                                  concurrency=concurrency, on_row=on_row,
                                  threaded_scoring=plan.task.scorer.name == "code"))
        except TTSGraphError as exc:
            raise _fail([str(exc)], code=1) from None
    return summarize(plan.store)


def _run_eval_workers(plan, workers: int, concurrency: int, *, quiet: bool,  # type: ignore[no-untyped-def]
                      cache: Path | None, use_cache: bool, trace: Path | None,
                      storage: str | None = None):
    from .evaluate.summary import summarize
    from .evaluate.workers import run_workers

    total = len(plan.items)
    with _eval_progress(plan, quiet) as (progress, bar):

        def on_progress(p) -> None:  # type: ignore[no-untyped-def]
            info = "  ".join(f"{w} {d}" + (f" (+{t} taken over)" if t else "")
                             for w, (d, t) in p["workers"].items())
            progress.update(bar, completed=total - p["left"], info=info)

        try:
            report = run_workers(plan, workers, concurrency, cache=cache, use_cache=use_cache,
                                 trace=trace, on_progress=on_progress, storage=storage)
        except TTSGraphError as exc:  # the database failed mid-run (checked before it)
            raise _fail([str(exc)], code=1) from None
    if len(report.problems) == workers and not report.progress.get("workers"):
        raise _fail(report.problems, code=1)  # no worker got going: nothing to summarise
    for line in report.problems:
        err.print(line, markup=False)
    return summarize(plan.store), int(report.progress.get("left", 0))


def _print_summary(s) -> None:  # type: ignore[no-untyped-def]
    lo, hi = s.ci95
    out.print(f"[bold]{s.graph}[/bold] on {s.task}: accuracy {s.accuracy:.1%} "
              f"(95% CI {lo:.1%}–{hi:.1%}, {s.correct}/{s.scored})"
              + (f", {s.infra_errors} infrastructure errors" if s.infra_errors else ""))
    out.print(f"  tokens {s.prompt_tokens}+{s.completion_tokens} "
              f"({s.tokens_per_question:.0f}/question), cost ${s.cost_usd:.6f} "
              f"(billed ${s.billed_usd:.6f}), FLOPs {s.flops:.3g}, calls {s.calls} "
              f"({s.cached_calls} cached), latency p50/p90/p99 "
              f"{s.latency_p50:.2f}/{s.latency_p90:.2f}/{s.latency_p99:.2f} s", markup=False)
    b = getattr(s, "budget", None)
    if b:
        narrowed = ", ".join(f"{k} {n}" for k, n in b["narrowed"].items()) or "none"
        out.print(f"  budget: {b['share_spent_mean']:.0%} spent on average (min "
                  f"{b['share_spent_min']:.0%}), {b['overruns']} overruns, plan fits "
                  f"{b['plan_fits']}/{b['queries']}, output reached "
                  f"{b['output_reached_where_plan_fits']}/{b['plan_fits']} of those, samples "
                  f"{b['samples_drawn']}/{b['samples_wanted']}; narrowed: {narrowed}",
                  markup=False)
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
        out.print(f"  code sandbox: {s.sandbox} mode", markup=False)
    out.print(f"  results: {s.run_dir}", markup=False)


def _compare_table(summaries) -> None:  # type: ignore[no-untyped-def]
    t = Table(title="comparison", title_justify="left")
    for col in ("graph", "task", "n", "accuracy", "95% CI", "tokens/q", "cost/q $",
                "p50 s", "infra errors", "run"):
        t.add_column(col, justify="left" if col in ("graph", "task", "run") else "right")
    for s in summaries:
        t.add_row(s.graph, s.task, str(s.scored), f"{s.accuracy:.1%}",
                  f"{s.ci95[0]:.1%}–{s.ci95[1]:.1%}", f"{s.tokens_per_question:.0f}",
                  f"{s.cost_per_question:.6f}", f"{s.latency_p50:.2f}", str(s.infra_errors),
                  s.run_dir)
    out.print(t)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    plot: Annotated[Path, typer.Option(help="accuracy-vs-cost PNG")] = Path("compare.png"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Compare finished runs side by side and plot accuracy against cost."""
    from .evaluate.plot import accuracy_vs_cost
    from .evaluate.store import ResultStore
    from .evaluate.summary import summarize

    summaries = []
    for run_dir in runs:
        if not (run_dir / "results.sqlite").exists():
            raise _fail([f"{run_dir}: not a run directory (no results.sqlite)"])
        try:
            summaries.append(summarize(ResultStore(run_dir)))
        except TTSGraphError as exc:
            raise _fail([str(exc)]) from None
    path = accuracy_vs_cost(summaries, plot)
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        _compare_table(summaries)
        out.print(f"plot: {path}", markup=False)


@app.command()
def search(
    search_file: Annotated[Path, typer.Argument(help="search file (searchers/*.yaml)")],
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage URL (default sqlite:///OUT/study.db; postgresql://... lets "
        "several workers share one study)")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory")] = None,
    worker: Annotated[int, typer.Option(min=0, help="worker number (distinct per worker "
                                        "sharing a study)")] = 0,
    heldout: Annotated[bool, typer.Option(help="re-score the front on held-out questions")
                       ] = True,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="send every call")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the front as JSON")] = False,
    accept_weak_sandbox: Annotated[bool, typer.Option(
        "--accept-weak-sandbox", help="with the code scorer: run even where the sandbox can "
        "only use guard mode (weaker isolation)")] = False,
) -> None:
    """Search for the compute-optimal graph; resumes from the same storage."""
    from .search.driver import SearchSession

    try:
        session = SearchSession(search_file, storage=storage, out_dir=out, worker=worker,
                                use_cache=not no_cache,
                                accept_weak_sandbox=accept_weak_sandbox)
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    except Exception as exc:  # storage URLs and drivers fail in their own ways
        raise _fail([f"search {search_file}: {type(exc).__name__}: {exc}"]) from None
    spec = session.spec
    best = {"acc": None}

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  disable=as_json or not err.is_terminal) as progress:
        started = session.spent()[0]
        bar = progress.add_task(spec.name, total=spec.budget.trials, completed=started,
                                info="")

        def on_trial(proposal, result) -> None:  # type: ignore[no-untyped-def]
            if result.state == "complete":
                acc = result.values.get("accuracy", 0.0)
                best["acc"] = acc if best["acc"] is None else max(best["acc"], acc)
            n, tokens, usd = session.spent()
            front = len(session.study.best_trials) if any(
                t.state.name == "COMPLETE" for t in session.study.get_trials(deepcopy=False)
            ) else 0
            progress.update(bar, completed=n, info=(
                f"trial {proposal.number} {result.state}  best acc "
                f"{(best['acc'] or 0):.1%}  front {front}  {tokens} tok  ${usd:.4f}"))
            if not err.is_terminal and not as_json:
                err.print(f"trial {proposal.number}: {result.state} "
                          + " ".join(f"{k}={v:.4g}" for k, v in result.values.items())
                          + (f" ({result.reason})" if result.reason else ""), markup=False)

        try:
            ran = asyncio.run(session.run(on_trial))
        except TTSGraphError as exc:
            session.close()
            raise _fail([str(exc)], code=1) from None
    try:
        entries = session.front()
        session.export(entries)
        if heldout and entries:
            asyncio.run(session.rescore(entries))
        report = session.write_report(entries)
        plot = session.plot(entries)
    finally:
        session.close()
    if as_json:
        print(report.read_text())
        return
    one = len(spec.objectives) == 1
    t = Table(title=(f"Best graphs of '{spec.name}'" if one else
                     f"Pareto front of '{spec.name}'") + f" ({ran} trials run here)",
              title_justify="left")
    t.add_column("trial", justify="right")
    t.add_column("95% CI", justify="right")  # of the search accuracy
    # one objective: P(most accurate of these); Pareto: P(more accurate than the cheaper one)
    t.add_column("P(best)" if one else "P(gain)", justify="right")
    # tokens per question are shown even when not an objective: they break accuracy ties
    shown = [*spec.objectives, *(["tokens"] if "tokens" not in spec.objectives else [])]
    for o in shown:
        t.add_column(f"{o} (search)", justify="right")
        if heldout:
            t.add_column(f"{o} (held-out)", justify="right")
    front_dir = session.out_dir / "front"  # where export wrote every front graph
    t.add_column("graph", overflow="fold")  # a cut name cannot be copied
    for e in entries:
        ci = f"{e.search_ci[0]:.0%}–{e.search_ci[1]:.0%}" if e.search_ci else "-"
        cells = [str(e.trial), ci, f"{e.confidence:.2f}" if e.confidence is not None else "-"]
        for o in shown:
            fmt = (lambda v: f"{v:.1%}") if o == "accuracy" else (lambda v: f"{v:.4g}")
            cells.append(fmt(e.search.get(o, 0.0)))
            if heldout:
                cells.append(fmt(e.heldout[o]) if o in e.heldout else "-")
        cells.append(Path(e.graph_file).name)
        t.add_row(*cells)
    out_console = Console()
    out_console.print(t)
    if entries:
        out_console.print(f"graphs: {front_dir}", markup=False)
    out_console.print(f"study: {session.storage if '@' not in session.storage else '(storage)'}"
                      f"  report: {report}" + (f"  plot: {plot}" if plot else ""),
                      markup=False)


@app.command("trace")
def trace_(
    files: Annotated[list[Path], typer.Argument(help="trace file(s) written with --trace")],
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Summarise trace file(s): calls, tokens, cost, latency percentiles, cache hits and
    errors, per node and per model."""
    from .tracing import TraceFileError, summarize_trace

    try:
        s = summarize_trace(files)
    except TraceFileError as exc:
        raise _fail([str(exc)]) from None
    if as_json:
        print(json.dumps(s, indent=2))
        return
    t, ql = s["total"], s["query_latency_s"]
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(s["query_status"].items()))
    out.print(f"{s['queries']} queries ({statuses or 'none'}) in {s['runs']} run(s)"
              + (f", {s['first']} to {s['last']}" if s["first"] else ""),
              markup=False, soft_wrap=True)
    out.print(f"{t['calls']} calls ({t['cache_hits']} from the cache, {t['errors']} errors, "
              f"{t['retries']} retries), {t['samples']} samples, tokens "
              f"{t['prompt_tokens']}+{t['completion_tokens']}, cost ${t['cost_usd']:.6f} "
              f"(billed ${t['billed_usd']:.6f}), FLOPs {t['flops']:.3g}",
              markup=False, soft_wrap=True)
    cl = t["latency_s"]
    out.print(f"latency p50/p90/p99: calls {cl['p50']:.3f}/{cl['p90']:.3f}/{cl['p99']:.3f} s "
              f"(live calls), queries {ql['p50']:.3f}/{ql['p90']:.3f}/{ql['p99']:.3f} s",
              markup=False, soft_wrap=True)
    for title, table in (("node", s["by_node"]), ("model", s["by_model"])):
        tab = Table(title=f"by {title}", title_justify="left")
        for col in (title, "calls", "cached", "errors", "tokens", "cost $", "p50/p90/p99 s"):
            tab.add_column(col, justify="left" if col == title else "right")
        for name, g in table.items():
            lat = g["latency_s"]
            tab.add_row(name, str(g["calls"]), str(g["cache_hits"]), str(g["errors"]),
                        f"{g['prompt_tokens']}+{g['completion_tokens']}",
                        f"{g['cost_usd']:.6f}",
                        f"{lat['p50']:.2f}/{lat['p90']:.2f}/{lat['p99']:.2f}")
        out.print(tab)


import_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Turn other frameworks' configs into graph files.")
app.add_typer(import_app, name="import")


@import_app.command("archon")
def import_archon(
    config: Annotated[Path, typer.Argument(help="Archon config (JSON)")],
    output: Annotated[Path | None, typer.Option("--out", "-o",
                                                help="write the graph here (default: stdout)")
                      ] = None,
    name: Annotated[str | None, typer.Option(help="graph name (default: the config's)")
                    ] = None,
) -> None:
    """Convert an Archon config (layers of generators, fusers, critics, rankers, verifiers,
    unit-test generators and evaluators) into a graph file with the same meaning."""
    from .archon import load_archon, to_yaml

    notes: dict[str, list[str]] = {}
    try:
        text = to_yaml(load_archon(config, name=name, notes=notes), source=str(config),
                       notes=notes)
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", markup=False, highlight=False)


@app.command()
def validate(graphs: Annotated[list[Path], typer.Argument(help="graph files")]) -> None:
    """Check graph files; print one line per problem (exit 2 if any)."""
    from .backends.registry import backend_names
    from .compile import compile_graph
    from .model_checks import check_models
    from .spec import load_graph

    problems: list[str] = []
    for path in graphs:
        try:
            g = compile_graph(load_graph(path), backends=backend_names())
        except GraphErrors as exc:
            problems.extend(exc.lines())
            continue
        except TTSGraphError as exc:
            problems.append(str(exc))
            continue
        checked = check_models(g.doc)
        for w in checked.warnings:  # the key may be set where the graph runs: not an error
            err.print(f"{w} (warning: set it where the graph runs)", markup=False,
                      highlight=False, soft_wrap=True)
        if checked.errors:
            problems.extend(checked.lines(warnings_fatal=False))
            continue
        out.print(f"ok: {path} ({len(g.spec.nodes)} nodes, {len(g.steps)} steps)",
                  markup=False, highlight=False)
        note = _budget_note(g)
        if note:
            out.print(f"warning: {path}: {note}", markup=False, highlight=False,
                      soft_wrap=True)
    if problems:
        raise _fail(problems)


def _budget_note(graph: CompiledGraph) -> str | None:
    """Why no plan of the whole graph fits its declared budget, or None when one does."""
    from .budget_plan import narrowest_need, plan_budget_fits

    if plan_budget_fits(graph) is not False:
        return None
    need = narrowest_need(graph)
    assert need is not None
    b = graph.spec.budget
    parts = [f"{label} {cap:g} < {used:g}" for label, cap, used in (
        ("max_tokens_per_query", b.max_tokens_per_query, need.tokens),
        ("max_cost_usd_per_query", b.max_cost_usd_per_query, need.cost),
        ("max_flops_per_query", b.max_flops_per_query, need.flops)) if cap is not None
        and used > cap]
    return ("budget: no plan of the whole graph fits (its narrowest worst case, prompts "
            f"counted at about 3 characters a token: {', '.join(parts)}); calls will only be "
            "guarded, and later steps, the output among them, may not run")


@app.command()
def show(
    graph: Annotated[Path, typer.Argument(help="graph file")],
    format: Annotated[str, typer.Option("--format", "-f",
                                        help="ascii | mermaid | dot")] = "ascii",
) -> None:
    """Draw a graph: ASCII in the terminal, or Mermaid / DOT text (offline)."""
    from .render import ascii_graph, dot, mermaid

    renderers = {"ascii": ascii_graph, "mermaid": mermaid, "dot": dot}
    if format not in renderers:
        raise _fail([f"--format: must be one of {', '.join(renderers)}"])
    print(renderers[format](_compile(graph)))


@app.command()
def schema() -> None:
    """Print the JSON Schema of graph files (for editor autocompletion)."""
    from .spec import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def serve(
    graphs: Annotated[list[Path], typer.Argument(help="graph files, or directories of *.yaml")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free port)")
                    ] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        help="environment variable holding the API key clients must send as "
        "'Authorization: Bearer KEY'")] = None,
    max_concurrency: Annotated[int, typer.Option(
        min=1, help="graph runs at once; further requests wait")] = 8,
    max_body_mb: Annotated[float, typer.Option(
        min=0.001, help="largest request body in MB (1 MB = 2**20 bytes); larger ones get "
        "413")] = 4.0,
    cache: Annotated[Path | None, typer.Option(
        help="response cache (SQLite): seen samples are replayed, not billed")] = None,
    log_level: Annotated[str, typer.Option(help="critical | error | warning | info | debug")
                         ] = "info",
) -> None:
    """Serve graphs as OpenAI-compatible models (model id = graph name) under /v1."""
    import logging
    import os

    from .server import bind_socket, create_app
    from .server import serve as run_server

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise _fail(["--log-level: must be critical, error, warning, info or debug"])
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise _fail([f"--api-key-env: environment variable {api_key_env} is not set "
                         "(or empty)"])
    try:
        web = create_app(graphs, api_key=api_key, max_concurrency=max_concurrency,
                         cache=_open_cache(cache),
                         max_body_bytes=max(1, int(max_body_mb * 1024 * 1024)))
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise _fail([f"cannot listen on {host}:{port}: {exc.strerror or exc}"], code=1
                    ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    names = ", ".join(web.state.tts.graphs)
    err.print(f"serving {len(web.state.tts.graphs)} graph(s) at http://{shown}:{bound_port}/v1"
              f" (models: {names}; auth: {'on' if api_key else 'off'}; "
              f"max concurrency {max_concurrency})", markup=False, highlight=False,
              soft_wrap=True)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    server_log = logging.getLogger("tts_graph.server")
    server_log.addHandler(handler)
    server_log.setLevel(log_level.upper())
    run_server(web, sock, log_level=log_level)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
