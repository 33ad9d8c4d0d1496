"""Helpers shared by the benchmark scripts: machine description, statistics, tables, data."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- machine: {cores} cores, CPU {cpu_model()}, {platform.system()} {platform.machine()}",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
        "- command: `" + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]) + "`",
    ]


def print_header(title: str) -> None:
    print(f"## {title}\n")
    for line in machine_lines():
        print(line)
    print(flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


from tts_graph.evaluate.summary import wilson  # noqa: E402  (one Wilson interval)


def fmt_acc(successes: int, n: int) -> str:
    lo, hi = wilson(successes, n)
    return f"{successes}/{n} = {successes / n:.1%} [{lo:.1%}, {hi:.1%}]" if n else "n/a"


def load_easy(limit: int | None = None) -> list[dict[str, str]]:
    """The packaged easy arithmetic set (tts_graph/data/easy_math.jsonl)."""
    text = (resources.files("tts_graph") / "data" / "easy_math.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[:limit] if limit is not None else rows


def is_correct(answer: str | None, gold: str) -> bool:
    """Numeric comparison after the project's own normalization ("24.0" == "24")."""
    from tts_graph.answers import normalize_number

    if answer is None:
        return False
    return (normalize_number(answer) or answer.strip()) == (normalize_number(gold) or gold)


async def run_on_set(executor: object, rows: list[dict[str, str]], concurrency: int,
                     progress: str = "") -> tuple[list[object], float]:
    """Run ``executor`` (a tts_graph Executor) on the rows' questions; (results, wall s)."""
    import time

    done = [0]

    def tick(_: object) -> None:
        done[0] += 1
        if progress and (done[0] % 10 == 0 or done[0] == len(rows)):
            print(f"  {progress}: {done[0]}/{len(rows)}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results = await executor.arun_many(  # type: ignore[attr-defined]
        [r["question"] for r in rows], concurrency=concurrency, on_result=tick)
    return results, time.perf_counter() - t0
