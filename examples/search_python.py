"""A search from Python: which model and how many votes are worth their cost?

Two toy models stand in for a cheap and a strong LLM (a backend registered here, "toy": it
reads the sum out of the question and answers it right with a fixed probability per sample,
deterministically per question and seed, so runs reproduce). The search chooses the solver's
model and its number of samples for a self-consistency graph (sample, then majority vote),
scores accuracy against cost on search questions, keeps the Pareto front, writes each front
graph as a runnable YAML and re-scores it on held-out questions.

    python examples/search_python.py [--out runs/example-search] [--trials 10]

The same search file runs from the shell: tts-graph search OUT/search.yaml (with the toy
backend registered, that is: from Python). Real searches name real models in the base graph;
see searchers/*.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.registry import register_backend
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.search.driver import SearchSession
from tts_graph.spec import ModelSpec

BASE = """\
version: 1
name: toy_self_consistency
models:
  cheap:  {backend: toy, model: cheap, params: 1e9, options: {accuracy: 0.45},
           price: {input_per_mtok: 0.1, output_per_mtok: 0.4}}
  strong: {backend: toy, model: strong, params: 70e9, options: {accuracy: 0.85},
           price: {input_per_mtok: 3.0, output_per_mtok: 12.0}}
defaults: {max_tokens: 32, temperature: 0.7}
nodes:
  solve: {role: solver, model: cheap, samples: 1}
  vote: {role: vote, inputs: [solve]}
output: vote
"""

SEARCH = """\
version: 1
name: toy_search
base: base.yaml
task: {name: questions.jsonl, search_limit: 24, heldout_limit: 24}
choices:
  - {node: solve, field: model, values: [cheap, strong]}
  - {node: solve, field: samples, values: [1, 3, 5, 9]}
objectives: [accuracy, cost]
budget: {trials: TRIALS}
searcher: {name: optuna-motpe, seed: 0, options: {n_startup_trials: 4}}
pruning: {min_questions: 8, factor: 3}
concurrency: 8
"""


def toy_backend(spec: ModelSpec, base_dir: Path | None) -> ScriptedBackend:
    """A model that is right with probability ``options.accuracy`` per sample; when wrong, it
    is off by 1 to 4 (so wrong answers split their votes)."""
    accuracy = float(spec.options.get("accuracy", 0.5))

    def respond(request: GenerationRequest, i: int) -> str:
        prompt = request.messages[-1].content
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", prompt).groups())  # type: ignore[union-attr]
        digest = hashlib.sha256(f"{spec.model}|{prompt}|{request.seed + i}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        answer = a + b if u < accuracy else a + b + 1 + int(u * 1e6) % 4
        return f"{a} plus {b} makes {answer}. Answer: {answer}"

    return ScriptedBackend(respond, name=spec.model, params=spec.params)


def write_files(out: Path, trials: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "base.yaml").write_text(BASE)
    with (out / "questions.jsonl").open("w") as fh:
        for i in range(60):
            a, b = 7 * i % 50 + 3, 11 * i % 40 + 2
            fh.write(json.dumps({"id": f"q{i}", "question": f"What is {a} + {b}?",
                                 "answer": str(a + b)}) + "\n")
    path = out / "search.yaml"
    path.write_text(SEARCH.replace("TRIALS", str(trials)))
    return path


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example-search")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out / "study", ignore_errors=True)  # a fresh study each run
    register_backend("toy", toy_backend)
    session = SearchSession(write_files(out, args.trials), out_dir=out / "study")

    def on_trial(proposal: Any, result: Any) -> None:
        values = " ".join(f"{k}={v:.4g}" for k, v in result.values.items())
        print(f"trial {proposal.number}: {proposal.config} {result.state} {values}"
              + (f" ({result.reason})" if result.reason else ""))

    asyncio.run(session.run(on_trial))
    front = session.front()
    session.export(front)  # each front graph as a runnable YAML
    asyncio.run(session.rescore(front))  # held-out questions
    report = session.write_report(front)
    print(f"\nPareto front ({len(front)} graphs; accuracy up, cost per question down):")
    print(f"{'model':>7} {'samples':>7} {'acc (search)':>13} {'acc (held-out)':>15} "
          f"{'$ / question':>13}  graph")
    for e in front:
        print(f"{e.config['solve.model']:>7} {e.config['solve.samples']:>7} "
              f"{e.search['accuracy']:>13.1%} {e.heldout.get('accuracy', 0.0):>15.1%} "
              f"{e.search['cost']:>13.2e}  {e.graph_file}")
    print(f"report: {report}")
    session.close()
    return [e.__dict__ for e in front]


if __name__ == "__main__":
    main()
