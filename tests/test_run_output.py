"""What ``tts-graph run`` prints: the vote counts behind an answer, how one sample did, and
tables that fit 80 columns (compact numbers, short headers, names wrapped, never cut)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tts_graph import compact

ROOT = Path(__file__).resolve().parent.parent
LONG = "a_solver_node_whose_name_is_far_too_long_for_one_column_of_an_eighty_column_table"
GRAPH = f"""\
version: 1
name: scripted-votes
models:
  m: {{backend: scripted, model: fake, options: {{answers: ["So 5.\\nAnswer: 5", "Answer: 4",
      "Answer: 4", ""]}}}}
nodes:
  {LONG}: {{role: solver, model: m, samples: 4}}
  vote: {{role: vote, inputs: [{LONG}]}}
output: vote
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False, env=env)


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (7, "7"), (1136, "1136"), (9999, "9999"), (10_000, "10k"), (68_512, "68.5k"),
    (999_999, "1M"), (6.85e11, "685G"), (1.234e15, "1.23P"), (2.5, "2.5"), (-12_345, "-12.3k"),
])
def test_compact_counts(value: float, text: str) -> None:
    assert compact.count(value) == text
    assert len(compact.count(value)) <= 6


def test_compact_dollars_and_seconds() -> None:
    assert [compact.usd(x) for x in (0, 0.000123, 0.0456, 1.5, 12.34, 1234.5)] == [
        "0", "0.00012", "0.046", "1.5", "12", "1234"]
    assert [compact.seconds(x) for x in (0.04, 3.52, 99.9, 1234)] == ["0.0", "3.5", "99.9",
                                                                     "1234"]


def test_run_shows_the_votes_and_one_sample_and_fits_80_columns(tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    g.write_text(GRAPH)
    proc = run("run", str(g), "-q", "What is 2 + 2?")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == "votes: 4 ×2, 5 ×1, no answer ×1 (4 samples)"
    assert lines[2] == "one sample alone: sample 1 answered 5; 2 of 4 samples answered 4"
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in proc.stdout  # nothing is cut
    # the long node name is wrapped inside its column, all of it still there
    assert LONG in "".join(line.split()[0] if line.split() else "" for line in lines)
    header = next(line for line in lines if line.split()[:1] == ["node"])
    assert header.split() == ["node", "calls", "cached", "samples", "prompt", "output", "sec",
                              "$", "FLOPs"]


def test_run_many_summary_fits_80_columns(tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    g.write_text(GRAPH)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What is 2 + 2?"}\n{"question": "And 3 + 1?"}\n')
    proc = run("run", str(g), "--input", str(questions))
    assert proc.returncode == 0, proc.stderr
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    assert "…" not in proc.stdout
    assert proc.stdout.split()[:2] == ["2", "queries"]
