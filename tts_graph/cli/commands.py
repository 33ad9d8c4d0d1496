"""The Typer app of ``tts-graph``, each command registered from the module that holds it (one
per command group); ``tts_graph.cli.main`` runs it."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from . import eval as evaluation  # `eval` would hide the builtin in this module
from . import import_, run, search, serve, trace, validate


class Interrupted(Exception):
    """A Ctrl-C no command caught, carried out of Typer as itself: run not standalone (see
    ``tts_graph.cli.main``), Typer would return it as exit code 130, which cannot be told
    from a command's own exit after saying what it kept."""


class Group(TyperGroup):
    """The app's group: a Ctrl-C no command caught, while the command line is read or a
    command runs, leaves as ``Interrupted``."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc


#: Click's base of the errors it raises for a command line it cannot parse (the Click that
#: Typer uses: its own copy from Typer 0.29, the ``click`` package before)
UsageErrors: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=Group,
                  help="Run and inspect test-time-scaling collaboration graphs.")
# registered in the order the help lists them
app.command()(run.run)
app.command("eval")(evaluation.eval_)
app.command()(evaluation.compare)
app.command()(search.search)
app.command("trace")(trace.trace_)

import_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Turn other frameworks' configs into graph files.")
app.add_typer(import_app, name="import")
import_app.command("archon")(import_.import_archon)

app.command()(validate.validate)
app.command()(validate.show)
app.command()(validate.schema)
app.command()(serve.serve)
