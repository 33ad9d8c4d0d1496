"""The search-efficiency benchmark's quick mode runs end to end (small SIMULATED spaces), so
the benchmark cannot rot unseen. Its figures are not asserted: they are measurements."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_search_efficiency_quick_mode_prints_its_tables(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/search_efficiency.py", "--quick", "--heldout", "--jobs", "1",
         "--results", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for space in ("plan-solve-aggregate", "two-branches", "votes-agree"):
        assert f"### Space `{space}` (SIMULATED)" in out
        assert f"Goals on `{space}`" in out
    assert out.count("| searcher ") == 6  # a single-objective and a Pareto table per space
    for searcher in ("optuna-tpe", "agent-reinforce (flat prior)", "agent-reinforce+feedback"):
        assert f"| {searcher} " in out
    assert out.count("Selection under noise on ") == 3
    assert out.count("| best search score ") == 3
    # the exhaustive tables (search and held-out questions) were written where asked, not
    # into the repository
    assert len(list(tmp_path.glob("search_efficiency_table-*-quick-q40.json"))) == 3
    assert len(list(tmp_path.glob("search_efficiency_table-*-quick-q40-task1.json"))) == 3
