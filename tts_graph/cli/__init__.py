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

TYPE_CHECKING = False  # as in tts_graph/__init__.py: no typing import before main runs
if TYPE_CHECKING:
    from typing import Any


def _quit_interrupted() -> None:
    """A Ctrl-C no command caught: before its code ran, or while a graph compiled (the
    commands that keep results catch it themselves). Nothing is kept open (each stored result
    is committed), so skipping the interpreter's shutdown loses nothing; that shutdown, after
    an import or a compile cut short, could end the process by SIGINT (-2) instead of 130."""
    with contextlib.suppress(OSError, ValueError):
        if sys.stdout is not None:
            sys.stdout.flush()
    print("tts-graph: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def _unraisable_at_start(args: Any) -> None:
    # a Ctrl-C landing in importlib's module-lock weakref callback is "unraisable": Python
    # would print a traceback and lose it
    if isinstance(args.exc_value, KeyboardInterrupt):
        _quit_interrupted()
    sys.__unraisablehook__(args)


def _usage_error(exc: Any) -> None:
    """A command line Typer could not parse (a missing argument, an option out of range, an
    unknown command): one line and its exit code (2), not a usage box."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help was the answer
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "tts-graph"
    message = " ".join(exc.format_message().split())
    hint = f" (see '{where} --help')" if ctx is not None else ""
    print(f"{where}: {message}{hint}", file=sys.stderr)
    sys.exit(exc.exit_code)


def main() -> None:
    sys.unraisablehook = _unraisable_at_start
    try:
        import typer

        from .commands import Interrupted, UsageErrors, app
    except KeyboardInterrupt:
        _quit_interrupted()
    finally:
        sys.unraisablehook = sys.__unraisablehook__
    try:
        try:
            # not standalone: a command line Typer cannot parse comes here to be said in one
            # line; the code a command exits with (its return is None) ends the process
            code = app(standalone_mode=False)
            sys.exit(code if isinstance(code, int) else 0)
        except UsageErrors as exc:
            _usage_error(exc)
        except typer.Abort:  # end of input at a prompt (no command prompts today)
            print("tts-graph: aborted", file=sys.stderr)
            sys.exit(1)
        except Interrupted:
            _quit_interrupted()
        finally:
            # output still buffered fails here, where it can be reported, not at exit
            # (no stdout at all, ``>&-``: nothing to flush)
            if sys.stdout is not None:
                sys.stdout.flush()
    except KeyboardInterrupt:
        _quit_interrupted()
    except SystemExit as exc:
        # Typer ends a Ctrl-C no command caught (while a graph compiles, say) in a silent
        # Exit(130) raised from the KeyboardInterrupt; the commands that catch it (run, eval,
        # search) have said what they kept and exit 130 from None: no second line for those
        if exc.code == 130 and isinstance(getattr(exc.__context__, "__cause__", None),
                                          KeyboardInterrupt):
            _quit_interrupted()
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
