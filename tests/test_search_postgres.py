"""Distributed search: two ``tts-graph search --storage postgresql://... --worker N`` processes
share one Optuna study on a real PostgreSQL server.

.ci/run starts a throwaway server (Debian's ``postgresql``, a cluster in a temp directory on
127.0.0.1) and exports ``TTS_GRAPH_TEST_POSTGRES_URL``; without it this test skips.

What the driver guarantees, and this test checks: a study holds exactly the budgeted number
of evaluated trials however many workers share it (a worker that opened a trial past the
budget, having seen one slot left at the same moment as another, records that trial as failed
with ``over_budget`` and stops: at most workers - 1 such records), every trial number once,
no configuration proposed twice by random search (each worker samples with its own seed), and
every worker does part of the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from tts_graph.search.base import GRACE_S, HEARTBEAT_S, open_storage

URL = os.environ.get("TTS_GRAPH_TEST_POSTGRES_URL")

pytestmark = pytest.mark.skipif(
    not URL, reason="TTS_GRAPH_TEST_POSTGRES_URL is not set: .ci/run starts a throwaway "
    "PostgreSQL server (Debian's postgresql, installed with apt-get as root) and sets it")

BASE = """\
version: 1
name: toy
models:
  good: {backend: scripted, model: good, options: {answers: ["Answer: 42"], latency_s: 0.1}}
  bad: {backend: scripted, model: bad, options: {answers: ["Answer: 7"], latency_s: 0.1}}
defaults: {max_tokens: 32, temperature: 0.7}
nodes:
  solve: {role: solver, model: bad, samples: 1}
  vote: {role: vote, inputs: [solve]}
output: vote
"""

SEARCH = """\
version: 1
name: {name}
base: base.yaml
task: {{name: task.jsonl, search_limit: 6, heldout_limit: 2}}
choices:
  - {{node: solve, field: model, values: [good, bad]}}
  - {{node: solve, field: samples, values: [1, 2]}}
  - {{node: solve, field: temperature, float: [0.0, 1.0]}}
objectives: [accuracy, tokens]
budget: {{trials: {budget}}}
searcher: {{name: random, seed: 0}}
pruning: {{enabled: false}}
concurrency: 2
"""

WORKERS = 2
BUDGET = 16


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    assert URL is not None
    name = f"dist-{uuid.uuid4().hex[:8]}"  # a fresh study in a database that may hold others
    (tmp_path / "base.yaml").write_text(BASE)
    with (tmp_path / "task.jsonl").open("w") as f:
        for i in range(16):
            f.write(json.dumps({"id": f"q{i}", "question": f"What is {i} + {42 - i}?",
                                "answer": "42"}) + "\n")
    search = tmp_path / "search.yaml"
    search.write_text(SEARCH.format(name=name, budget=BUDGET))

    procs = [subprocess.Popen(
        [sys.executable, "-m", "tts_graph", "search", str(search), "--storage", URL,
         "--worker", str(w), "--out", str(tmp_path / f"worker{w}"), "--no-heldout", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(WORKERS)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        assert json.loads(out)["search"] == name

    # plain Optuna (as optuna-dashboard reads it), with the URL naming the installed driver:
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, 2.0 as psycopg2
    db = open_storage(URL)
    assert isinstance(db, optuna.storages.RDBStorage)
    assert db.url.startswith("postgresql+psycopg")
    assert db.heartbeat_interval == HEARTBEAT_S and db.grace_period == GRACE_S
    study = optuna.load_study(study_name=name, storage=db.url)
    trials = study.get_trials(deepcopy=False)
    evaluated = [t for t in trials if not t.user_attrs.get("over_budget")
                 and "repeat_of" not in t.user_attrs]  # (a float choice: no repeats here)
    over = [t for t in trials if t.user_attrs.get("over_budget")]
    assert len(evaluated) == BUDGET
    assert len(over) <= WORKERS - 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in evaluated)
    assert all(t.state == optuna.trial.TrialState.FAIL for t in over)
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    # the over-budget trial (if any) is the one opened last: the budget is the first trials
    assert sorted(t.number for t in evaluated) == list(range(BUDGET))
    configs = {json.dumps(t.params, sort_keys=True) for t in evaluated}
    assert len(configs) == BUDGET, "two workers proposed the same configuration"
    ran_by = {w: sum(1 for t in evaluated if t.user_attrs.get("worker") == w)
              for w in range(WORKERS)}
    assert all(n > 0 for n in ran_by.values()), ran_by
    assert sum(ran_by.values()) == BUDGET
    # each worker kept the results of the trials it ran, and only those
    for w in range(WORKERS):
        assert len(list((tmp_path / f"worker{w}" / "trials").iterdir())) == ran_by[w]

    # a worker started again on the finished search runs nothing and changes nothing
    again = subprocess.run(
        [sys.executable, "-m", "tts_graph", "search", str(search), "--storage", URL,
         "--worker", "2", "--out", str(tmp_path / "worker2"), "--no-heldout", "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name=name, storage=db).get_trials()) == len(trials)
