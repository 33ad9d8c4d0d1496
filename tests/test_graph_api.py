"""The Python API: Graph.from_yaml / from_dict / run / arun / run_many / to_yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_graph import Graph, GraphErrors
from tts_graph.backends.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parent.parent

DATA = {
    "version": 1,
    "name": "py-sc",
    "models": {"m": {"backend": "scripted", "model": "x"}},
    "nodes": {
        "solve": {"role": "solver", "model": "m", "samples": 3},
        "vote": {"role": "vote", "inputs": ["solve"]},
    },
    "output": "vote",
}


def backend() -> ScriptedBackend:
    return ScriptedBackend(lambda req, i: ["Answer: 4", "Answer: 4", "Answer: 5"][i])


def test_from_dict_runs_like_yaml() -> None:
    g = Graph.from_dict(DATA, backends={"m": backend()})
    r = g.run("2+2?")
    assert r.answer == "4" and r.usage.samples == 3
    assert g.name == "py-sc" and "vote" in repr(g)


async def test_arun_and_arun_many() -> None:
    g = Graph.from_dict(DATA, backends={"m": backend()})
    r = await g.arun("q")
    assert r.answer == "4"
    many = await g.arun_many(["a", "b", "c"], concurrency=2)
    assert [x.question for x in many] == ["a", "b", "c"]


async def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A notebook cell, or sync code an async app calls: ``run`` raised "asyncio.run()
    cannot be called from a running event loop" (and left a coroutine never awaited)."""
    g = Graph.from_dict(DATA, backends={"m": backend()})
    assert g.run("2+2?").answer == "4"
    assert [r.question for r in g.run_many(["x", "y"])] == ["x", "y"]
    traced = Graph.from_dict(DATA, backends={"m": backend()}, trace=tmp_path / "t.jsonl")
    assert traced.run("2+2?").answer == "4"
    assert (tmp_path / "t.jsonl").read_text().count("\n") >= 1


def test_run_many_in_order() -> None:
    g = Graph.from_dict(DATA, backends={"m": backend()})
    assert [r.question for r in g.run_many(["x", "y"])] == ["x", "y"]


def test_python_graphs_validate_exactly_like_yaml() -> None:
    bad = {**DATA, "nodes": {**DATA["nodes"], "solve": {"role": "solver", "model": "m",
                                                         "samples": 0}}}
    with pytest.raises(GraphErrors) as exc:
        Graph.from_dict(bad, source="mine")
    assert str(exc.value) == "mine: nodes.solve.samples: must be >= 1"


def test_round_trip_to_yaml(tmp_path: Path) -> None:
    g = Graph.from_dict(DATA)
    path = tmp_path / "g.yaml"
    text = g.to_yaml(path)
    again = Graph.from_yaml(path, backends={"m": backend()})
    assert again.to_dict() == g.to_dict()
    assert "samples: 3" in text
    assert again.run("q").answer == "4"


def test_presets_load_and_round_trip() -> None:
    for p in sorted((ROOT / "graphs").glob("*.yaml")):
        g = Graph.from_yaml(p)
        assert Graph.from_string(g.to_yaml()).to_dict() == g.to_dict()
