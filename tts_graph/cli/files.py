"""Files the commands write: checked before any model is called (a run must not be paid for
and then lost to a typo in ``--out``), never the same file as an input, and replaced whole
(a failed write leaves the old file as it was, not half a file)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ..files import write_whole
from .common import _fail


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: Path, option: str, inputs: Iterable[Path | None] = (), *,
                      make_parents: bool = False) -> None:
    """A one-line error (exit 2) now unless ``path`` can be written as a file and is none of
    ``inputs``. ``make_parents``: the writer creates missing directories above it."""
    where = f"{option} {path}"
    if path.is_symlink():  # written through the link (write_text_file): check its target
        try:
            target = path.resolve()
        except (RuntimeError, OSError):  # RuntimeError: a loop (Python < 3.13)
            target = path
        if target.is_symlink():  # Python 3.13 returns a loop unresolved instead of raising
            raise _fail([f"{where}: a symbolic link that loops: give another file"])
        where, path = f"{where} (a link to {target})", target
    if path.is_dir():
        raise _fail([f"{where}: is a directory: give a file name"])
    for source in inputs:
        if source is not None and _same(path, source):
            raise _fail([f"{where}: is also an input ({source}): writing it would destroy "
                         "that input; give another file"])
    parent = path.parent
    if not parent.exists():
        # a component may be a regular file (``notes.txt/out.jsonl``): say which
        up = parent
        while not up.exists() and up != up.parent:
            up = up.parent
        if up.exists() and not up.is_dir():
            raise _fail([f"{where}: {up} is not a directory"])
        if make_parents:
            return
        raise _fail([f"{where}: directory {parent} does not exist"])
    if not parent.is_dir():
        raise _fail([f"{where}: {parent} is not a directory"])
    if path.exists() and not os.access(path, os.W_OK):
        raise _fail([f"{where}: not writable (permission denied)"])
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise _fail([f"{where}: cannot create a file in {parent} (permission denied)"])


def check_output_dir(path: Path, option: str) -> None:
    """A one-line error (exit 2) now unless ``path`` is, or can be made as, a directory."""
    if path.exists() and not path.is_dir():
        raise _fail([f"{option} {path}: is a file: give a directory"])
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise _fail([f"{option} {path}: {blocker} is not a directory"])


def check_plot_file(path: Path, option: str, inputs: Iterable[Path | None] = ()) -> None:
    """``check_output_file`` for a plot, and a format matplotlib can write (its suffix):
    a typo must not fail only after every graph has run."""
    check_output_file(path, option, inputs, make_parents=True)
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix and suffix not in kinds:
        raise _fail([f"{option} {path}: matplotlib cannot write .{suffix} files; use one of "
                     + ", ".join(f".{k}" for k in sorted(kinds))])


def write_text_file(path: Path, text: str, *, option: str, code: int = 1) -> None:
    """``text`` written to ``path`` whole or not at all (``tts_graph.files.write_whole``); a
    failure is one line naming the option and file (exit ``code``)."""
    try:
        write_whole(path, text)
    except OSError as exc:
        raise _fail([f"{option} {path}: cannot write: {exc.strerror or exc}"], code=code
                    ) from None


def read_input_text(path: Path) -> tuple[str, str]:
    """(the text of ``path``, or of stdin for ``-``; the name messages give it). A file that
    cannot be read, or is not UTF-8 text, is a one-line error naming it (and the line)."""
    name = "<stdin>" if str(path) == "-" else str(path)
    try:
        data = sys.stdin.buffer.read() if name == "<stdin>" else path.read_bytes()
    except OSError as exc:
        raise _fail([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8-sig"), name  # a BOM (Windows editors) is no question text
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _fail([f"{name}:{line}: not UTF-8 text (a binary file?): save it as UTF-8"]
                    ) from None
