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
from tts_graph.archon import (
    DROPPED,
    FIELDS,
    LENGTH_CONTROL,
    SUPPORTED,
    archon_to_dict,
    load_archon,
    to_yaml,
)
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
    # ...the candidates pass on unchanged to the next layer; the critiques too, but Archon's
    # ranker reads them only with use_critiques (see the test below)
    assert n["l3_ranker"] == {"role": "ranker", "model": "gpt-4o-mini", "top_k": 4,
                              "temperature": 0.7, "max_tokens": 64, "inputs": gens}
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
    # a model that already names its provider keeps one prefix
    g = archon_to_dict({"name": "t", "layers": [[
        comp("generator", "bedrock/meta.llama3-70b-instruct-v1:0", "Bedrock_API")]]})
    assert [m["model"] for m in g["models"].values()] == ["bedrock/meta.llama3-70b-instruct-v1:0"]


def test_the_older_layer_form_and_a_single_model() -> None:
    g = archon_to_dict({"name": "solo", "layers": [
        {"branches": 1, "models": [comp("generator", "gpt-4o", samples=1)]}]})
    assert g["nodes"] == {"l1_generator": {"role": "solver", "model": "gpt-4o",
                                           "temperature": 0.7, "max_tokens": 256}}
    assert g["output"] == "l1_generator"


def test_older_form_branches_are_dropped_with_a_note() -> None:
    """Archon's Layer reads only ``models`` from the older form: ``branches`` changes nothing
    there, so it is dropped and the file's head says so."""
    notes: dict[str, list[str]] = {}
    g = archon_to_dict({"name": "br", "layers": [
        {"branches": 5, "models": [comp("generator", "gpt-4o")]},
        {"branches": 1, "models": [comp("fuser", "gpt-4o")]}]}, notes=notes)
    assert list(g["nodes"]) == ["l1_generator", "l2_fuser"]
    assert notes[""] == ["layer 1: branches 5 dropped: Archon reads only the models of an "
                         "older-form layer"]
    assert "# layer 1: branches 5 dropped:" in to_yaml(g, notes=notes)


def test_outputs_nothing_reads_are_left_out_with_a_note() -> None:
    """Archon's generator ignores earlier outputs and replaces them, and a critic replaces
    earlier critiques: what nothing reads is left out (with a comment), not refused."""
    notes: dict[str, list[str]] = {}
    g = archon_to_dict({"name": "two", "layers": [
        [comp("generator", "a"), comp("generator", "b")],
        [comp("generator", "c", samples=2)],
        [comp("fuser", "d")]]}, notes=notes)
    assert list(g["nodes"]) == ["l2_generator", "l3_fuser"]
    assert "inputs" not in g["nodes"]["l2_generator"]  # it reads the query alone
    assert g["nodes"]["l3_fuser"]["inputs"] == ["l2_generator"]
    assert sorted(g["models"]) == ["c", "d"]  # no entry for a model only left-out nodes used
    assert notes[""] == ["l1_generator1, l1_generator2 left out: no later component reads "
                         "their output (in Archon it is computed and then replaced)"]
    # run: the left-out layer costs no call; the fuser fuses the second layer's two samples
    c = ScriptedBackend(lambda req, i: f"Second layer {i}. Answer: 4")
    d = ScriptedBackend(lambda req, i: "Fused. Answer: 4")
    res = Graph.from_dict(g, backends={"c": c, "d": d}).run("What is 2 + 2?")
    assert res.status == "ok" and res.text == "Fused. Answer: 4"
    assert sum(r.n for r in c.requests) == 2 and len(d.requests) == 1
    assert "What is 2 + 2?" in c.requests[0].messages[-1].content
    assert "Second layer" in d.requests[0].messages[-1].content
    notes = {}
    g = archon_to_dict({"name": "cc", "layers": [
        [comp("generator")], [comp("critic", "c1")], [comp("critic", "c2")],
        [comp("fuser")]]}, notes=notes)
    assert g["nodes"]["l4_fuser"]["inputs"] == ["l1_generator", "l3_critic"]
    assert "l2_critic" not in g["nodes"]
    assert notes[""] == ["l2_critic left out: no later component reads its critiques (in "
                         "Archon they are computed and then replaced)"]


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


def test_a_ranker_reads_the_critiques_with_use_critiques() -> None:
    data = {"name": "flow", "layers": [
        [comp("generator", samples=2)],
        [comp("critic", "critic-model")],
        [comp("ranker", "ranker-model", top_k=1, use_critiques=True)],
        [comp("fuser", "fuser-model")],
    ]}
    g = archon_to_dict(data)
    assert g["nodes"]["l3_ranker"]["inputs"] == ["l1_generator", "l2_critic"]
    ranker = ScriptedBackend(lambda req, i: "Ranking: 2 > 1")
    graph = Graph.from_dict(g, backends={
        "gpt-4o-mini": ScriptedBackend(lambda req, i: f"Solution {i}. Answer: 4"),
        "critic-model": ScriptedBackend(lambda req, i: "Too long."),
        "ranker-model": ranker,
        "fuser-model": ScriptedBackend(lambda req, i: "Fused. Answer: 4")})
    assert graph.run("What is 2 + 2?").answer == "4"
    [rank] = ranker.requests
    assert "Feedback on earlier attempts" in rank.messages[-1].content
    assert "Too long." in rank.messages[-1].content
    data["layers"][2] = [comp("ranker", "ranker-model", top_k=1, use_critiques=False)]
    assert archon_to_dict(data)["nodes"]["l3_ranker"]["inputs"] == ["l1_generator"]
    # a second critic after such a ranker replaces the first one's critiques, which nobody
    # read: the first critic is left out, and the file says so
    data["layers"].insert(3, [comp("critic", "critic-2")])
    notes: dict[str, list[str]] = {}
    g = archon_to_dict(data, notes=notes)
    assert "l2_critic" not in g["nodes"]
    assert g["nodes"]["l5_fuser"]["inputs"] == ["l3_ranker", "l4_critic"]
    text = to_yaml(g, notes=notes)
    assert "# l2_critic left out: no later component reads its critiques (in Archon they " \
           "are computed and then replaced).\n" in text


# ------------------------------------------------------------------------ unsupported


def test_unit_tests_written_after_the_generators_check_their_candidates(tmp_path: Path
                                                                       ) -> None:
    src = write(tmp_path, """{
  "name": "unit-tests",
  "layers": [
    [{"type": "generator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024, "samples": 10}],
    [{"type": "unit_test_generator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024, "unit_test_cap": 5}],
    [{"type": "unit_test_evaluator", "model": "gpt-4o", "model_type": "OpenAI_API",
      "temperature": 0.7, "max_tokens": 1024, "samples": 1,
      "remove_unit_tests_from_prompt": true}]
  ]
}
""")
    proc = cli("import", "archon", str(src))
    assert proc.returncode == 0, proc.stderr
    g = yaml.safe_load(proc.stdout)
    # the tests come after the generators (they did not see them); candidates pass through
    # the test layer to the evaluator, which keeps them all, ranked (no top_k)
    assert g["nodes"] == {
        "l1_generator": {"role": "solver", "model": "gpt-4o", "samples": 10,
                         "temperature": 0.7, "max_tokens": 1024},
        "l2_unit_test_generator": {"role": "unit_test_generator", "model": "gpt-4o",
                                   "cap": 5, "temperature": 0.7, "max_tokens": 1024},
        "l3_unit_test_evaluator": {"role": "unit_test_evaluator", "model": "gpt-4o",
                                   "inputs": ["l1_generator", "l2_unit_test_generator"],
                                   "keep": "all", "temperature": 0.7, "max_tokens": 1024},
    }
    assert g["output"] == "l3_unit_test_evaluator"
    assert "  # l3_unit_test_evaluator: remove_unit_tests_from_prompt dropped: the evaluator " \
           "lists the tests apart from the question either way\n" in proc.stdout


CODE_CONFIG = {"name": "code", "layers": [
    [comp("unit_test_generator", "test-writer", unit_test_cap=2, samples=1)],
    [comp("generator", "coder", samples=3, no_system=True)],
    [comp("unit_test_evaluator", "checker", top_k=2, first_pass=True,
          remove_unit_tests_from_prompt=True, unit_test_cap=2)],
    [comp("fuser", "fuser-model", length_control=True)],
]}


def test_unit_tests_first_reach_the_generators_and_the_evaluator_keeps_the_passing() -> None:
    notes: dict[str, list[str]] = {}
    g = archon_to_dict(CODE_CONFIG, notes=notes)
    assert g["nodes"]["l1_unit_test_generator"] == {
        "role": "unit_test_generator", "model": "test-writer", "cap": 2, "temperature": 0.7,
        "max_tokens": 256}
    assert g["nodes"]["l2_generator"]["inputs"] == ["l1_unit_test_generator"]
    assert g["nodes"]["l2_generator"]["prompts"] == {"system": ""}  # no_system
    assert g["nodes"]["l3_unit_test_evaluator"]["inputs"] == ["l2_generator",
                                                              "l1_unit_test_generator"]
    assert g["nodes"]["l3_unit_test_evaluator"]["top_k"] == 2
    assert g["nodes"]["l3_unit_test_evaluator"]["first_k"] == 1  # first_pass
    assert g["nodes"]["l4_fuser"]["inputs"] == ["l3_unit_test_evaluator",
                                                "l1_unit_test_generator"]
    assert notes["l3_unit_test_evaluator"] == [
        "unit_test_cap dropped: the unit_test_generator caps the tests",
        "remove_unit_tests_from_prompt dropped: the evaluator lists the tests apart from the "
        "question either way"]
    tests = ScriptedBackend(lambda req, i: "['The answer is 4', 'The answer is short']")
    answers = iter(["It is 4. Answer: 4", "It is 5. Answer: 5", "It is 4!! Answer: 4"])
    coder = ScriptedBackend(lambda req, i: next(answers))
    checker = ScriptedBackend(lambda req, i: "Unit Test #1: [Passed]\nUnit Test #2: [Passed]"
                              if "4" in req.messages[-1].content.split("Response:")[1]
                              else "Unit Test #1: [Failed]\nUnit Test #2: [Passed]")
    fuser = ScriptedBackend(lambda req, i: "Fused. Answer: 4")
    graph = Graph.from_dict(g, backends={"test-writer": tests, "coder": coder,
                                         "checker": checker, "fuser-model": fuser})
    res = graph.run("What is 2 + 2?")
    assert res.status == "ok" and res.answer == "4"
    [solve] = coder.requests
    assert solve.messages[0].role == "user"  # no system prompt
    assert "pass the following unit tests:\n- The answer is 4\n- The answer is short" in \
        solve.messages[0].content
    assert len(checker.requests) == 3
    # first_pass: the first candidate passing every test is the one kept
    assert [c.text for c in res.steps["l3_unit_test_evaluator"].candidates] == [
        "It is 4. Answer: 4"]
    [fuse] = fuser.requests
    assert LENGTH_CONTROL in fuse.messages[-1].content
    assert "It is 4. Answer: 4" in fuse.messages[-1].content
    assert "It is 5" not in fuse.messages[-1].content


BATCHING = {"name": "batching", "layers": [
    [comp("generator", samples=4, top_k=1, checkpoint="outputs/run1"),
     comp("generator", "m2", no_system=False)],
    [comp("critic", length_contorl=True, no_system=True)],
    [comp("ranker", top_k=3, ranker_batch_size=16, use_critiques=False)],
    [comp("verifier", batch_num=2, samples=1)],
    [comp("fuser", top_k_generations=3, length_contorl=True, max_context_length=8192,
          fuse_generations_count=1,
          ranker_config={"ranker_checkpoint": "llm-blender/PairRM", "ranker_batch_size": 16})],
]}


def test_batching_and_storage_fields_are_dropped_with_a_comment(tmp_path: Path) -> None:
    src = write(tmp_path, BATCHING)
    proc = cli("import", "archon", str(src), "-o", str(tmp_path / "g.yaml"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "g.yaml").read_text()
    for line in [
        '  # l1_generator1: checkpoint "outputs/run1" dropped: where Archon stores or loads '
        "its outputs; the response cache (--cache) does that here",
        "  # l1_generator1: top_k 1 dropped: Archon's generator does not read it",
        "  # l2_critic: length_contorl dropped: only Archon's fuser reads it",
        "  # l2_critic: no_system dropped: a critic node writes its own prompts",
        "  # l3_ranker: ranker_batch_size 16 dropped: the batch size of Archon's PairRM "
        "ranker; an LLM ranker ranks every candidate in one call",
        "  # l4_verifier: batch_num 2 dropped: how many candidates Archon checks per call; "
        "each is checked in its own call here",
        "  # l5_fuser: top_k_generations 3 dropped: read by no Archon component",
        "  # l5_fuser: length_contorl: the prompt asks for no more than the longest candidate",
        "  # l5_fuser: max_context_length 8192 dropped: a context cap; max_tokens caps each "
        "completion here",
    ]:
        assert line in text.splitlines(), line
    g = yaml.safe_load(text)
    assert "prompts" not in g["nodes"]["l1_generator2"]  # no_system: false changes nothing
    assert LENGTH_CONTROL in g["nodes"]["l5_fuser"]["prompts"]["user"]
    v = cli("validate", str(tmp_path / "g.yaml"))
    assert v.returncode == 0, v.stderr


def test_the_test_configs_cover_every_component_type_and_field() -> None:
    """Every type and field the importer knows appears in a config these tests import."""
    configs = [FULL, CODE_CONFIG, BATCHING]
    used_types = {c["type"] for cfg in configs for layer in cfg["layers"] for c in layer}
    used_fields = {k for cfg in configs for layer in cfg["layers"] for c in layer for k in c}
    assert used_types == set(SUPPORTED)
    # first_k is covered below, on the evaluator and the verifier
    assert (FIELDS | set(DROPPED)) - used_fields == {"first_k"}
    notes: dict[str, list[str]] = {}
    g = archon_to_dict({"name": "fk", "layers": [
        [comp("unit_test_generator")], [comp("generator", samples=4)],
        [comp("unit_test_evaluator", first_k=2)],
        [comp("verifier", first_k=1, first_pass=True)]]}, notes=notes)
    assert g["nodes"]["l3_unit_test_evaluator"]["first_k"] == 2
    assert g["nodes"]["l3_unit_test_evaluator"]["keep"] == "all"
    assert g["nodes"]["l4_verifier"]["first_k"] == 1
    assert notes["l4_verifier"] == ["first_pass dropped: Archon's verifier does not read it"]


@pytest.mark.parametrize(("layers", "line"), [
    ([[comp("generator")], [{"type": "my_component", "model": "x", "model_type": "x"}]],
     "layers.1.0.type: unknown component type 'my_component' (custom components have no "
     "tts-graph equivalent; known: generator, fuser, critic, ranker, verifier, "
     "unit_test_generator, unit_test_evaluator)"),
    ([[comp("generator")], [comp("unit_test_evaluator")]],
     "layers.1.0.type: a unit_test_evaluator needs the tests of a unit_test_generator in an "
     "earlier layer"),
    ([[comp("generator")], [comp("unit_test_generator")]],
     "layers.1: the last layer is a unit_test_generator: its tests would feed nothing (end "
     "with a fuser, a ranker or a verifier)"),
    ([[comp("unit_test_generator")], [comp("fuser")]],
     "layers.1.0.type: a fuser needs candidates from an earlier layer: the first layer must "
     "hold generators"),
    ([[comp("unit_test_generator"), comp("generator")],
      [comp("unit_test_evaluator"), comp("fuser")]],
     "layers.1.0.type: a unit_test_evaluator must be alone in its layer (Archon runs it over "
     "the whole previous layer); this layer has 2 components"),
    ([[comp("generator")], [comp("fuser", frobnicate=1)]],
     "layers.1.0.frobnicate: field 'frobnicate' has no tts-graph equivalent"),
    ([[comp("generator")], [comp("fuser"), comp("fuser")]],
     "layers.1: the last layer has 2 components and Archon would pick one of their outputs at "
     "random: no equivalent (end with one component, such as a fuser or a ranker)"),
    ([[comp("generator")], [comp("critic")]],
     "layers.1: the last layer is a critic: its critiques would feed nothing (end with a "
     "fuser, a ranker or a verifier)"),
    ([[comp("fuser")]],
     "layers.0.0.type: a fuser needs candidates from an earlier layer: the first layer must "
     "hold generators"),
    ([[comp("generator")], [comp("ranker", top_k=2), comp("fuser")]],
     "layers.1.0.type: a ranker must be alone in its layer (Archon runs it over the whole "
     "previous layer); this layer has 2 components"),
    ([[comp("generator")], [comp("ranker")]],
     "layers.1.0.top_k: required: how many candidates the ranker keeps"),
    ([[comp("generator")], [comp("ranker", "llm-blender/PairRM", "", top_k=1)]],
     "layers.1.0.model: the PairRM reward-model ranker has no tts-graph equivalent (rank "
     "with an LLM instead)"),
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


def test_a_layer_written_as_one_component_is_one_clear_error(tmp_path: Path) -> None:
    """A layer given as a bare component (no list around it): Archon's Layer takes a dict
    for the older ``{"models": [...]}`` form and fails on it, so this is refused, in one line
    that says how to write it, not one line per field of the component."""
    data = {"name": "one-model", "layers": [
        {"type": "generator", "model": "Qwen/Qwen2-7B-Instruct", "model_type": "Together_API",
         "temperature": 0.5, "max_tokens": 512, "samples": 1}]}
    src = write(tmp_path, data)
    proc = cli("import", "archon", str(src))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"{src}:4: layers.0: a layer must be a list of components: this one is a single "
        "component (write the layer as [ {...} ]; Archon cannot load this form either)")
    data["layers"] = [[data["layers"][0]]]  # the same component in a list imports
    assert archon_to_dict(data, source="a.json")["nodes"]


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
