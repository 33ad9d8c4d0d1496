"""``tts-graph search``: the compute-optimal graph search, its progress and its front."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import GraphErrors, TTSGraphError
from .common import _fail, err
from .files import check_output_dir


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
    share_limits: Annotated[int, typer.Option(
        min=1, help="this worker is one of N calling the same models at once (workers "
        "sharing a study through --storage): it keeps to an N-th of each model's "
        "max_concurrency, rpm and tpm")] = 1,
) -> None:
    """Search for the compute-optimal graph; resumes from the same storage."""
    from ..collector import freeze_setup
    from ..limits import set_share
    from ..search.driver import SearchSession

    if out is not None:
        check_output_dir(out, "--out")
    set_share(share_limits)  # before any model is bound
    try:
        session = SearchSession(search_file, storage=storage, out_dir=out, worker=worker,
                                use_cache=not no_cache,
                                accept_weak_sandbox=accept_weak_sandbox)
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    except Exception as exc:  # storage URLs and drivers fail in their own ways
        # SQLAlchemy's messages run over several lines (the SQL, a link): the first says it
        first = (str(exc).strip().splitlines() or [""])[0]
        raise _fail([f"search {search_file}: {type(exc).__name__}: {first}"]) from None
    spec = session.spec
    best = {"acc": None}
    freeze_setup()  # the trials' many calls: what set-up loaded (optuna, models) kept aside

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
        except KeyboardInterrupt:
            session.close()
            progress.stop()
            raise _interrupted(session) from None
    try:
        entries = session.front()
        session.export(entries)
        if heldout and entries:
            asyncio.run(session.rescore(entries))
        report = session.write_report(entries)
        plot = session.plot(entries)
    except KeyboardInterrupt:
        raise _interrupted(session) from None
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


def _interrupted(session) -> typer.Exit:  # type: ignore[no-untyped-def]
    """Ctrl-C: one line saying what is kept, exit 130 (as a shell reports SIGINT)."""
    from ..search.driver import _safe_storage

    done = session.spent()[0]
    return _fail([f"interrupted: {done} finished trials kept in "
                  f"{_safe_storage(session.storage)}; run the same command to resume"],
                 code=130)
