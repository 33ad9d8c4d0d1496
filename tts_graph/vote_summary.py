"""What ``tts-graph run -q`` prints under the answer of a graph that ends in a vote: the
counts behind the answer, and what one sample alone would have answered, so a reader sees
whether sampling more helped on this question."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compile import CompiledGraph
    from .executor import QueryResult


def vote_lines(result: QueryResult, graph: CompiledGraph) -> list[str]:
    """Two lines when the output node is a vote (none otherwise)."""
    spec = graph.spec
    out = result.steps.get(spec.output)
    votes = out.meta.get("votes") if out is not None else None
    if not votes:
        return []
    voters = int(out.meta.get("voters", 0))
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])  # stable: ties keep vote order
    parts = [f"{answer} ×{weight:g}" for answer, weight in ranked]
    unanswered = voters - len([c for c in _voters(result, graph) if c.answer is not None])
    if unanswered > 0:
        parts.append(f"no answer ×{unanswered}")
    lines = [f"votes: {', '.join(parts)} ({voters} samples)"]
    cands = _voters(result, graph)
    if cands:
        leader = ranked[0][0]
        first = cands[0].answer if cands[0].answer is not None else "no answer"
        agree = sum(1 for c in cands if c.answer == leader)
        lines.append(f"one sample alone: sample 1 answered {first}; {agree} of {len(cands)} "
                     f"samples answered {leader}")
    return lines


def _voters(result: QueryResult, graph: CompiledGraph) -> list:  # type: ignore[type-arg]
    """The candidates the vote counted, in sample order."""
    node = graph.spec.nodes[graph.spec.output]
    cands = []
    for name in node.inputs:
        step = result.steps.get(name)
        if step is not None and step.kind == "answer":
            cands.extend(step.candidates)
    return cands
