"""A custom role installed the way users install one: a distribution whose metadata declares a
``tts_graph.roles`` entry point."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tts_graph import Executor, GraphErrors, custom_roles, loads_graph
from tts_graph.backends.registry import backend_names
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.compile import compile_graph
from tts_graph.errors import TTSGraphError

PLUGIN = '''
from pydantic import BaseModel, Field

from tts_graph.roles.base import Call, Role
from tts_graph.types import Candidate


class ShoutParams(BaseModel):
    times: int = Field(ge=1)


class Shout(Role):
    """Asks the model once, then repeats its answer ``times`` times."""

    name = "shout"
    params_model = ShoutParams
    user_prompt = {"main": "{question}"}

    def calls(self, ctx):
        return [Call(ctx.model, self.messages(ctx, {}))]

    def finish(self, ctx, results):
        text = results[0][0].text
        return self.output(ctx, [Candidate(text * ctx.params.times, answer=text)])
'''


def _install(tmp_path: Path, source: str):  # type: ignore[no-untyped-def]
    (tmp_path / "shout_plugin.py").write_text(source)
    dist = tmp_path / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""
        [tts_graph.roles]
        shout = shout_plugin:Shout
        """)
    )
    sys.path.insert(0, str(tmp_path))
    custom_roles.installed.cache_clear()
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("shout_plugin", None)
    custom_roles.installed.cache_clear()


@pytest.fixture
def installed_plugin(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield from _install(tmp_path, PLUGIN)


@pytest.fixture
def broken_plugin(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield from _install(tmp_path, "raise RuntimeError('broken on purpose')\n")


GRAPH = """
version: 1
name: plugin
models: {m: {backend: scripted, model: x}}
nodes:
  s: {role: shout, model: m, params: {times: %s}}
output: s
"""


def test_entry_point_role_runs(installed_plugin: None) -> None:
    doc = loads_graph(GRAPH % 3)
    backend = ScriptedBackend(lambda req, i: "hi")
    result = Executor(doc, backends={"m": backend}).run("q")
    assert result.text == "hihihi"
    assert result.answer == "hi"


def test_entry_point_role_params_are_validated(installed_plugin: None) -> None:
    with pytest.raises(GraphErrors) as exc:
        compile_graph(loads_graph(GRAPH % 0, source="p.yaml"), backends=backend_names())
    assert str(exc.value) == "p.yaml:6: nodes.s.params.times: must be >= 1"


def test_unknown_role_without_plugin() -> None:
    with pytest.raises(GraphErrors) as exc:
        loads_graph(GRAPH % 3, source="p.yaml")
    assert str(exc.value).startswith("p.yaml:6: nodes.s.role: unknown role 'shout'")


def test_a_plugin_that_fails_to_load_is_reported_when_compiled(broken_plugin: None) -> None:
    # parsing reads the entry point's name only; compiling loads it and says what went wrong
    doc = loads_graph(GRAPH % 3, source="p.yaml")
    assert "shout_plugin" not in sys.modules
    with pytest.raises(TTSGraphError, match=r"role plugin 'shout' .* failed to load: broken"):
        compile_graph(doc, backends=backend_names())
