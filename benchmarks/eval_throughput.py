"""Throughput and memory of `tts-graph eval` against a loopback server with a fixed latency.

A self-consistency@8 graph (``solver`` with 8 samples → ``vote``) on ``backend: litellm``,
``model: openai/fault``, ``api_base`` = the fault server (tts_graph.testing, no faults, its
own process), evaluated with the real command line as a subprocess::

    tts-graph eval GRAPH --task gsm8k [--limit 100] --concurrency K --no-cache --out DIR

over the full GSM8K test set (1,319 questions) and over 100 questions, for each concurrency.

- calls: what the server answered during the run (``fault_stats``). The server honours ``n``,
  so the 8 samples of a question are one call.
- ideal = calls × latency / concurrency.
- run wall: from the server's first request (its /stats polled every 5 ms until one arrives)
  to the last result written to the store (``finished_at``): the eval loop itself. process
  wall: the whole subprocess, Python start-up, imports and the summary included.
- client CPU (run): the eval process's CPU seconds (/proc/PID/stat at the first request,
  ``wait4`` at exit) over the run wall, and per call.
- peak RSS: the eval process's ``ru_maxrss`` from ``os.wait4`` (the kernel's high-water mark
  of that one process). client CPU: its user + system time over the process wall.

    .venv/bin/python benchmarks/eval_throughput.py [--concurrency 16,64] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import ROOT, print_header, table

from tts_graph.testing import FaultConfig, fault_stats, spawn_fault_server

GRAPH = """
version: 1
name: sc8_fault
models:
  m: {{backend: litellm, model: openai/fault, api_base: "{url}/v1", timeout_s: 60}}
defaults: {{max_tokens: 64, temperature: 0.7}}
nodes:
  solve: {{role: solver, model: m, samples: 8}}
  vote: {{role: vote, inputs: [solve]}}
output: vote
"""


def _reset(url: str) -> None:
    import httpx

    httpx.post(f"{url}/reset", timeout=10.0).raise_for_status()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _watch_first_request(url: str, pid: int, stop: threading.Event,
                         out: list[float]) -> None:
    """Time of the server's first request (polled every 5 ms, then the thread stops) and the
    eval process's CPU seconds at that moment."""
    while not stop.is_set():
        if fault_stats(url, keys=False)["requests"] > 0:
            out.extend([time.time() - 0.0025, _cpu_s(pid)])  # mid polling interval
            return
        time.sleep(0.005)


def run_eval(url: str, graph: Path, out: Path, limit: int | None, c: int,
             latency: float, extra: list[str]) -> dict[str, float]:
    _reset(url)
    exe = Path(sys.executable).with_name("tts-graph")
    cmd = [str(exe), "eval", str(graph), "--task", "gsm8k", "--concurrency", str(c),
           "--no-cache", "--out", str(out), "--json", *extra]
    if limit is not None:
        cmd[5:5] = ["--limit", str(limit)]
    first: list[float] = []
    stop = threading.Event()
    log = (out.parent / f"{out.name}.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    watcher = threading.Thread(target=_watch_first_request, args=(url, proc.pid, stop, first),
                               daemon=True)
    watcher.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    watcher.join()
    log.close()
    if proc.returncode != 0:
        raise SystemExit(f"eval failed ({proc.returncode}): see {log.name}")
    stats = fault_stats(url, keys=False)
    with sqlite3.connect(out / "results.sqlite") as db:
        n, errors, last = db.execute(
            "SELECT COUNT(*), SUM(status = 'error'), MAX(finished_at) FROM results").fetchone()
    run_wall = last - first[0]
    calls = stats["answered"]
    ideal = calls * latency / c
    cpu = ru.ru_utime + ru.ru_stime
    return {"run_cpu": cpu - first[1], "questions": n, "errors": errors or 0, "calls": calls,
            "wall": wall,
            "run_wall": run_wall, "ideal": ideal, "rss_mb": ru.ru_maxrss / 1024,
            "cpu": cpu, "peak_in_flight": stats["peak_in_flight"],
            "server_cpu": stats["process_cpu_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="16,64",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--limits", default="100,all",
                   type=lambda s: [None if x == "all" else int(x) for x in s.split(",")])
    p.add_argument("--keep", default=None, help="keep the run directories here")
    p.add_argument("--eval-arg", action="append", default=[], help="passed to tts-graph eval")
    p.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    a = p.parse_args()
    if a.quick:  # two limits so the RSS comparison lines print too
        a.concurrency, a.limits, a.latency_ms = [16], [5, 10], 5.0
    print_header(f"tts-graph eval throughput against a {a.latency_ms:g} ms loopback server")
    latency = a.latency_ms / 1000.0
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="eval-tput-"))
    base.mkdir(parents=True, exist_ok=True)
    rows, res = [], {}
    with spawn_fault_server(FaultConfig(latency_ms=a.latency_ms)) as url:
        graph = base / "sc8_fault.yaml"
        graph.write_text(GRAPH.format(url=url))
        for c in a.concurrency:
            for limit in a.limits:
                tag = f"c{c}-{limit or 'all'}"
                s0 = fault_stats(url, keys=False)["process_cpu_s"]
                r = run_eval(url, graph, base / tag, limit, c, latency, a.eval_arg)
                r["server_cpu"] -= s0
                res[(c, limit)] = r
                print(f"  {tag}: {r['questions']} q, {r['calls']} calls, run "
                      f"{r['run_wall']:.2f} s (ideal {r['ideal']:.2f}), process "
                      f"{r['wall']:.2f} s, peak RSS {r['rss_mb']:.0f} MB", flush=True)
                calls = max(1, r["calls"])
                rows.append([
                    c, r["questions"], r["calls"], f"{r['ideal']:.2f}", f"{r['run_wall']:.2f}",
                    f"{r['ideal'] / r['run_wall']:.2f}", f"{r['wall']:.2f}",
                    f"{r['ideal'] / r['wall']:.2f}", r["peak_in_flight"],
                    f"{r['run_cpu'] / r['run_wall']:.0%}", f"{r['run_cpu'] / calls * 1e3:.1f}",
                    f"{r['server_cpu'] / r['wall']:.0%}",
                    f"{r['rss_mb']:.0f}", r["errors"],
                ])
    print()
    print(table(["concurrency", "questions", "calls", "ideal s", "run wall s",
                 "achieved/ideal (run)", "process wall s", "achieved/ideal (process)",
                 "peak in flight", "client CPU (run)", "client CPU ms/call (run)",
                 "server CPU", "peak RSS MB", "infra errors"],
                rows))
    print()
    small, full = (min(a.limits, key=lambda x: x or 10**9),
                   max(a.limits, key=lambda x: x or 10**9))
    if small != full:
        for c in a.concurrency:
            rs, rf = res[(c, small)], res[(c, full)]
            print(f"- concurrency {c}: peak RSS {rf['questions']} q / {rs['questions']} q = "
                  f"{rf['rss_mb']:.0f} / {rs['rss_mb']:.0f} MB = "
                  f"{rf['rss_mb'] / rs['rss_mb']:.2f}× (goal ≤ 1.2×); achieved/ideal "
                  f"{rf['ideal'] / rf['run_wall']:.2f} (goal ≥ 0.9)")
    print(f"- latency {a.latency_ms:g} ms, no faults; ideal = calls × latency / concurrency; "
          "client CPU (run) = the eval process's CPU time during the run wall / the run wall "
          "(100% = one core); server CPU = the server's CPU time / the process wall")


if __name__ == "__main__":
    main()
