"""``tts-graph run``: one question or a JSONL file of them through a graph."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import TTSGraphError
from .common import _compile, _fail, _open_cache, _traced, err, out
from .files import check_output_file, read_input_text, write_text_file


def _read_questions(path: Path, field: str) -> list[str]:
    text, name = read_input_text(path)
    questions: list[str] = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail([f"{name}:{i}: invalid JSON: {exc.msg}"]) from None
        except RecursionError:
            raise _fail([f"{name}:{i}: invalid JSON: nested too deeply"]) from None
        if isinstance(item, str):
            q = item
        elif isinstance(item, dict) and isinstance(item.get(field), str):
            q = item[field]
        else:
            raise _fail([f"{name}:{i}: expected a string or an object with a string "
                         f"'{field}' field"]) from None
        if not q.strip():  # the models would be paid to answer nothing
            raise _fail([f"{name}:{i}: empty question"])
        if not _is_text(q):  # json.loads accepts "\ud800" alone; no model or cache can
            raise _fail([f"{name}:{i}: a \\u escape that is half of a UTF-16 pair (a lone "
                         "surrogate) is not text: fix or remove it"])
        questions.append(q)
    if not questions:
        raise _fail([f"{name}: no questions"])
    return questions


def _is_text(text: str) -> bool:
    """False for a lone surrogate: from a ``\\ud800`` JSON escape, or from argv bytes that
    were not UTF-8 (Python keeps them as surrogates). Such a question fails far later, in a
    cache key or a request body, as a traceback."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _usage_table(result) -> Table:  # type: ignore[no-untyped-def]
    """Per-node usage, narrow enough for 80 columns: short headers, compact numbers, node
    names wrapped (never cut)."""
    from .. import compact

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
    from ..executor import Executor

    if (question is None) == (input is None):
        raise _fail(["give exactly one of -q/--question or --input"])
    if question is not None and not question.strip():
        raise _fail(["-q/--question: empty question"])
    if question is not None and not _is_text(question):  # bytes the locale could not decode
        raise _fail(["-q/--question: not UTF-8 text (is the terminal set to UTF-8?)"])
    if stream and (question is None or as_json):
        raise _fail(["--stream prints one answer as it comes: use it with -q, without --json"])
    # every file the run writes, checked before a model is paid: none may be an input
    if output is not None:
        check_output_file(output, "--out", (graph, input, cache, trace))
    if trace is not None:
        check_output_file(trace, "--trace", (graph, input, cache))
    from ..model_checks import check_models

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
    done: list = []  # type: ignore[type-arg]  # finished results, kept through a Ctrl-C
    interrupted = False
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
            results = _run_many(runner, questions, concurrency, quiet=as_json, done=done)
    except TTSGraphError as exc:
        raise _fail([str(exc)], code=1) from None
    except KeyboardInterrupt:  # Ctrl-C: what finished is still written and shown
        if stream:
            sys.stdout.write("\n")
        if not done:
            raise _fail([f"interrupted: no question finished (of {len(questions)})"],
                        code=130) from None
        interrupted = True
        results = sorted(done, key=lambda r: r.id)
    if output is not None:
        write_text_file(output, "".join(json.dumps(r.to_dict()) + "\n" for r in results),
                        option="--out")
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
        from ..vote_summary import vote_lines

        for line in vote_lines(r, compiled):
            out.print(line, markup=False, highlight=False)
        if r.text and not stream:
            out.print(r.text.strip(), markup=False, highlight=False)
        if r.error:
            err.print(f"infrastructure errors: {r.error}", markup=False, soft_wrap=True)
        out.print(_usage_table(r))
    else:
        _summary(results)
    if interrupted:
        raise _fail([f"interrupted: {len(results)} of {len(questions)} questions finished"
                     + (f"; their results are in {output}" if output is not None else "")],
                    code=130)
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


def _run_many(executor, questions: list[str], concurrency: int, quiet: bool,  # type: ignore[no-untyped-def]
              done: list):  # type: ignore[type-arg]
    def finished(result) -> None:  # type: ignore[no-untyped-def]
        done.append(result)
        progress.advance(task)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal
                  ) as progress:
        task = progress.add_task("queries", total=len(questions))
        return asyncio.run(executor.arun_many(questions, concurrency=concurrency,
                                              on_result=finished))


def _summary(results) -> None:  # type: ignore[no-untyped-def]
    from .. import compact

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
    from ..usage import total

    u = total(c for r in results for c in r.calls)
    out.print(f"total: {u.calls} calls ({u.cached_calls} from the cache), {u.samples} samples, "
              f"{u.tokens} tokens, ${u.billed_usd:.6f} billed, {u.flops:.3g} FLOPs, "
              f"{u.retries} retries, {u.errors} infrastructure errors")
