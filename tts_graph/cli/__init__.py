"""The ``tts-graph`` command: the Typer app, each command registered from the module that holds
it (one per command group). Bad input exits 2 with one line per problem; an infrastructure
failure exits 1."""

from __future__ import annotations

import contextlib
import errno
import os
import sys

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


def main() -> None:
    try:
        try:
            app()
        finally:
            # output still buffered fails here, where it can be reported, not at exit
            # (no stdout at all, ``>&-``: nothing to flush)
            if sys.stdout is not None:
                sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # stdout on a full disk or a dead device (a broken pipe is Typer's, quietly): one
        # line, not a traceback; the unwritable buffer is dropped so exit does not retry it
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if exc.errno == errno.EPIPE:
            sys.exit(1)
        what = (f"{exc.filename}:" if exc.filename else "standard output: cannot write:")
        print(f"tts-graph: {what} {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
