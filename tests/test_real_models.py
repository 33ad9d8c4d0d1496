"""End-to-end runs on the real embedded models (SmolLM2-135M-Instruct, Gemma-3-270M base)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tts_graph import Executor, load_graph, loads_graph

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "graphs").glob("*.yaml"))
QUESTION = "Sam has 12 apples and eats 5. How many apples are left?"


def test_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    for required in ("single", "self_consistency", "best_of_n_judge", "mixture_of_agents",
                     "debate", "plan_solve_verify", "refine_loop", "first_finish"):
        assert required in names


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_runs_end_to_end(path: Path) -> None:
    doc = load_graph(path)
    result = Executor(doc).run(QUESTION)
    assert result.status == "ok", result.error
    assert result.text, "the output node produced no text"
    assert result.calls, "no model call was made"
    usage = result.usage
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0
    for rec in result.calls:
        params = doc.spec.models[rec.model].params or {"smollm2-135m": 135e6,
                                                       "gemma3-270m": 268e6}[
            doc.spec.models[rec.model].model]
        assert rec.flops == pytest.approx(2 * params * (rec.prompt_tokens + rec.completion_tokens))
    for step_id in result.steps:
        assert result.steps[step_id].status == "ok"


def test_runs_reproduce_with_seeds() -> None:
    doc = load_graph(ROOT / "graphs" / "self_consistency.yaml")
    first = Executor(doc).run("What is 7 + 6?")
    second = Executor(doc).run("What is 7 + 6?")
    texts = [c.text for c in first.steps["solve"].candidates]
    assert texts == [c.text for c in second.steps["solve"].candidates]
    assert len(set(texts)) > 1, "8 samples at temperature 0.7 should not all be identical"


def test_first_finish_cancels_the_rest_on_llama() -> None:
    doc = load_graph(ROOT / "graphs" / "first_finish.yaml")
    result = Executor(doc).run(QUESTION)
    assert len(result.steps["race"].candidates) == 1
    # only finished samples are billed; cancelled ones never return a completion
    assert result.usage.samples == 1


def test_gemma_base_model_answers_in_completion_style() -> None:
    doc = loads_graph("""
version: 1
name: gemma
models: {base: {backend: local, model: gemma3-270m}}
defaults: {temperature: 0.0, max_tokens: 48}
nodes: {solve: {role: solver, model: base}}
output: solve
""")
    result = Executor(doc).run("What is 3 + 4?")
    assert result.status == "ok"
    assert "Answer:" in (result.text or "")
    assert result.answer == "7"


def test_token_budget_is_never_overrun_on_the_real_model() -> None:
    doc = loads_graph("""
version: 1
name: tight
models: {small: {backend: local, model: smollm2-135m}}
defaults: {max_tokens: 128}
nodes:
  solve: {role: solver, model: small, samples: 8}
  vote: {role: vote, inputs: [solve]}
output: vote
budget: {max_tokens_per_query: 400}
""")
    result = Executor(doc).run(QUESTION)
    assert result.usage.tokens <= 400
    assert result.answer is not None


def test_cli_run_prints_answer_and_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tts_graph", "run", str(ROOT / "graphs" / "single.yaml"),
         "-q", "What is 2 + 2?", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "ok"
    assert data["usage"]["calls"] == 1
    assert "Traceback" not in proc.stderr
