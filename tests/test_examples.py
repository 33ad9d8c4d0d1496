"""Every example in examples/ runs as `python examples/NAME.py` (the ones on the embedded model
are marked `model` and keep their answers short)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tts_graph import Graph
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def example(name: str, *args: str, cwd: Path = ROOT, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_test() -> None:
    tested = {"in_process.py", "fastapi_app.py", "batch_jsonl.py", "serve_openai.py",
              "search_python.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


# ------------------------------------------------------------------------ in-process


@pytest.mark.model
def test_in_process_on_the_embedded_model() -> None:
    proc = example("in_process.py", "What is 2 + 3?")
    out = proc.stdout
    assert "Graph('self_consistency_small', nodes=['solve', 'vote'], output='vote')" in out
    assert "answer:" in out and "(status ok" in out
    votes = next(line for line in out.splitlines() if line.startswith("votes:"))
    assert votes.count(",") == 3  # 4 samples
    assert "solve: 1 calls, 4 samples" in out


# --------------------------------------------------------------------------- FastAPI

SCRIPTED = """\
version: 1
name: scripted
models:
  m: {backend: scripted, model: fake, options: {answers: ["6 times 7 is 42. Answer: 42"]}}
nodes:
  solve: {role: solver, model: m, samples: 3}
  vote: {role: vote, inputs: [solve]}
output: vote
"""


async def _posts(app: Any, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST each body to the app's /ask in turn, through its lifespan (httpx's own ASGI
    transport: starlette's TestClient is deprecated)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/ask", json=b) for b in bodies]


async def test_fastapi_app_answers_on_its_own_route() -> None:
    module = load("fastapi_app.py")
    r, empty, missing = await _posts(module.create_app(Graph.from_string(SCRIPTED)), [
        {"question": "What is 6 * 7?"}, {"question": ""}, {}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "42" and body["status"] == "ok"
    assert body["text"] == "6 times 7 is 42. Answer: 42"
    assert body["tokens"] > 0 and body["latency_s"] >= 0
    assert empty.status_code == 422 and missing.status_code == 422


async def test_fastapi_app_turns_a_backend_failure_into_502() -> None:
    def fail(req: object, i: int) -> str:
        raise BackendError("upstream down")

    module = load("fastapi_app.py")
    graph = Graph.from_string(SCRIPTED, backends={"m": ScriptedBackend(fail)})
    (r,) = await _posts(module.create_app(graph), [{"question": "What is 6 * 7?"}])
    assert r.status_code == 502
    assert r.json() == {"detail": "the model backend failed; try again"}


async def test_fastapi_app_runs_requests_concurrently() -> None:
    module = load("fastapi_app.py")
    slow = ScriptedBackend(lambda req, i: "Answer: 1", latency=0.3)
    graph = Graph.from_string(SCRIPTED, backends={"m": slow})
    app = module.create_app(graph)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            import asyncio

            t0 = time.perf_counter()
            replies = await asyncio.gather(*(client.post("/ask", json={"question": f"q{i}"})
                                             for i in range(8)))
            elapsed = time.perf_counter() - t0
    assert all(r.status_code == 200 and r.json()["answer"] == "1" for r in replies)
    assert elapsed < 8 * 0.3 / 2  # overlapped, not one after the other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.model
def test_fastapi_app_as_a_script_on_the_embedded_model(tmp_path: Path) -> None:
    graph = tmp_path / "short.yaml"  # single.yaml with short answers
    graph.write_text((ROOT / "graphs" / "single.yaml").read_text()
                     .replace("max_tokens: 128", "max_tokens: 24"))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "fastapi_app.py"), "--graph",
                             str(graph), "--port", str(port)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/ask",
                               json={"question": "What is 2 + 3?"}, timeout=120)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the example app did not start"
                time.sleep(0.3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok" and body["text"] and body["tokens"] > 0
    finally:
        proc.terminate()
        proc.wait(15)


# ----------------------------------------------------------------------------- batch


@pytest.mark.model
def test_batch_over_a_jsonl_file_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = example("batch_jsonl.py", str(EXAMPLES / "questions.jsonl"), str(out),
                   "--max-tokens", "24", "--concurrency", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in
           (EXAMPLES / "questions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["status"] == "ok" and r["text"] for r in rows)
    assert all(r["tokens"] > 0 for r in rows)
    assert f"4 questions, 4 ok, {sum(r['tokens'] for r in rows)} tokens" in proc.stdout


def test_batch_helpers_cap_tokens_everywhere(tmp_path: Path) -> None:
    module = load("batch_jsonl.py")
    g = module.load_graph(ROOT / "graphs" / "best_of_n_judge.yaml", 16)
    assert g.spec.defaults.max_tokens == 16
    assert all(n.max_tokens is None for n in g.spec.nodes.values())
    f = tmp_path / "q.jsonl"
    f.write_text('"plain string"\n\n{"question": "with id", "id": 7}\n{"question": "no id"}\n')
    assert module.read_questions(f) == [("1", "plain string"), ("7", "with id"),
                                        ("4", "no id")]


# ------------------------------------------------------------------------ serve + openai


def _has_serve() -> bool:
    from tts_graph.cli import app

    return any(c.name == "serve" or (c.callback and c.callback.__name__ == "serve")
               for c in app.registered_commands)


@pytest.mark.model
@pytest.mark.skipif(not _has_serve(), reason="tts-graph serve is not in this version yet")
def test_serve_called_with_the_openai_client() -> None:
    proc = example("serve_openai.py", "What is 2 + 3?")
    out = proc.stdout
    assert "models: ['single']" in out
    assert "answer: '" in out and "streamed: " in out
    chunks = int(re.search(r"streamed in (\d+) chunks", out).group(1))
    assert chunks > 1  # single.yaml's solver streams token by token
    assert "tts_graph: status ok" in out and "nodes ['solve']" in out
    usage = next(line for line in out.splitlines() if line.startswith("usage:"))
    assert int(usage.split()[1]) > 0


# ---------------------------------------------------------------------------- search


def test_search_from_python(tmp_path: Path) -> None:
    out = tmp_path / "search"
    proc = example("search_python.py", "--out", str(out), "--trials", "6", timeout=180)
    assert "Pareto front (" in proc.stdout
    report = json.loads((out / "study" / "front.json").read_text())
    front = report["front"]
    assert front and report["objectives"] == ["accuracy", "cost"]
    # a Pareto front: sorted by accuracy, and a more accurate graph costs more
    accs = [e["search"]["accuracy"] for e in front]
    costs = [e["search"]["cost"] for e in front]
    assert accs == sorted(accs, reverse=True)
    assert costs == sorted(costs, reverse=True)
    assert all(e["heldout"] and Path(e["graph_file"]).exists() for e in front)
    trials = [line for line in proc.stdout.splitlines() if line.startswith("trial ")]
    # six evaluated; a configuration proposed again is told its earlier outcome, not run
    assert len([t for t in trials if "not run again" not in t]) == 6
