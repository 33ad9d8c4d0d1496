"""tts-graph compare on runs that are not alike: other tasks, scorers or splits, an unfinished
run, a run with nothing scored, and a directory that holds no run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tts_graph.evaluate.store import ResultStore, Row


def make_run(path: Path, *, task: str = "t", scorer: str = "numeric", split: str = "all",
             planned: int = 4, done: int = 4, correct: int = 2, infra: int = 0,
             first: int = 0, gold: str = "1") -> Path:
    store = ResultStore(path)
    store.bind({"graph_name": "g", "graph_sha": "0", "task": task, "scorer": scorer,
                "split": split, "seed": 0, "limit": None, "planned": planned}, resume=False)
    for i in range(done):
        bad = i >= done - infra
        store.write(Row(item_id=str(first + i), idx=i, question="q", gold=gold, answer="1",
                        text="1", correct=None if bad else i < correct,
                        status="error" if bad else "ok", error="down" if bad else None,
                        score_detail="", latency_s=0.1, prompt_tokens=1,
                        completion_tokens=1, cost_usd=0.0, billed_usd=0.0, flops=0.0,
                        calls=1, cached_calls=0, retries=0, usage_by_node={},
                        usage_by_model={}))
    return path


def compare(tmp_path: Path, *runs: Path, as_json: bool = False
            ) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "tts_graph", "compare", *map(str, runs),
            "--plot", str(tmp_path / "c.png"), *(["--json"] if as_json else [])]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def test_compare_says_which_runs_are_not_comparable(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", task="other", scorer="math", split="test")
    c = make_run(tmp_path / "c", planned=10, done=4)
    res = compare(tmp_path, a, b, c)
    assert res.returncode == 0, res.stderr
    assert "math" in res.stdout and "4/10" in res.stdout
    assert f"note: {c}: unfinished, 4 of 10 questions scored" in res.stderr
    assert "the runs differ in task, scorer, split" in res.stderr
    rows = json.loads(compare(tmp_path, a, c, as_json=True).stdout)
    assert [(r["scorer"], r["split"], r["finished"]) for r in rows] == [
        ("numeric", "all", True), ("numeric", "all", False)]
    # alike and finished: no note
    res = compare(tmp_path, a, make_run(tmp_path / "d"))
    assert res.returncode == 0 and "note:" not in res.stderr


def test_compare_run_with_nothing_scored_has_no_accuracy(tmp_path: Path) -> None:
    down = make_run(tmp_path / "down", done=3, infra=3)
    res = compare(tmp_path, down)
    assert res.returncode == 0, res.stderr
    assert "0.0%" not in res.stdout  # all infrastructure errors: not 0% accuracy
    assert "unfinished, 0 of 4 questions scored" in res.stderr


def test_compare_directory_without_a_run_is_one_line_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.sqlite").touch()
    res = compare(tmp_path, empty)
    assert res.returncode == 2
    assert res.stderr.strip() == f"{empty}: no run recorded in results.sqlite"


def test_compare_notices_runs_of_one_task_name_on_other_questions(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    shifted = make_run(tmp_path / "shifted", first=2)  # another file with the same name
    regold = make_run(tmp_path / "regold", gold="2")  # the file edited between the runs
    res = compare(tmp_path, a, shifted)
    assert "note: the runs answered other questions (2 in common)" in res.stderr
    res = compare(tmp_path, a, regold)
    assert "note: the gold answers differ on 4 of the questions the runs share" in res.stderr
    assert "note:" not in compare(tmp_path, a, make_run(tmp_path / "same")).stderr
