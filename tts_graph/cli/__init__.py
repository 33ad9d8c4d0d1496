"""The ``tts-graph`` command. Bad input exits 2 with one line per problem; an infrastructure
failure exits 1; Ctrl-C exits 130.

Kept light on purpose: ``main`` imports the app (Typer, rich, the commands: most of a
second) inside its own Ctrl-C handling, so a Ctrl-C right after the start is one line, not
a traceback through the import machinery."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any


def _interrupted() -> None:
    print("tts-graph: interrupted", file=sys.stderr)
    sys.exit(130)


def main() -> None:
    try:
        try:
            from .commands import app

            app()
        finally:
            # output still buffered fails here, where it can be reported, not at exit
            # (no stdout at all, ``>&-``: nothing to flush)
            if sys.stdout is not None:
                sys.stdout.flush()
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        # Typer ends a Ctrl-C no command caught (while a graph compiles, say) in a silent
        # Exit(130) raised from the KeyboardInterrupt; the commands that catch it (run, eval,
        # search) have said what they kept and exit 130 from None: no second line for those
        if exc.code == 130 and isinstance(getattr(exc.__context__, "__cause__", None),
                                          KeyboardInterrupt):
            _interrupted()
        raise
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


def __getattr__(name: str) -> Any:
    # ``from tts_graph.cli import app`` still works, without every import paying for it
    if name == "app":
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
