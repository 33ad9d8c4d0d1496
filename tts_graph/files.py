"""Files written whole or not at all: the one way the commands, eval and search write what a
user keeps (results, front graphs, plots), so a failed or killed write never leaves half a
file in place of a good one."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_whole(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` through a temporary file beside it (a name of its own: workers
    may share a directory), renamed over it. A device or a pipe (``/dev/stdout``, a FIFO) is
    written in place: it cannot be replaced (as root, a rename would put a file where the
    device was). The file keeps the mode it had, or gets the umask's, not mkstemp's 0600.
    Raises ``OSError``; callers say which option or file it was."""
    if path.is_symlink():  # the file it points to is what gets replaced, not the link
        try:
            path = path.resolve()
        except RuntimeError as exc:  # Python < 3.13 raises on a loop of links
            raise OSError(f"{path}: a loop of symbolic links") from exc
        if path.is_symlink():  # 3.13 returns the loop unresolved: never replace a link
            raise OSError(f"{path}: a loop of symbolic links")
    try:
        special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        special = False
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if special:
        with path.open("wb") as fh:
            fh.write(raw)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        mode = (path.stat().st_mode & 0o7777) if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
