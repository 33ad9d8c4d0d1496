"""The malformed-graph corpus: every file in tests/malformed/ has exactly one problem, and its
first line says the one-line error that ``tts-graph validate`` must print for it:

    # expect: LINE: path: message      (or ``# expect: message`` when there is no line)

``{roles}`` and ``{backends}`` stand for the lists of known roles and backends, so that a
newly registered one does not change every expectation.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tts_graph.backends.registry import backend_names
from tts_graph.compile import compile_graph
from tts_graph.errors import GraphError
from tts_graph.roles.registry import all_role_names
from tts_graph.spec import load_graph

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "malformed").glob("*.yaml"))
EXPECT = re.compile(r"# expect: (.+)")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def expected_line(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = EXPECT.fullmatch(first)
    assert m, f"{_rel(path)}: first line must be '# expect: LINE: path: message'"
    text = m.group(1)
    text = text.replace("{roles}", ", ".join(all_role_names()))
    text = text.replace("{backends}", ", ".join(sorted(backend_names())))
    sep = ":" if re.match(r"\d+: ", text) else ": "
    return f"{_rel(path)}{sep}{text}"


def validate_lines(rel: str) -> list[str]:
    """What ``tts-graph validate`` reports, done in-process."""
    try:
        compile_graph(load_graph(rel), backends=backend_names())
    except GraphError as exc:
        return exc.lines()
    return []


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 35


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_first_error_line(path: Path) -> None:
    lines = validate_lines(_rel(path))
    assert lines, "the graph was accepted"
    assert lines[0] == expected_line(path)
    for line in lines:
        assert "\n" not in line and "Traceback" not in line
    # each file has exactly one problem: no follow-on noise from it
    assert len(lines) == 1, lines


CLI_CASES = [
    "invalid_yaml",
    "empty_file",
    "duplicate_key",
    "unknown_top_field",
    "unknown_role",
    "samples_string",
    "cycle_three",
    "budget_too_small",
    "stray_brace",
    "unknown_backend",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tts_graph", "validate", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_validate(name: str) -> None:
    path = ROOT / "tests" / "malformed" / f"{name}.yaml"
    proc = _cli(_rel(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == expected_line(path)


def test_cli_validate_reports_every_file() -> None:
    paths = [ROOT / "tests" / "malformed" / f"{n}.yaml" for n in ("samples_zero", "cycle_two")]
    proc = _cli(*(_rel(p) for p in paths))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [expected_line(p) for p in paths]


def test_cli_missing_file() -> None:
    proc = _cli("tests/malformed/no_such_file.yaml")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == ["tests/malformed/no_such_file.yaml: file not found"]
