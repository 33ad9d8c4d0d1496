"""``tts-graph validate``, ``show`` and ``schema``: check, draw and describe graph files offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import GraphErrors, TTSGraphError
from .common import _compile, _fail, err, out

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts fast
    from ..compile import CompiledGraph


def validate(graphs: Annotated[list[Path], typer.Argument(help="graph files")]) -> None:
    """Check graph files; print one line per problem (exit 2 if any)."""
    from ..backends.registry import backend_names
    from ..compile import compile_graph
    from ..model_checks import check_models
    from ..spec import load_graph

    problems: list[str] = []
    for path in graphs:
        try:
            g = compile_graph(load_graph(path), backends=backend_names())
        except GraphErrors as exc:
            problems.extend(exc.lines())
            continue
        except TTSGraphError as exc:
            problems.append(str(exc))
            continue
        checked = check_models(g.doc)
        for w in checked.warnings:  # the key may be set where the graph runs: not an error
            err.print(f"{w} (warning: set it where the graph runs)", markup=False,
                      highlight=False, soft_wrap=True)
        if checked.errors:
            problems.extend(checked.lines(warnings_fatal=False))
            continue
        out.print(f"ok: {path} ({len(g.spec.nodes)} nodes, {len(g.steps)} steps)",
                  markup=False, highlight=False)
        for note in (_budget_note(g), *_uncounted_caps(g)):
            if note:
                out.print(f"warning: {path}: {note}", markup=False, highlight=False,
                          soft_wrap=True)
    if problems:
        raise _fail(problems)


def _budget_note(graph: CompiledGraph) -> str | None:
    """Why no plan of the whole graph fits its declared budget, or None when one does."""
    from ..budget_plan import narrowest_need, plan_budget_fits

    if plan_budget_fits(graph) is not False:
        return None
    need = narrowest_need(graph)
    assert need is not None
    b = graph.spec.budget
    parts = [f"{label} {cap:g} < {used:g}" for label, cap, used in (
        ("max_tokens_per_query", b.max_tokens_per_query, need.tokens),
        ("max_cost_usd_per_query", b.max_cost_usd_per_query, need.cost),
        ("max_flops_per_query", b.max_flops_per_query, need.flops)) if cap is not None
        and used > cap]
    return ("budget: no plan of the whole graph fits (its narrowest worst case, prompts "
            f"counted at about 3 characters a token: {', '.join(parts)}); calls will only be "
            "guarded, and later steps, the output among them, may not run")


#: backends that report a model's price and parameter count themselves (local models are
#: free; the simulated ones carry both in their profiles)
SELF_COSTED = {"local", "sim"}


def _uncounted_caps(graph: CompiledGraph) -> list[str]:
    """A cost or FLOPs cap that some model's calls would not count against: no price declared
    (nor in litellm's cost map) or no ``params``, so the cap silently lets its calls through."""
    from ..backends.pricing import mapped_price

    b = graph.spec.budget
    used = sorted({m for step in graph.steps.values() for m in step.models})
    models = {n: graph.spec.models[n] for n in used if n in graph.spec.models}
    notes = []
    if b.max_cost_usd_per_query is not None:
        unpriced = [n for n, m in models.items() if m.price is None
                    and m.backend not in SELF_COSTED and mapped_price(m.model) is None]
        if unpriced:
            notes.append(f"budget.max_cost_usd_per_query: no price for {', '.join(unpriced)} "
                         "(none declared, none in litellm's cost map): their calls count $0 "
                         "against the cap; declare price: {input_per_mtok, output_per_mtok}")
    if b.max_flops_per_query is not None:
        unsized = [n for n, m in models.items() if m.params is None
                   and m.backend not in SELF_COSTED]
        if unsized:
            notes.append(f"budget.max_flops_per_query: no params for {', '.join(unsized)}: "
                         "their calls count 0 FLOPs against the cap; declare params (e.g. 8B)")
    return notes


def show(
    graph: Annotated[Path, typer.Argument(help="graph file")],
    format: Annotated[str, typer.Option("--format", "-f",
                                        help="ascii | mermaid | dot")] = "ascii",
) -> None:
    """Draw a graph: ASCII in the terminal, or Mermaid / DOT text (offline)."""
    from ..render import ascii_graph, dot, mermaid

    renderers = {"ascii": ascii_graph, "mermaid": mermaid, "dot": dot}
    if format not in renderers:
        raise _fail([f"--format: must be one of {', '.join(renderers)}"])
    print(renderers[format](_compile(graph)))


def schema() -> None:
    """Print the JSON Schema of graph files (for editor autocompletion)."""
    from ..spec import json_schema

    print(json.dumps(json_schema(), indent=2))
