"""`tts-graph import archon`: Archon's layered configs become graphs with the same meaning.

The configs here are written from Archon's published format (a JSON object with "name" and
"layers", each layer a list of components with type, model, model_type, samples, temperature,
max_tokens, top_k)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tts_graph import Graph
from tts_graph.archon import archon_to_dict, load_archon, to_yaml
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import GraphError, GraphErrors

ROOT = Path(__file__).resolve().parent.parent


def comp(ctype: str, model: str = "gpt-4o-mini", model_type: str = "OpenAI_API",
         **kw: Any) -> dict[str, Any]:
    return {"type": ctype, "model": model, "model_type": model_type, "temperature": 0.7,
            "max_tokens": 256, **kw}


FULL = {
    "name": "archon-sample-critic-rank-verify-fuse",
    "layers": [
        [comp("generator", samples=5),
         comp("generator", "meta-llama/Llama-3.1-70B-Instruct-Turbo", "Together_API",
              samples=3, temperature=1.0)],
        [comp("critic", "claude-3-5-sonnet-20240620", "Anthropic_API", samples=1)],
        [comp("ranker", top_k=4, max_tokens=64)],
        [comp("verifier", "claude-3-5-sonnet-20240620", "Anthropic_API", temperature=0.0)],
        [comp("fuser", samples=2), comp("fuser", "llama-3.1-8b-instant", "Groq_API")],
        [comp("fuser", "gemini-1.5-pro", "Google_API", max_context_length=8192)],
    ],
}


def write(tmp_path: Path, data: Any, name: str = "archon.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data, indent=2) if not isinstance(data, str) else data)
    return p


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False, env=env)


def errors_of(data: Any) -> list[str]:
    with pytest.raises(GraphError) as info:
        archon_to_dict(data, source="a.json")
    return info.value.lines()


# ------------------------------------------------------------------------------ mapping


def test_every_supported_component_maps_with_the_same_meaning() -> None:
    g = archon_to_dict(FULL, source="a.json")
    assert g["name"] == "archon-sample-critic-rank-verify-fuse"
    assert g["models"] == {
        "gpt-4o-mini": {"backend": "litellm", "model": "openai/gpt-4o-mini",
                        "api_key_env": "OPENAI_API_KEY"},
        "Llama-3_1-70B-Instruct-Turbo": {
            "backend": "litellm", "model": "together_ai/meta-llama/Llama-3.1-70B-Instruct-Turbo",
            "api_key_env": "TOGETHER_API_KEY"},
        "claude-3-5-sonnet-20240620": {
            "backend": "litellm", "model": "anthropic/claude-3-5-sonnet-20240620",
            "api_key_env": "ANTHROPIC_API_KEY"},
        "llama-3_1-8b-instant": {"backend": "litellm", "model": "groq/llama-3.1-8b-instant",
                                 "api_key_env": "GROQ_API_KEY"},
        "gemini-1_5-pro": {"backend": "litellm", "model": "gemini/gemini-1.5-pro",
                           "api_key_env": "GOOGLE_API_KEY"},
    }
    n = g["nodes"]
    # layer 1: generators -> solvers with their samples, temperature and max_tokens
    assert n["l1_generator1"] == {"role": "solver", "model": "gpt-4o-mini", "samples": 5,
                                  "temperature": 0.7, "max_tokens": 256}
    assert n["l1_generator2"] == {"role": "solver", "model": "Llama-3_1-70B-Instruct-Turbo",
                                  "samples": 3, "temperature": 1.0, "max_tokens": 256}
    gens = ["l1_generator1", "l1_generator2"]
    # layer 2: the critic reviews every candidate (5 + 3)...
    assert n["l2_critic"] == {"role": "critic", "model": "claude-3-5-sonnet-20240620",
                              "limit": 8, "temperature": 0.7, "max_tokens": 256,
                              "inputs": gens}
    # ...the candidates pass on unchanged, with the critiques, to the next layer
    assert n["l3_ranker"] == {"role": "ranker", "model": "gpt-4o-mini", "top_k": 4,
                              "temperature": 0.7, "max_tokens": 64,
                              "inputs": [*gens, "l2_critic"]}
    assert n["l4_verifier"] == {"role": "verifier", "model": "claude-3-5-sonnet-20240620",
                                "keep": "passing", "temperature": 0.0, "max_tokens": 256,
                                "inputs": ["l3_ranker", "l2_critic"]}
    # layer 5: two fusers, each over the whole previous layer (critiques still attached)
    assert n["l5_fuser1"] == {"role": "fuser", "model": "gpt-4o-mini", "samples": 2,
                              "temperature": 0.7, "max_tokens": 256,
                              "inputs": ["l4_verifier", "l2_critic"]}
    assert n["l5_fuser2"]["inputs"] == ["l4_verifier", "l2_critic"]
    # layer 6: a fuser layer used the critiques: the last fuser gets both fusers' outputs only
    assert n["l6_fuser"] == {"role": "fuser", "model": "gemini-1_5-pro", "temperature": 0.7,
                             "max_tokens": 256, "inputs": ["l5_fuser1", "l5_fuser2"]}
    assert g["output"] == "l6_fuser"
    Graph.from_dict(g)  # validates and compiles


def test_model_types_with_and_without_api_suffix_vllm_and_bedrock() -> None:
    g = archon_to_dict({"name": "t", "layers": [[
        comp("generator", "gpt-4o", "OpenAI"), comp("generator", "facebook/opt-125m", "vLLM"),
        comp("generator", "anthropic.claude-3-sonnet", "Bedrock_API"),
        comp("generator", "Qwen/Qwen2-72B-Instruct", "together")],
        [comp("fuser", "gpt-4o", "OpenAI_API")]]})
    assert g["models"] == {
        "gpt-4o": {"backend": "litellm", "model": "openai/gpt-4o",
                   "api_key_env": "OPENAI_API_KEY"},
        "opt-125m": {"backend": "vllm", "model": "facebook/opt-125m"},
        "anthropic_claude-3-sonnet": {"backend": "litellm",
                                      "model": "bedrock/anthropic.claude-3-sonnet"},
        "Qwen2-72B-Instruct": {"backend": "litellm", "model": "together_ai/Qwen/Qwen2-72B-Instruct",
                               "api_key_env": "TOGETHER_API_KEY"},
    }
    assert g["nodes"]["l2_fuser"]["model"] == "gpt-4o"  # one model entry per model


def test_the_older_layer_form_and_a_single_model() -> None:
    g = archon_to_dict({"name": "solo", "layers": [
        {"branches": 1, "models": [comp("generator", "gpt-4o", samples=1)]}]})
    assert g["nodes"] == {"l1_generator": {"role": "solver", "model": "gpt-4o",
                                           "temperature": 0.7, "max_tokens": 256}}
    assert g["output"] == "l1_generator"


def test_cli_output_validates_and_shows(tmp_path: Path) -> None:
    src = write(tmp_path, FULL)
    proc = cli("import", "archon", str(src))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# Imported by `tts-graph import archon {src}`.\n")
    out = tmp_path / "graph.yaml"
    out.write_text(proc.stdout)
    assert yaml.safe_load(proc.stdout) == archon_to_dict(FULL, source=str(src))
    v = cli("validate", str(out))
    assert v.returncode == 0, v.stderr
    assert " ".join(v.stdout.split()) == f"ok: {out} (8 nodes, 8 steps)"  # rich may wrap
    # -o writes the file; --name renames the graph
    again = cli("import", "archon", str(src), "-o", str(tmp_path / "g2.yaml"), "--name", "mine")
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load((tmp_path / "g2.yaml").read_text())["name"] == "mine"


def test_an_imported_graph_runs_with_the_archon_data_flow() -> None:
    """Run the imported graph with scripted models: the critic reviews every sample, its
    critiques reach the ranker's consumers, the ranker keeps top_k, the fuser fuses."""
    data = {"name": "flow", "layers": [
        [comp("generator", samples=3)],
        [comp("critic", "critic-model")],
        [comp("ranker", "ranker-model", top_k=2)],
        [comp("fuser", "fuser-model")],
    ]}
    g = archon_to_dict(data)
    texts = iter(range(1000))
    gen = ScriptedBackend(lambda req, i: f"Solution {next(texts)}. Answer: 4")
    critic = ScriptedBackend(lambda req, i: "Looks right.")
    ranker = ScriptedBackend(lambda req, i: "Ranking: 3 > 1 > 2")
    fuser = ScriptedBackend(lambda req, i: "Fused. Answer: 4")
    graph = Graph.from_dict(g, backends={"gpt-4o-mini": gen, "critic-model": critic,
                                         "ranker-model": ranker, "fuser-model": fuser})
    res = graph.run("What is 2 + 2?")
    assert res.status == "ok" and res.answer == "4" and res.text == "Fused. Answer: 4"
    assert sum(r.n for r in gen.requests) == 3
    assert len(critic.requests) == 3  # one critique per candidate
    assert len(res.steps["l3_ranker"].candidates) == 2  # top_k
    [fuse] = fuser.requests
    prompt = fuse.messages[-1].content
    assert "Feedback on earlier attempts" in prompt and "Looks right." in prompt
    kept = [c.text for c in res.steps["l3_ranker"].candidates]
    assert all(t in prompt for t in kept)
    dropped = [c.text for c in res.steps["l1_generator"].candidates if c.text not in kept]
    assert dropped and not any(t in prompt for t in dropped)


# ------------------------------------------------------------------------ unsupported


def test_unit_test_components_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    src = write(tmp_path, """{
  "name": "unit-tests",
  "layers": [
    [{"type": "generator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024, "samples": 10}],
    [{"type": "unit_test_generator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024, "unit_tests": 5}],
    [{"type": "unit_test_evaluator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024}]
  ]
}
""")
    proc = cli("import", "archon", str(src))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"{src}:6: layers.1.0.type: 'unit_test_generator' has no tts-graph equivalent "
        "(Archon's unit-test components are not supported)",
        f"{src}:8: layers.2.0.type: 'unit_test_evaluator' has no tts-graph equivalent "
        "(Archon's unit-test components are not supported)",
    ]


@pytest.mark.parametrize(("layers", "line"), [
    ([[comp("generator")], [{"type": "my_component", "model": "x", "model_type": "x"}]],
     "layers.1.0.type: unknown component type 'my_component' (custom components have no "
     "tts-graph equivalent; known: generator, fuser, critic, ranker, verifier, "
     "unit_test_generator, unit_test_evaluator)"),
    ([[comp("generator")], [comp("fuser"), comp("fuser")]],
     "layers.1: the last layer has 2 components and Archon would pick one of their outputs at "
     "random: no equivalent (end with one component, such as a fuser or a ranker)"),
    ([[comp("generator")], [comp("critic")]],
     "layers.1: the last layer is a critic: its critiques would feed nothing (end with a "
     "fuser, a ranker or a verifier)"),
    ([[comp("generator")], [comp("generator")]],
     "layers.1.0.type: generators run only in the first layer (Archon's rule: a generator "
     "ignores earlier outputs)"),
    ([[comp("fuser")]],
     "layers.0.0.type: a fuser needs candidates from an earlier layer: the first layer must "
     "hold generators"),
    ([[comp("generator")], [comp("ranker", top_k=2), comp("fuser")]],
     "layers.1.0.type: a ranker must be alone in its layer (Archon runs it over the whole "
     "previous layer); this layer has 2 components"),
    ([[comp("generator")], [comp("ranker")]],
     "layers.1.0.top_k: required: how many candidates the ranker keeps"),
    ([[comp("generator")], [comp("ranker", "llm-blender/PairRM", "local", top_k=1)]],
     "layers.1.0.model: the PairRM reward-model ranker has no tts-graph equivalent (rank "
     "with an LLM instead)"),
    ([[comp("generator", "m", "tgi")]],
     "layers.0.0.model_type: 'tgi' has no tts-graph equivalent here: the config does not say "
     "where the server is (use backend: litellm with an api_base)"),
    ([[comp("generator", "m", "MyEndpoint")]],
     "layers.0.0.model_type: unknown model type 'MyEndpoint' (custom generators have no "
     "tts-graph equivalent; known: OpenAI_API, Together_API, Anthropic_API, Groq_API, "
     "Google_API, Bedrock_API, vLLM)"),
    ([[comp("generator")], [comp("verifier", first_k=1)]],
     "layers.1.0.first_k: field 'first_k' has no tts-graph equivalent"),
    ([[comp("generator")], [comp("critic")], [comp("critic")], [comp("fuser")]],
     "layers.2.0.type: a critic right after a critic: the first one's critiques would be "
     "dropped (Archon replaces them)"),
    ([[comp("generator", samples=0)]], "layers.0.0.samples: must be an integer >= 1"),
    ([[comp("generator", temperature=3)]], "layers.0.0.temperature: must be a number from 0 "
     "to 2"),
    ([[{"type": "generator", "model_type": "OpenAI_API"}]],
     "layers.0.0.model: required: the model's name (a string)"),
])
def test_parts_with_no_equivalent_are_clear_errors(layers: list[Any], line: str) -> None:
    assert errors_of({"name": "x", "layers": layers}) == [f"a.json: {line}"]


def test_top_level_problems() -> None:
    assert errors_of({"name": "x", "layers": []}) == [
        "a.json: layers: required: a non-empty list of layers"]
    assert errors_of({"name": "x", "custom": True, "layers": [[comp("generator")]]}) == [
        "a.json: custom: custom components have no tts-graph equivalent"]
    assert errors_of([1, 2]) == [
        "a.json:1: an Archon config must be a JSON object with 'name' and 'layers'"]


def test_errors_name_the_line_in_the_file(tmp_path: Path) -> None:
    src = write(tmp_path, {"name": "x", "layers": [[comp("generator")],
                                                    [comp("ranker", top_k=0)]]})
    with pytest.raises(GraphErrors) as info:
        load_archon(src)
    line = json.dumps({"name": "x", "layers": [[comp("generator")], [comp("ranker", top_k=0)]]},
                      indent=2).splitlines().index('        "top_k": 0') + 1
    assert info.value.lines() == [f"{src}:{line}: layers.1.0.top_k: must be an integer >= 1"]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    src = write(tmp_path, '{\n  "name": "x",\n  "layers": [\n    [{"type": "generator",}]\n'
                          '  ]\n}\n')
    proc = cli("import", "archon", str(src))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{src}:4: invalid JSON: Expecting property name enclosed "
                                   "in double quotes (column 27)")
    missing = cli("import", "archon", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"{tmp_path / 'nope.json'}: file not found"


def test_to_yaml_round_trips() -> None:
    g = archon_to_dict(FULL, source="a.json")
    text = to_yaml(g, source="a.json")
    assert yaml.safe_load(text) == g
    assert "# API keys are read from the environment: ANTHROPIC_API_KEY, GOOGLE_API_KEY, " \
           "GROQ_API_KEY, OPENAI_API_KEY, TOGETHER_API_KEY." in text
