"""benchmarks/budget_use.py --quick completes and prints its table (figures are not checked
here: they are the benchmark's to report)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_budget_use_quick_prints_its_table() -> None:
    pytest.importorskip("litellm")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "budget_use.py"),
                           "--quick"], capture_output=True, text=True, timeout=300,
                          check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| backend"))
    rows = [ln.split("|")[1:-1] for ln in lines[head + 2:] if ln.startswith("|")]
    shapes = {"solve_judge", "best_of_n_judge", "mixture_of_agents"}
    # every shape at every budget, on both backends (the simulated one goes to 30,000)
    assert len(rows) == 3 * 4 + 3 * 5
    assert {r[1].strip() for r in rows} == shapes
    assert {r[0].strip() for r in rows} == {"loopback", "SIMULATED"}
    assert {r[2].strip() for r in rows} == {"300", "1,000", "3,000", "10,000", "30,000"}
    overruns = [r[-2].strip() for r in rows]
    assert all(o.isdigit() for o in overruns)
