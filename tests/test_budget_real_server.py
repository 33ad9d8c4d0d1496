"""Budgets against a real BPE tokenizer: llama.cpp's OpenAI-compatible server (SmolLM2-135M,
see tests/servers.py) on loopback, behind a recording proxy, with ``backend: openai``.

The executor estimates a budgeted call's prompt tokens from what the server reported earlier
in the query (tts_graph/prompt_estimate.py): a quoted reply by its completion tokens, the rest
of a prompt by the counter times the ratio seen on earlier prompts. A real tokenizer
re-tokenizes a quoted reply at its edges and counts each prompt text at its own ratio; this
checks, query by query, that what the server itself reported (prompt + completion, summed over
the query's requests) stays within the cap.

Slow (a few hundred real completions): ``pytest -m slow tests/test_budget_real_server.py -s``;
``TTS_BUDGET_REAL_QUESTIONS=10`` for the figures in BENCHMARKS.md (3 questions by default).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from servers import RecordingProxy

from tts_graph import Executor, loads_graph

pytestmark = [pytest.mark.slow, pytest.mark.model]

QUESTIONS = [
    "What is 3 + 4?", "What is 12 - 5?", "What is 6 * 7?", "What is 81 / 9?",
    "What is 15 + 27?", "What is 100 - 36?", "What is 8 * 9?", "What is 2 + 2 * 3?",
    "How many legs do 3 cats have?", "What is half of 90?",
]
BUDGETS = (150, 300, 600)

#: the shapes of benchmarks/budget_use.py at this model's scale (replies of up to 24 tokens)
SHAPES: dict[str, tuple[str, str]] = {
    "solve_judge": ("""
  solve: {role: solver, model: a, samples: 8, max_tokens: 24}
  judge: {role: judge, model: a, inputs: [solve], mode: select, max_tokens: 24}
""", "judge"),
    "best_of_n_judge": ("""
  solve: {role: solver, model: a, samples: 4, max_tokens: 24}
  judge: {role: judge, model: a, inputs: [solve], mode: select, temperature: 0.0,
          max_tokens: 16}
""", "judge"),
    "mixture_of_agents": ("""
  propose_small: {role: solver, model: a, samples: 2, max_tokens: 24}
  propose_base: {role: solver, model: b, samples: 2, max_tokens: 24}
  fuse: {role: fuser, model: a, inputs: [propose_small, propose_base], samples: 2,
         max_tokens: 24}
  final: {role: fuser, model: a, inputs: [fuse], temperature: 0.2, max_tokens: 24}
""", "final"),
}


def graph(shape: str, base_url: str, budget: int) -> str:
    nodes, output = SHAPES[shape]
    entry = f"{{backend: openai, model: smollm2, api_base: '{base_url}'}}"
    return (f"version: 1\nname: {shape}\nmodels:\n  a: {entry}\n  b: {entry}\n"
            "defaults: {temperature: 0.8, seed: 7}\nnodes:" + nodes
            + f"output: {output}\nbudget: {{max_tokens_per_query: {budget}}}\n")


@pytest.fixture(scope="module")
def proxy(llama_server: Any) -> Any:
    with RecordingProxy(llama_server.base_url) as p:
        yield p


def test_server_reported_tokens_stay_within_the_cap(proxy: Any) -> None:
    n = int(os.environ.get("TTS_BUDGET_REAL_QUESTIONS", "3"))
    questions = QUESTIONS[:n]
    overruns: list[str] = []
    rows: list[str] = []
    for shape, (_, output) in SHAPES.items():
        for budget in BUDGETS:
            ex = Executor(loads_graph(graph(shape, proxy.base_url, budget)))
            worst, reached, spent = -budget, 0, 0
            for q in questions:
                before = len(proxy.chats())
                res = ex.run(q)
                assert not res.infra_errors, res.infra_errors
                chats = proxy.chats()[before:]
                assert all(e.status == 200 and e.response for e in chats)
                # the server's own figures, not the executor's records of them
                used = sum(e.response["usage"]["prompt_tokens"]
                           + e.response["usage"]["completion_tokens"] for e in chats)
                assert used == res.usage.tokens
                worst = max(worst, used - budget)
                spent += used
                reached += any(c.step == output and c.error is None for c in res.calls)
                if used > budget:
                    overruns.append(f"{shape} B={budget} {q!r}: {used} > {budget}")
            rows.append(f"{shape:18} B={budget:4}: {len(questions)} queries, "
                        f"spent {spent / (budget * len(questions)):.0%}, output reached "
                        f"{reached}/{len(questions)}, worst excess {worst:+d}")
    print("\n" + "\n".join(rows))
    assert not overruns, "\n".join(overruns)
