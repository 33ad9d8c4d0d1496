"""The Typer app of ``tts-graph``, each command registered from the module that holds it (one
per command group); ``tts_graph.cli.main`` runs it."""

from __future__ import annotations

import typer

from . import eval as evaluation  # `eval` would hide the builtin in this module
from . import import_, run, search, serve, trace, validate

app = typer.Typer(add_completion=False, no_args_is_help=True,
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
