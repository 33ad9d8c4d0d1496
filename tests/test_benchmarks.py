"""Every benchmark's quick mode runs to the end and prints its tables (never its figures), so a
benchmark cannot rot unseen."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str, timeout: float = 120) -> str:
    """Run benchmarks/SCRIPT from the repo root (its _common puts this checkout first on
    sys.path); fail on a non-zero exit; return stdout."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def assert_printed(out: str, *needles: str) -> None:
    missing = [n for n in needles if n not in out]
    assert not missing, f"not printed: {missing}\n{out[-3000:]}"


def test_sim_calibration_quick() -> None:
    out = run_bench("sim_calibration.py", "--quick")
    assert_printed(out, "## Simulated backend calibration", "| configuration (simulated)",
                   "| Llama 70B, one sample", "| 3 × 3B → 3B judge", "| model     | L1")


def test_cache_replay_quick() -> None:
    out = run_bench("cache_replay.py", "--quick")
    assert_printed(out, "## Cache replay: 40 questions", "fill: 40 queries", "| replay",
                   "| in-process (Executor + arun_many)", "| shell (`tts-graph run --cache`",
                   "0 requests reached the server")


def test_eval_throughput_quick(tmp_path: Path) -> None:
    out = run_bench("eval_throughput.py", "--quick", "--keep", str(tmp_path / "runs"))
    assert_printed(out, "## tts-graph eval throughput", "| concurrency | questions",
                   "- concurrency 16: peak RSS", "- latency 5 ms")
    assert (tmp_path / "runs" / "c16-10" / "results.sqlite").exists()


def test_make_easy_set_reproduces_the_packaged_file(tmp_path: Path) -> None:
    out = run_bench("make_easy_set.py", "--out", str(tmp_path / "easy.jsonl"))
    assert_printed(out, "wrote 120 questions")
    # deterministic: the generator still writes the packaged file byte for byte
    assert filecmp.cmp(tmp_path / "easy.jsonl", ROOT / "tts_graph/data/easy_math.jsonl",
                       shallow=False)


def test_as_ready_quick() -> None:
    pytest.importorskip("langgraph", reason="the LangGraph peer is in the `bench` extra")
    out = run_bench("as_ready.py", "--quick")
    assert_printed(out, "## As-ready scheduling", "| executor", "| tts-graph", "| LangGraph",
                   "- goal tts-graph <= 1.05x critical path")


def test_executor_overhead_quick() -> None:
    pytest.importorskip("langgraph", reason="the LangGraph peer is in the `bench` extra")
    out = run_bench("executor_overhead.py", "--quick")
    assert_printed(out, "## Executor overhead", "| graph", "| chain", "| fan_out_5",
                   "| self_consistency_16 (LangGraph: gather)", "- goal ours <= 0.1x")


@pytest.mark.model
def test_embedded_table_quick() -> None:
    out = run_bench("embedded_table.py", "--quick")
    assert_printed(out, "## Embedded presets on the easy set", "| graph", "| single",
                   "| self_consistency")


@pytest.mark.model
def test_embedded_samples_quick() -> None:
    out = run_bench("embedded_samples.py", "--quick")
    assert_printed(out, "## Embedded samples", "| layout", "1 request, n=2",
                   "2 cold requests, n=1, sequential", "2 cold requests, n=1, concurrent",
                   "- goal batched <= 0.6x cold (2 inst x 1 thr")


@pytest.mark.model
def test_adaptive_width_quick() -> None:
    out = run_bench("adaptive_width.py", "--quick")
    assert_printed(out, "## Adaptive width", "| width", "| fixed", "- votes for the leading",
                   "Replay of stopping rules", "| settled, min 2")


def test_archon_import_rate_quick() -> None:
    out = run_bench("archon_import_rate.py", "--quick", "--show-refused")
    assert_printed(out, "## Archon import rate", "4 configs under quick/",
                   "| imported + validated       | 2", "| crashed                    | 0",
                   "refused pairrm.json: the PairRM reward-model ranker",
                   "refused broken.json: invalid JSON")
