"""benchmarks/throughput.py --quick completes and prints both of its tables (timings are
the machine's, not checked here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_throughput_benchmark_prints_its_tables() -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| c | calls | ideal/s | raw aiohttp/s" in out
    assert "openai CPU ms/call | server CPU (raw) | server CPU (openai) |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| 1 ", "| 8 "))]
    assert len(rows) == 2
    assert "| backend | workers |" in out
    for side in ("| litellm | 1 ", "| openai  | 1 ", "| openai  | 2 "):
        assert side in out, out
    # every question scored, and the server answered each one once per run
    assert out.count("| 40     | 40              | 40/40 ") == 3, out
    assert "| questions/s once running | speed-up once running |" in out


def test_quick_layers_mode_times_each_layer() -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick", "--layers",
                           "--gc-freeze"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| c "))
    for side in ("raw", "backend", "binding", "executor", "arun"):
        assert f"{side}/s (÷raw)" in header and f"{side} CPU ms/call" in header, header
    rows = [line for line in out.splitlines() if line.startswith(("| 1 ", "| 8 "))]
    assert len(rows) == 2
    assert "collector set up as eval's (--gc-freeze): yes" in out
    assert "| backend | workers |" not in out  # the layers replace the other tables


def test_quick_eval_scoring_mode_runs_math_scored_questions_on_workers() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick",
                           "--eval-scoring", "math"], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| round "))
    assert "| workers | start |" in header and "÷ linear up to the cores" in header
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in out.splitlines() if line.startswith("| 1 ")]
    rows = [r for r in cells if len(r) == 17]
    assert [(r[1], r[2]) for r in rows] == [("1", "-"), ("2", "fork"), ("2", "spawn")], out
    for r in rows:  # every question scored, answered once by the server, scored the same
        assert r[4:7] == ["40", "40", "40/40"], r
    assert "÷ linear once running" in header and rows[0][12] == "1.00", out
    # the cores' own parallel speed-up, measured in the same round
    assert "| round | CPU loop, 1 process: wall s |" in out
    assert len([r for r in cells if len(r) == 6]) == 1, out
    assert "| backend | workers |" not in out  # this mode replaces the other tables


def test_quick_overhead_mode_times_tts_graphs_own_cpu_without_a_server() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick", "--overhead"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| c "))
    for side in ("floor", "backend", "binding", "executor"):
        assert f"{side} CPU us/call" in header, header
    assert "executor − binding" in header
    rows = [line for line in out.splitlines() if line.startswith(("| 1 ", "| 8 "))]
    assert len(rows) == 2
    # every figure is a measured number of microseconds
    assert all(cell.strip().lstrip("-").isdigit() for row in rows
               for cell in row.strip("|").split("|")), rows
    assert "no HTTP, no server" in out


def test_quick_sync_mode_compares_blocking_runs() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick", "--sync",
                           "--latency-ms", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| blocking calls"))
    assert "| queries " in header and "| ms a query " in header and "connections" in header
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "(" in line}
    assert set(rows) == {"asyncio.run a query (before)", "Graph.run (shared loop)",
                         "arun in one loop (floor)"}, out
    # connections opened are counted by the server, not timed: a new one per asyncio.run
    assert rows["asyncio.run a query (before)"][4] == "20"
    assert rows["Graph.run (shared loop)"][4] in ("0", "1")


def test_quick_overhead_mode_with_a_long_reply() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick", "--overhead",
                           "--sides", "executor", "--reply-chars", "1400"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| c "))
    assert "executor CPU us/call" in header and "binding CPU" not in header, header
    reply = int(proc.stdout.split("with a reply of ")[1].split()[0])
    assert 1300 <= reply <= 1500, reply
