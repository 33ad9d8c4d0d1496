"""The response cache: per-sample keys, exact replay, partial hits, several writers, bad files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tts_graph import Executor, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.cache import CacheError, ResponseCache, sample_key
from tts_graph.types import Completion, Message

GRAPH = """
version: 1
name: sc
models: {m: {backend: scripted, model: x, price: {input_per_mtok: 1, output_per_mtok: 2}}}
defaults: {max_tokens: 32}
nodes:
  solve: {role: solver, model: m, samples: %d}
  vote: {role: vote, inputs: [solve]}
output: vote
"""


def counting_backend() -> ScriptedBackend:
    return ScriptedBackend(lambda req, i: f"seed {req.seed + i} Answer: {(req.seed + i) % 3}")


def test_sample_index_is_part_of_the_key() -> None:
    req = GenerationRequest((Message("user", "q"),), max_tokens=8, seed=0, n=4)
    keys = [sample_key("m", req, i) for i in range(4)]
    assert len(set(keys)) == 4
    # the same sample asked for alone has the same key as inside the batch
    single = GenerationRequest((Message("user", "q"),), max_tokens=8, seed=2, n=1,
                               sample_offset=2)
    assert sample_key("m", single, 0) == keys[2]
    other = GenerationRequest((Message("user", "q"),), max_tokens=9, seed=0, n=4)
    assert sample_key("m", other, 0) != keys[0]
    assert sample_key("other-model", req, 0) != keys[0]


def test_rerun_replays_exactly_and_bills_nothing(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    first_backend = counting_backend()
    first = Executor(loads_graph(GRAPH % 6), backends={"m": first_backend}, cache=cache).run("q")
    assert len(first_backend.requests) == 1
    assert first.usage.cached_calls == 0 and first.usage.billed_usd > 0

    second_backend = counting_backend()
    second = Executor(loads_graph(GRAPH % 6), backends={"m": second_backend},
                      cache=cache).run("q")
    assert second_backend.requests == []  # nothing sent
    assert [c.text for c in second.steps["solve"].candidates] == \
        [c.text for c in first.steps["solve"].candidates]
    assert len({c.text for c in second.steps["solve"].candidates}) == 6  # N answers, not one
    assert second.usage.cached_calls == second.usage.calls == 1
    assert second.usage.billed_usd == 0
    assert second.usage.tokens == first.usage.tokens
    assert second.answer == first.answer


def test_partial_hits_fetch_only_missing_samples(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    Executor(loads_graph(GRAPH % 3), backends={"m": counting_backend()}, cache=cache).run("q")
    backend = counting_backend()
    res = Executor(loads_graph(GRAPH % 8), backends={"m": backend}, cache=cache).run("q")
    assert [(r.n, r.seed, r.sample_offset) for r in backend.requests] == [(5, 3, 3)]
    assert [c.cached for c in res.calls] == [True, False]
    assert [c.samples for c in res.calls] == [3, 5]
    assert len(cache) == 8


def _writer(path: str, start: int) -> None:
    cache = ResponseCache(path)
    for i in range(start, start + 200):
        cache.put_many([(f"k{i}", Completion(f"t{i}", 1, 1))])


def test_concurrent_writers_from_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ResponseCache(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == 400  # overlapping keys written once
    assert cache.get_many(["k150"])["k150"].text == "t150"


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="not a usable SQLite file"):
        ResponseCache(bad)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(CacheError, match="not a tts-graph cache"):
        ResponseCache(foreign)
    with sqlite3.connect(foreign) as conn:  # nothing was changed in the user's file
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["users"]


def test_cli_reports_a_bad_cache_in_one_line(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH % 2)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 200)
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "run", str(graph), "-q", "x",
                           "--cache", str(bad)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"cache {bad}: not a usable SQLite file")
    assert "Traceback" not in proc.stderr


def test_cli_run_twice_with_cache_hits(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH % 4)
    cache = tmp_path / "c.sqlite"
    args = [sys.executable, "-m", "tts_graph", "run", str(graph), "-q", "x", "--json",
            "--cache", str(cache)]
    import json

    one = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    two = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    assert one["usage"]["cached_calls"] == 0
    assert two["usage"]["cached_calls"] == 1
    assert two["usage"]["billed_usd"] == 0
    assert one["answer"] == two["answer"]
