"""The graph file model (tts_graph/spec.py), positioned YAML (yamlpos.py), one-line errors
(errors.py), the JSON Schema, and answer extraction (answers.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tts_graph.answers import extract_answer, extract_choice, extract_number, normalize_number
from tts_graph.errors import GraphError, GraphErrors
from tts_graph.spec import (
    AdaptiveSamples,
    DebateNode,
    GraphSpec,
    JudgeNode,
    PlannerNode,
    SolverNode,
    VoteNode,
    json_schema,
    loads_graph,
    parse_graph,
)
from tts_graph.yamlpos import line_of, load_yaml

SKETCH = """\
version: 1
name: plan-solve-judge
models:
  small:  {backend: local, model: smollm2-135m, params: 135M}
  base:   {backend: local, model: gemma3-270m, params: 270e6}
  remote: {backend: litellm, model: openai/gpt-4o-mini, rpm: 500, max_concurrency: 16,
           price: {input_per_mtok: 0.15, output_per_mtok: 0.6}}
defaults: {max_tokens: 256, temperature: 0.7}
nodes:
  plan:   {role: planner, model: remote}
  solve:  {role: solver, model: small, inputs: [plan], samples: 8}
  vote:   {role: vote, inputs: [solve]}
  judge:  {role: judge, model: remote, inputs: [solve, vote]}
output: judge
budget: {max_tokens_per_query: 20000, max_cost_usd_per_query: 0.01}
"""


def graph_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "name": "g",
        "models": {"m": {"backend": "local", "model": "smollm2-135m"}},
        "nodes": {
            "solve": {"role": "solver", "model": "m", "samples": 3},
            "vote": {"role": "vote", "inputs": ["solve"]},
        },
        "output": "vote",
    }
    data.update(over)
    return data


def first_line(text: str) -> str:
    with pytest.raises(GraphError) as info:
        loads_graph(text, source="g.yaml")
    return info.value.lines()[0]


# ------------------------------------------------------------------------------ valid graphs


def test_design_sketch_parses() -> None:
    doc = loads_graph(SKETCH, source="sketch.yaml")
    spec = doc.spec
    assert spec.name == "plan-solve-judge"
    assert isinstance(spec.nodes["plan"], PlannerNode)
    assert isinstance(spec.nodes["solve"], SolverNode)
    assert isinstance(spec.nodes["vote"], VoteNode)
    assert isinstance(spec.nodes["judge"], JudgeNode)
    assert spec.nodes["solve"].samples == 8
    assert spec.nodes["judge"].mode == "select"
    assert not spec.nodes["vote"].calls_model
    assert spec.models["remote"].rpm == 500
    assert spec.models["remote"].price is not None
    assert spec.models["remote"].price.output_per_mtok == 0.6
    assert spec.budget.max_tokens_per_query == 20000
    assert spec.defaults.max_tokens == 256
    assert doc.source == "sketch.yaml"
    assert doc.lines[("nodes", "vote")] == 12


def test_unset_sampling_fields_stay_none_for_inheritance() -> None:
    spec = GraphSpec.model_validate(graph_dict(defaults={"temperature": 0.2}))
    solve = spec.nodes["solve"]
    assert solve.temperature is None and solve.max_tokens is None and solve.top_p is None
    assert spec.defaults.temperature == 0.2
    assert spec.version == 1


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("135M", 135e6),
        ("135m", 135e6),
        ("8B", 8e9),
        ("1.5k", 1500.0),
        ("2T", 2e12),
        ("135e6", 135e6),  # YAML 1.1 reads this as a string
        ("1.35e8", 135e6),
        ("135000000", 135e6),
        ("1.7e9", 1.7e9),
        ("'70B'", 70e9),
    ],
)
def test_parameter_counts(raw: str, value: float) -> None:
    doc = loads_graph(
        f"name: g\nmodels: {{m: {{backend: local, model: x, params: {raw}}}}}\n"
        "nodes: {s: {role: solver, model: m}}\noutput: s\n"
    )
    assert doc.spec.models["m"].params == pytest.approx(value)


@pytest.mark.parametrize("raw", ["abc", "12X", "1e", "''", "M"])
def test_bad_parameter_counts(raw: str) -> None:
    line = first_line(
        f"name: g\nmodels: {{m: {{backend: local, model: x, params: {raw}}}}}\n"
        "nodes: {s: {role: solver, model: m}}\noutput: s\n"
    )
    assert line == "g.yaml:2: models.m.params: must be a number like 135e6 or '135M'"


def test_adaptive_samples_and_debate() -> None:
    spec = GraphSpec.model_validate(graph_dict(nodes={
        "solve": {"role": "solver", "model": "m", "samples": {"min": 2, "max": 6}},
        "debate": {"role": "debate", "models": ["m", "m"], "rounds": 3, "inputs": ["solve"]},
    }, output="debate"))
    samples = spec.nodes["solve"].samples
    assert isinstance(samples, AdaptiveSamples)
    assert (samples.min, samples.max, samples.batch, samples.stop) == (2, 6, 2, "settled")
    debate = spec.nodes["debate"]
    assert isinstance(debate, DebateNode)
    assert (debate.agents, debate.rounds, debate.stop) == (3, 3, "none")


def test_json_text_is_accepted() -> None:
    doc = loads_graph(json.dumps(graph_dict()))
    assert list(doc.spec.nodes) == ["solve", "vote"]


# ------------------------------------------------------------------------------- error lines


def test_dict_errors_have_no_line() -> None:
    data = graph_dict()
    data["nodes"]["solve"]["samples"] = 0
    with pytest.raises(GraphErrors) as info:
        parse_graph(data)
    assert info.value.lines() == ["<graph>: nodes.solve.samples: must be >= 1"]


def test_errors_are_sorted_by_line_and_each_is_one_line() -> None:
    text = (
        "name: g\n"
        "models: {m: {backend: local, model: x}}\n"
        "nodes:\n"
        "  b: {role: solver, model: m, temperature: 9}\n"
        "  a: {role: solver, model: m, top_p: 0, bogus: 1}\n"
        "output: a\n"
        "budget: {timeout_s: 0}\n"
    )
    with pytest.raises(GraphErrors) as info:
        loads_graph(text, source="g.yaml")
    assert info.value.lines() == [
        "g.yaml:4: nodes.b.temperature: must be <= 2",
        "g.yaml:5: nodes.a.bogus: unknown field for role 'solver'",
        "g.yaml:5: nodes.a.top_p: must be > 0",
        "g.yaml:7: budget.timeout_s: must be > 0",
    ]
    assert str(info.value) == info.value.lines()[0]


def test_union_branch_noise_is_dropped() -> None:
    line = first_line(
        "name: g\nmodels: {m: {backend: local, model: x}}\n"
        "nodes:\n  s:\n    role: solver\n    model: m\n    samples: {min: 0}\noutput: s\n"
    )
    assert line == "g.yaml:7: nodes.s.samples.min: must be >= 1"


def test_did_you_mean_uses_the_fields_of_that_place() -> None:
    # `max_tokens` is a field of nodes and defaults, but not of budget
    line = first_line(
        "name: g\nmodels: {m: {backend: local, model: x}}\n"
        "nodes: {s: {role: solver, model: m}}\noutput: s\nbudget: {max_tokens: 10}\n"
    )
    assert line == ("g.yaml:5: budget.max_tokens: unknown field "
                    "(did you mean 'max_tokens_per_query'?)")


def test_a_misspelt_required_field_is_reported_once() -> None:
    with pytest.raises(GraphErrors) as info:
        loads_graph("name: g\nmodels: {}\nnodes: {s: {role: vote}}\noutptu: s\n", "g.yaml")
    assert info.value.lines() == ["g.yaml:4: outptu: unknown field (did you mean 'output'?)"]


def test_graph_error_lines() -> None:
    err = GraphError("boom", path="a.b", source="f.yaml", line=3)
    assert str(err) == "f.yaml:3: a.b: boom"
    assert err.lines() == ["f.yaml:3: a.b: boom"]
    assert str(GraphError("boom")) == "<graph>: boom"
    both = GraphErrors([GraphError("late", line=9), GraphError("early", line=2)])
    assert both.lines() == ["<graph>:2: early", "<graph>:9: late"]


# ----------------------------------------------------------------------------------- yamlpos


def test_yaml_lines() -> None:
    data, lines = load_yaml("a: 1\nb:\n  - x\n  - {c: 2}\n3: z\n")
    assert data == {"a": 1, "b": ["x", {"c": 2}], 3: "z"}
    assert lines[("a",)] == 1
    assert lines[("b", 1, "c")] == 4
    assert lines[(3,)] == 5  # keys are stored as the data holds them
    assert line_of(lines, ("b", 1, "c", "deeper")) == 4
    assert line_of(lines, ("nope",)) == 1
    assert line_of({}, ("x",)) is None


def test_yaml_merge_keys_are_not_duplicates() -> None:
    data, _ = load_yaml("base: &b {x: 1}\nnode:\n  <<: *b\n  y: 2\n")
    assert data["node"] == {"x": 1, "y": 2}


def test_yaml_errors_are_one_line() -> None:
    with pytest.raises(GraphError) as info:
        load_yaml("a: 1\na: 2\n", "f.yaml")
    assert str(info.value) == "f.yaml:2: a: duplicate key (first at line 1)"
    with pytest.raises(GraphError) as info:
        load_yaml("a: [1, 2\nb: 3\n", "f.yaml")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("f.yaml:")
    assert "invalid YAML" in str(info.value)


def test_yaml_cannot_build_python_objects() -> None:
    with pytest.raises(GraphError, match="invalid YAML"):
        load_yaml("a: !!python/object/apply:os.system ['true']\n")


# ------------------------------------------------------------------------------- JSON Schema


def test_json_schema_is_plain_json() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False
    assert {"name", "nodes", "output"} <= set(schema["required"])


def test_json_schema_validates_graphs() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = graph_dict(
        models={"m": {"backend": "local", "model": "x", "params": "135M"},
                "n": {"backend": "local", "model": "y", "params": 270e6}},
        defaults={"max_tokens": 64, "model": "m"},
        nodes={
            "plan": {"role": "planner"},
            "solve": {"role": "solver", "inputs": ["plan"], "samples": {"min": 2, "max": 8}},
            "race": {"role": "first_finish", "samples": 4, "k": 2},
            "debate": {"role": "debate", "models": ["m", "n"], "rounds": 2,
                       "stop": "consensus", "inputs": ["solve", "race"]},
            "vote": {"role": "vote", "inputs": ["debate"]},
        },
    )
    GraphSpec.model_validate(good)  # the model accepts it, so must the schema
    assert [e.message for e in validator.iter_errors(good)] == []
    assert not validator.is_valid(graph_dict(outputs="vote"))
    bad_params = graph_dict(models={"m": {"backend": "local", "model": "x", "params": "abc"}})
    assert not validator.is_valid(bad_params)
    bad_role_field = graph_dict()
    bad_role_field["nodes"]["vote"]["model"] = "m"
    assert not validator.is_valid(bad_role_field)


# ---------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "kind", "answer"),
    [
        ("The total is 1,234 apples.", "number", "1234"),
        ("Answer: 1,234,567", "number", "1234567"),
        ("so x = -12 in the end", "number", "-12"),
        ("Answer: -5", "auto", "-5"),
        ("Answer: 3/4", "auto", "0.75"),
        ("total -3/6", "number", "-0.5"),
        ("Answer: 2.50", "auto", "2.5"),
        ("it is 0.5", "number", "0.5"),
        ("Answer: $1,000", "auto", "1000"),
        ("\\boxed{42}", "auto", "42"),
        ("so \\boxed{1,000}. Answer: 7", "auto", "1000"),
        ("\\boxed{\\frac{1}{2}}", "boxed", "\\frac{1}{2}"),
        ("we pick (B).", "choice", "B"),
        ("Answer: C", "choice", "C"),
        ("2+2=4, so 17 apples\nAnswer: 12", "auto", "12"),
        ("The answer is 42.", "auto", "42"),
        ("Final answer: Paris.", "text", "paris"),
        ("Final answer: Paris.", "auto", "paris"),
    ],
)
def test_extract_answer(text: str, kind: str, answer: str) -> None:
    assert extract_answer(text, kind) == answer


@pytest.mark.parametrize(
    ("text", "kind"),
    [("no digits here", "number"), ("", "auto"), ("no box", "boxed"),
     ("nothing to pick", "choice"), ("   ", "text")],
)
def test_extract_nothing_is_none(text: str, kind: str) -> None:
    assert extract_answer(text, kind) is None


def test_number_helpers() -> None:
    assert normalize_number("1,000.0") == "1000"
    assert normalize_number("abc") is None
    assert normalize_number("1/0") is None
    # whole numbers take a fast path: the same as through float
    for raw in ("0", "9", "0009", "42", "999999999999999", "1000000000000000", "٣", "²"):
        assert normalize_number(raw) == normalize_number(raw + ".0"), raw
    assert extract_number("Answer: 10 (not 11)") == "10"
    assert extract_choice("(A) or (D)? Answer: (D)") == "D"
