"""Compiling a graph into a DAG of steps (tts_graph/compile.py), and prompt templates
(tts_graph/prompts.py)."""

from __future__ import annotations

import re
from typing import Any

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tts_graph import custom_roles
from tts_graph.compile import FALLBACK_SAMPLING, CompiledGraph, compile_graph, min_calls
from tts_graph.errors import GraphError, GraphErrors
from tts_graph.prompts import TemplateError, check_template, placeholders, render
from tts_graph.roles.solver import Solver
from tts_graph.spec import loads_graph, parse_graph

MODELS = """\
models:
  a: {backend: local, model: smollm2-135m}
  b: {backend: local, model: gemma3-270m}
"""


def build(body: str, **kw: Any) -> CompiledGraph:
    return compile_graph(loads_graph("name: g\n" + MODELS + body, source="g.yaml"), **kw)


def compile_error(body: str, **kw: Any) -> list[str]:
    with pytest.raises(GraphError) as info:
        build(body, **kw)
    return info.value.lines()


# ------------------------------------------------------------------------- sampling defaults


def test_defaults_are_inherited_into_step_sampling() -> None:
    g = build("""\
defaults: {model: a, max_tokens: 64, temperature: 0.3, seed: 7, extract: number}
nodes:
  hot: {role: solver, temperature: 1.2, top_p: 0.9, samples: 2}
  plain: {role: solver, model: b, max_tokens: 32}
  vote: {role: vote, inputs: [hot, plain], extract: choice}
output: vote
""")
    hot, plain = g.steps["hot"], g.steps["plain"]
    assert hot.models == ("a",)  # defaults.model
    assert plain.models == ("b",)
    assert (hot.sampling.max_tokens, hot.sampling.temperature, hot.sampling.top_p) == (64, 1.2, 0.9)
    assert hot.sampling.seed == 7
    assert (plain.sampling.max_tokens, plain.sampling.temperature) == (32, 0.3)
    assert plain.sampling.top_p == FALLBACK_SAMPLING["top_p"]  # neither node nor defaults
    assert hot.extract == "number" and plain.extract == "number"
    assert g.steps["vote"].extract == "choice"
    assert g.steps["vote"].models == () and not g.steps["vote"].calls_model


def test_fallback_sampling_without_defaults() -> None:
    g = build("nodes: {s: {role: solver, model: a}}\noutput: s\n")
    s = g.steps["s"].sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.seed) == (
        FALLBACK_SAMPLING["max_tokens"], FALLBACK_SAMPLING["temperature"],
        FALLBACK_SAMPLING["top_p"], FALLBACK_SAMPLING["seed"],
    )
    assert s.stop == ()
    assert g.steps["s"].extract == "auto"


# ---------------------------------------------------------------------------------- unrolling


def test_debate_unrolls_into_rounds() -> None:
    g = build("""\
nodes:
  plan: {role: planner, model: a}
  debate: {role: debate, models: [a, b], agents: 3, rounds: 3, inputs: [plan]}
output: debate
""")
    ids = [sid for sid in g.order if g.steps[sid].node == "debate"]
    assert ids == ["debate@r1", "debate@r2", "debate"]
    assert g.steps["debate@r1"].deps == ("plan",)
    assert g.steps["debate@r2"].deps == ("debate@r1", "plan")
    assert g.steps["debate"].deps == ("debate@r2", "plan")
    assert [g.steps[s].round for s in ids] == [1, 2, 3]
    assert [g.steps[s].phase for s in ids] == ["main", "revise", "revise"]
    assert all(g.steps[s].models == ("a", "b") for s in ids)
    assert g.output == "debate" and "debate" in g.steps
    assert set(g.dag.predecessors("debate")) == {"debate@r2", "plan"}


def test_one_round_debate_is_one_step() -> None:
    g = build("nodes: {d: {role: debate, model: a, rounds: 1}}\noutput: d\n")
    assert list(g.steps) == ["d"]
    assert g.steps["d"].models == ("a",)


def test_refiner_unrolls_into_critique_and_revise() -> None:
    g = build("""\
nodes:
  solve: {role: solver, model: a}
  refine: {role: refiner, model: a, critic_model: b, rounds: 2, inputs: [solve]}
output: refine
""")
    ids = [sid for sid in g.order if g.steps[sid].node == "refine"]
    assert ids == ["refine@r1.critique", "refine@r1.revise", "refine@r2.critique", "refine"]
    assert g.steps["refine@r1.critique"].deps == ("solve",)
    assert g.steps["refine@r1.revise"].deps == ("refine@r1.critique",)
    assert g.steps["refine@r2.critique"].deps == ("refine@r1.revise",)
    assert g.steps["refine"].deps == ("refine@r2.critique",)
    assert [g.steps[s].phase for s in ids] == ["critique", "revise", "critique", "revise"]
    assert [g.steps[s].round for s in ids] == [1, 1, 2, 2]
    assert g.steps["refine"].models == ("a", "b")  # the critic model comes second
    assert g.used_models() == ["a", "b"]


def test_topological_order() -> None:
    g = build("""\
nodes:
  z_plan: {role: planner, model: a}
  solve: {role: solver, model: a, samples: 4, inputs: [z_plan]}
  check: {role: verifier, model: b, inputs: [solve]}
  refine: {role: refiner, model: a, inputs: [check]}
  vote: {role: vote, inputs: [solve]}
  judge: {role: judge, model: b, inputs: [refine, vote]}
output: judge
""")
    assert sorted(g.order) == sorted(g.steps)
    position = {sid: i for i, sid in enumerate(g.order)}
    for sid, step in g.steps.items():
        for dep in step.deps:
            assert position[dep] < position[sid], (dep, sid)
    assert g.order == [
        "z_plan", "solve", "check", "refine@r1.critique", "refine", "vote", "judge",
    ]
    assert g.order[-1] == g.output
    assert nx.is_directed_acyclic_graph(g.dag)
    assert set(g.node_dag.edges) == {
        ("z_plan", "solve"), ("solve", "check"), ("check", "refine"), ("solve", "vote"),
        ("refine", "judge"), ("vote", "judge"),
    }


def test_min_calls() -> None:
    g = build("""\
defaults: {model: a}
nodes:
  s: {role: solver, samples: 5}
  ad: {role: solver, samples: {min: 3, max: 9}}
  ff: {role: first_finish, samples: 6, k: 2}
  d: {role: debate, agents: 4, inputs: [s, ad, ff]}
  r: {role: refiner, inputs: [d]}
  f: {role: fuser, samples: 2, inputs: [r]}
  v: {role: vote, inputs: [f]}
output: v
""")
    nodes = g.spec.nodes
    assert {n: min_calls(nodes[n]) for n in nodes} == {
        "s": 5, "ad": 3, "ff": 2, "d": 4, "r": 2, "f": 2, "v": 0,
    }


def test_budget_that_just_covers_the_graph() -> None:
    body = ("nodes:\n  s: {role: solver, model: a, samples: 4}\n  v: {role: vote, inputs: [s]}\n"
            "output: v\nbudget: {max_tokens_per_query: %d}\n")
    build(body % 4)
    assert compile_error(body % 3) == [
        "g.yaml:9: budget.max_tokens_per_query: 3 cannot cover the graph: it makes at least 4 "
        "calls of at least one token each"
    ]


# ------------------------------------------------------------------------------- compile checks


def test_unknown_default_model_is_reported_once() -> None:
    assert compile_error("defaults: {model: c}\nnodes: {s: {role: solver}}\noutput: s\n") == [
        "g.yaml:5: defaults.model: unknown model 'c'; declared: a, b"
    ]


def test_several_compile_errors_come_sorted() -> None:
    lines = compile_error("""\
nodes:
  s: {role: solver, model: c, inputs: [t]}
  v: {role: vote, inputs: [s, s]}
output: w
""")
    assert lines == [
        "g.yaml:6: nodes.s.inputs.0: unknown node 't'",
        "g.yaml:6: nodes.s.model: unknown model 'c'; declared: a, b",
        "g.yaml:7: nodes.v.inputs: lists a node twice",
        "g.yaml:8: output: unknown node 'w'",
    ]


def test_backends_argument() -> None:
    body = ("name: g\nmodels: {m: {backend: mine, model: x}}\n"
            "nodes: {s: {role: solver, model: m}}\noutput: s\n")
    compile_graph(loads_graph(body), backends=["mine"])
    with pytest.raises(GraphErrors) as info:
        compile_graph(loads_graph(body, source="g.yaml"))
    assert info.value.lines() == [
        "g.yaml:2: models.m.backend: unknown backend 'mine'; known: litellm, local, sim, vllm"
    ]


def test_errors_of_a_dict_graph_have_no_line() -> None:
    doc = parse_graph({
        "name": "g", "models": {"m": {"backend": "local", "model": "x"}},
        "nodes": {"a": {"role": "solver", "model": "m", "inputs": ["b"]},
                  "b": {"role": "fuser", "model": "m", "inputs": ["a"]}},
        "output": "b",
    })
    with pytest.raises(GraphErrors) as info:
        compile_graph(doc)
    [line] = info.value.lines()
    assert line.startswith("<graph>: nodes.")
    assert line.endswith(".inputs: cycle: a -> b -> a")


class _Knobs(BaseModel):
    model_config = {"extra": "forbid"}
    depth: int = Field(default=1, ge=1)


class _Custom(Solver):
    name = "deep_solver"
    params_model = _Knobs


@pytest.fixture
def custom_role(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(custom_roles.REGISTERED, "deep_solver", _Custom)
    return "deep_solver"


def test_custom_role_params(custom_role: str) -> None:
    g = build(f"nodes: {{s: {{role: {custom_role}, model: a, params: {{depth: 3}}}}}}\n"
              "output: s\n")
    params = g.steps["s"].params
    assert isinstance(params, _Knobs) and params.depth == 3
    assert compile_error(
        f"nodes: {{s: {{role: {custom_role}, model: a, params: {{depth: 0}}}}}}\noutput: s\n"
    ) == ["g.yaml:5: nodes.s.params.depth: must be >= 1"]


# ---------------------------------------------------------------------------- prompt templates


def test_placeholders() -> None:
    assert placeholders("{context}{question}\n\n{candidate}") == [
        "context", "question", "candidate",
    ]
    assert placeholders("JSON like {{\"a\": 1}} for {question}") == ["question"]
    assert placeholders("no placeholders") == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("a { b", "stray '{' at column 3 (write '{{' for a literal brace)"),
        ("a } b", "stray '}' at column 3 (write '}}' for a literal brace)"),
        ("{question.attr}", "stray '{' at column 1 (write '{{' for a literal brace)"),
        ("{0}", "stray '{' at column 1 (write '{{' for a literal brace)"),
    ],
)
def test_stray_braces(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        placeholders(template)
    assert str(info.value) == message


def test_check_template() -> None:
    check_template("{question} {{literal}}", {"question", "context"})
    with pytest.raises(TemplateError) as info:
        check_template("{question} {answer}", {"question", "context"})
    assert str(info.value) == "unknown placeholder {answer}; allowed: {context}, {question}"


def test_render_literal_braces() -> None:
    assert render("{{x}} = {question}", {"question": "2+2"}) == "{x} = 2+2"
    assert render("}}{{", {}) == "}{"


def test_render_never_renders_values_again() -> None:
    evil = "{context} {{not}} {question} }{"
    out = render("Q: {question}\nC: {context}", {"question": evil, "context": "ctx"})
    assert out == f"Q: {evil}\nC: ctx"


def test_render_missing_value() -> None:
    with pytest.raises(TemplateError, match=r"no value for \{question\}"):
        render("{question}", {})


def _render_by_substitution(template: str, values: dict[str, str]) -> str:
    """The reference: one ``re.sub`` pass over the template (what ``render`` did before it
    parsed each template once)."""
    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok in ("{{", "}}"):
            return tok[0]
        if m.group(1) is None:
            raise TemplateError(f"stray '{tok}'")
        if m.group(1) not in values:
            raise TemplateError(f"no value for {{{m.group(1)}}}")
        return values[m.group(1)]

    return re.sub(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}", sub, template)


@given(st.lists(st.sampled_from(["{", "}", "{{", "}}", "{question}", "{context}", "{x}",
                                 "a", "b c", "\n", "{1}", "{ question}"]), max_size=10))
def test_render_is_one_substitution_pass(pieces: list[str]) -> None:
    template = "".join(pieces)
    values = {"question": "Q {x} }{", "context": "{{c}}"}

    def outcome(f: Any) -> tuple[str, str]:
        try:
            return "ok", f(template, values)
        except TemplateError as exc:
            return "error", str(exc)

    assert outcome(render) == outcome(_render_by_substitution)


def test_prompt_override_placeholders_depend_on_role() -> None:
    body = ("nodes:\n  s: {role: solver, model: a}\n"
            "  r: {role: refiner, model: a, inputs: [s], prompts: {user: '%s'}}\noutput: r\n")
    build(body % "{question} {candidate} {critique}")
    assert compile_error(body % "{others}") == [
        "g.yaml:7: nodes.r.prompts.user: unknown placeholder {others}; "
        "allowed: {candidate}, {context}, {critique}, {question}"
    ]
