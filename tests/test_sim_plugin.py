"""Backends and tasks by name (``tts_graph.plugins``): a third party's backend and task,
installed the way users install one (a distribution declaring ``tts_graph.backends`` and
``tts_graph.tasks`` entry points), are found by name; so is the simulation; and the backend and
evaluate packages never import ``tts_graph.sim``, which sits above both."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tts_graph
from tts_graph import Executor, loads_graph, plugins
from tts_graph.backends.registry import backend_names, create_backend
from tts_graph.errors import TTSGraphError
from tts_graph.evaluate.tasks import TaskError, load_task, task_names
from tts_graph.sim import SimBackend, sim_task
from tts_graph.spec import ModelSpec

PLUGIN = '''
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.evaluate.scorers import get_scorer
from tts_graph.evaluate.tasks import Item, Task


def make_backend(spec, base_dir):
    return ScriptedBackend(lambda req, i: "Answer: 42", name="echo-" + spec.model)


def load(spec):
    n = int(spec.partition(":")[2] or 2)
    return Task(spec, [Item(f"e{i}", f"echo question {i}", "42") for i in range(n)],
                get_scorer("numeric"), "echo plugin task")


def shadow(spec, base_dir):
    raise AssertionError("a plugin must not replace a built-in backend")
'''

ENTRY_POINTS = """
[tts_graph.backends]
echo = echo_plugin:make_backend
sim = echo_plugin:shadow
broken = echo_plugin:no_such_factory

[tts_graph.tasks]
echo = echo_plugin:load
"""


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    sys.path.insert(0, str(tmp_path))
    plugins.refresh()
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("echo_plugin", None)
    plugins.refresh()


def test_entry_point_backend_and_task_are_found_by_name(installed_plugin: None) -> None:
    assert "echo" in backend_names() and "echo" in task_names()
    backend = create_backend(ModelSpec(backend="echo", model="m"))
    assert backend.info.identity == "scripted:echo-m"
    task = load_task("echo:3")
    assert [it.id for it in task.items] == ["e0", "e1", "e2"]
    assert task.description == "echo plugin task"
    # the plugin's backend runs graphs, and its task scores them
    doc = loads_graph("version: 1\nname: p\nmodels: {m: {backend: echo, model: m}}\n"
                      "nodes:\n  s: {role: solver, model: m}\noutput: s\n")
    ex = Executor(doc)
    results = [ex.run(it.question) for it in task.items]
    assert all(task.scorer.score(it, r.answer, r.text).correct
               for it, r in zip(task.items, results, strict=True))


def test_a_plugin_cannot_replace_a_builtin(installed_plugin: None) -> None:
    assert backend_names().count("sim") == 1
    assert isinstance(create_backend(ModelSpec(backend="sim", model="llama-1b")), SimBackend)


def test_a_broken_plugin_is_one_line_naming_it(installed_plugin: None) -> None:
    with pytest.raises(TTSGraphError) as err:
        create_backend(ModelSpec(backend="broken", model="m"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("tts_graph.backends plugin 'broken' (echo_plugin:no_such_factory) "
                          "failed to load: AttributeError")


def test_plugins_are_gone_once_uninstalled() -> None:
    plugins.refresh()
    assert "echo" not in backend_names() and "echo" not in task_names()


def test_the_simulation_is_found_by_name() -> None:
    from tts_graph.sim.backend import create_sim_backend
    from tts_graph.sim.task import sim_task_from_name

    assert plugins.load(plugins.BACKENDS, "sim") is create_sim_backend
    assert plugins.load(plugins.TASKS, "sim") is sim_task_from_name
    assert isinstance(create_backend(ModelSpec(backend="sim", model="llama-8b")), SimBackend)
    task = load_task("sim:5:3")
    assert [it.id for it in task.items] == [it.id for it in sim_task(5, 3).items]
    assert task.name == "sim:5:3"


def test_unknown_names_are_one_line_errors() -> None:
    with pytest.raises(TTSGraphError) as err:
        create_backend(ModelSpec(backend="nope", model="m"))
    assert str(err.value) == "unknown backend 'nope'"
    with pytest.raises(TaskError) as terr:
        load_task("nope")
    assert str(terr.value).startswith("unknown task 'nope': not a built-in (gsm8k, ")
    with pytest.raises(TaskError, match="task 'gsm8k' takes no arguments"):
        load_task("gsm8k:3")


# ------------------------------------------------------------------------------- the layers
PACKAGE = Path(tts_graph.__file__).parent


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports: module level, lazy and
    ``TYPE_CHECKING`` alike, relative imports resolved, ``from X import name`` counted as both
    ``X`` and ``X.name`` (it may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _imports_sim(names: set[str]) -> bool:
    return any(n == "tts_graph.sim" or n.startswith("tts_graph.sim.") for n in names)


def test_the_import_reader_sees_every_form() -> None:
    mod = "tts_graph.backends.registry"
    for line in ("from ..sim import backend", "from .. import sim", "import tts_graph.sim",
                 "from tts_graph.sim.task import sim_task",
                 "def f():\n    from ..sim.backend import create_sim_backend"):
        assert _imports_sim(imported_modules(line, mod)), line
    for line in ("from .. import plugins", "from ..evaluate import tasks",
                 "import tts_graph.simple"):
        assert not _imports_sim(imported_modules(line, mod)), line
    assert _imports_sim(imported_modules("from ..sim import x", "tts_graph.evaluate",
                                         is_package=True))


@pytest.mark.parametrize("package", ["backends", "evaluate"])
def test_nothing_below_the_simulation_imports_it(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files
    offenders = []
    for path in files:
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        if _imports_sim(imported_modules(path.read_text(), module, is_package)):
            offenders.append(str(rel))
    assert offenders == []


def test_registry_and_task_loader_do_not_load_the_simulation() -> None:
    code = ("import sys\n"
            "from tts_graph.backends.registry import backend_names, create_backend\n"
            "from tts_graph.evaluate.tasks import load_task, task_names\n"
            "from tts_graph.spec import ModelSpec\n"
            "assert 'sim' in backend_names() and 'sim' in task_names()\n"
            "create_backend(ModelSpec(backend='scripted', model='x'))\n"
            "load_task('easy')\n"
            "assert not any(m.startswith('tts_graph.sim') for m in sys.modules), 'loaded'\n"
            "load_task('sim:3')\n"
            "assert 'tts_graph.sim.task' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert done.returncode == 0, done.stderr
