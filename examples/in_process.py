"""Call a graph from your own Python code, in-process (no server).

Loads the self-consistency preset, makes a cheaper variant of it in Python (4 samples of at
most 48 tokens instead of 8 of 128: the same validation as a YAML file), runs it on the
embedded SmolLM2 model and prints the answer, the votes and the usage per node.

    python examples/in_process.py ["Sam has 12 apples and eats 5. How many are left?"]
"""

from __future__ import annotations

import sys
from pathlib import Path

from tts_graph import Graph

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
QUESTION = "Sam has 12 apples and eats 5. How many apples are left?"


def build_graph() -> Graph:
    preset = Graph.from_yaml(GRAPHS / "self_consistency.yaml")
    data = preset.to_dict()  # plain data, the shape of the YAML file
    data["name"] = "self_consistency_small"
    data["nodes"]["solve"]["samples"] = 4
    data["defaults"]["max_tokens"] = 48
    return Graph.from_dict(data, base_dir=GRAPHS)


def main(question: str = QUESTION) -> None:
    graph = build_graph()
    print(graph)
    result = graph.run(question)  # blocking; use `await graph.arun(...)` inside async code
    print(f"question: {question}")
    print(f"answer:   {result.answer}   (status {result.status}, {result.latency_s:.2f} s)")
    print("votes:   ", [c.answer for c in result.steps["solve"].candidates])
    for node, usage in result.usage_by_node().items():
        print(f"  {node}: {usage.calls} calls, {usage.samples} samples, "
              f"{usage.prompt_tokens}+{usage.completion_tokens} tokens")
    total = result.usage
    print(f"total: {total.tokens} tokens, ${total.cost_usd:.6f}, {total.flops:.3g} FLOPs")


if __name__ == "__main__":
    main(*sys.argv[1:2])
