"""``tts_graph.files.write_whole``: what the commands, eval and search write is replaced whole."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tts_graph import files
from tts_graph.files import write_whole


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.yaml"
    out.write_text("old: 1\n")

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_whole(out, "new: 2\n")
    assert out.read_text() == "old: 1\n" and os.listdir(tmp_path) == ["o.yaml"]


def test_the_file_keeps_its_mode_and_a_new_one_gets_the_umasks(tmp_path: Path) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    write_whole(kept, b"[1]")
    assert kept.read_bytes() == b"[1]" and kept.stat().st_mode & 0o777 == 0o640
    mask = os.umask(0o022)
    try:
        write_whole(tmp_path / "new.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_pipe_is_written_in_place_and_a_link_replaces_its_target(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_whole(fifo, "through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"] and fifo.is_fifo()
    target = tmp_path / "target.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target)
    write_whole(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"


def test_a_loop_of_links_is_an_oserror_and_stays_a_link(tmp_path: Path) -> None:
    """Callers catch OSError; Python < 3.13 raised RuntimeError from resolve() on a loop,
    and 3.13 returns the loop unresolved (a rename would replace the link with a file)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError, match="loop of symbolic links"):
        write_whole(a, "x")
    assert a.is_symlink() and b.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
