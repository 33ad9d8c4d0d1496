"""The commands that make many calls (``eval``, ``search``, ``serve``) set their process's
garbage collector up for them once set-up is done (``tts_graph.collector``); the library
itself never touches its caller's collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_search import write_toy
from typer.testing import CliRunner

from tts_graph import Graph, loads_graph
from tts_graph.cli import app
from tts_graph.collector import YOUNG_THRESHOLD, freeze_setup

GRAPH = ("version: 1\nname: g\nmodels:\n  m: {backend: scripted, model: m, options: {answers: "
         "['Answer: 4']}}\nnodes:\n  s: {role: solver, model: m}\noutput: s\n")


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, *before[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _set_up() -> bool:
    return gc.get_freeze_count() > 0 and gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_freeze_setup_keeps_what_is_alive_aside_and_collects_young_objects_less_often(
        collector: None) -> None:
    alive = [object() for _ in range(10)]
    freeze_setup()
    assert _set_up() and gc.get_freeze_count() >= len(alive)


def test_the_library_leaves_its_callers_collector_alone(collector: None) -> None:
    with Graph(loads_graph(GRAPH)) as g:
        assert g.run("What is 2 + 2?").answer == "4"
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700


def test_serve_sets_the_collector_up_before_it_serves(tmp_path: Path, collector: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import tts_graph.server as server

    seen: list[bool] = []
    monkeypatch.setattr(server, "serve", lambda web, sock, **kw: (seen.append(_set_up()),
                                                                  sock.close()))
    (tmp_path / "g.yaml").write_text(GRAPH)
    got = CliRunner().invoke(app, ["serve", str(tmp_path / "g.yaml"), "--port", "0"])
    assert got.exit_code == 0, got.output
    assert seen == [True]


def test_search_sets_the_collector_up_before_its_trials(tmp_path: Path, collector: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tts_graph.search.driver import SearchSession

    seen: list[bool] = []
    run = SearchSession.run

    async def recorded(self: SearchSession, *args: object, **kwargs: object) -> object:
        seen.append(_set_up())
        return await run(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SearchSession, "run", recorded)
    path = write_toy(tmp_path / "s", budget={"trials": 2})
    got = CliRunner().invoke(app, ["search", str(path), "--out", str(tmp_path / "out"),
                                   "--json"])
    assert got.exit_code == 0, got.output
    assert seen == [True]
