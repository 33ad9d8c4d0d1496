"""The command line: exit codes, one-line errors, outputs. Graphs here use the scripted
backend so they run instantly; tests/test_real_models.py runs the CLI on the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPTED = """\
version: 1
name: scripted-sc
models:
  m: {backend: scripted, model: fake, options: {answers: ["Answer: 4", "Answer: 4", "Answer: 5"]}}
nodes:
  solve: {role: solver, model: m, samples: 3}
  vote: {role: vote, inputs: [solve]}
output: vote
"""


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False,
                          env={**os.environ, **env} if env else None)


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(SCRIPTED)
    return p


def test_validate_presets_ok() -> None:
    presets = sorted(str(p) for p in (ROOT / "graphs").glob("*.yaml"))
    proc = cli("validate", *presets)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok: ") == len(presets)


def test_validate_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCRIPTED.replace("samples: 3", "samples: 0").replace("[solve]", "[slove]"))
    proc = cli("validate", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"{bad}:6: nodes.solve.samples: must be >= 1"
    assert "Traceback" not in proc.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    proc = cli("validate", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{tmp_path / 'nope.yaml'}: file not found"


def test_run_one_question_json(graph: Path) -> None:
    proc = cli("run", str(graph), "-q", "2+2?", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "4"
    assert data["usage"]["samples"] == 3
    assert data["steps"]["vote"]["meta"]["votes"] == {"4": 2.0, "5": 1.0}


def test_run_one_question_table(graph: Path) -> None:
    proc = cli("run", str(graph), "-q", "2+2?")
    assert proc.returncode == 0, proc.stderr
    assert "answer: 4" in proc.stdout
    assert "total" in proc.stdout


def test_run_many_from_jsonl(graph: Path, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "a"}\n"b"\n\n{"question": "c"}\n')
    out = tmp_path / "out.jsonl"
    proc = cli("run", str(graph), "--input", str(questions), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["a", "b", "c"]
    assert len(proc.stdout.strip().splitlines()) == 3


def test_run_bad_jsonl_is_one_line(graph: Path, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "a"}\n{oops\n')
    proc = cli("run", str(graph), "--input", str(questions))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"{questions}:2: invalid JSON")


def test_run_stream_prints_the_answer_then_the_usage(graph: Path) -> None:
    proc = cli("run", str(graph), "-q", "What is 2 + 2?", "--stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Answer: 4\n")  # the vote's pick, sent whole
    assert "answer: 4" in proc.stdout and "solve" in proc.stdout


def test_run_stream_needs_one_question_and_no_json(graph: Path, tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "a"}\n')
    for args in (["--input", str(q)], ["-q", "a", "--json"]):
        proc = cli("run", str(graph), *args, "--stream")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].endswith(
            "--stream prints one answer as it comes: use it with -q, without --json")


def test_run_needs_exactly_one_source(graph: Path) -> None:
    assert cli("run", str(graph)).returncode == 2


@pytest.mark.parametrize("fmt,marker", [("ascii", "◀ output"), ("mermaid", "flowchart TD"),
                                         ("dot", "digraph")])
def test_show_formats(fmt: str, marker: str) -> None:
    proc = cli("show", str(ROOT / "graphs" / "debate.yaml"), "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout
    assert "debate@r1" in proc.stdout


def test_show_unknown_format() -> None:
    proc = cli("show", str(ROOT / "graphs" / "single.yaml"), "--format", "svg")
    assert proc.returncode == 2


def test_schema_is_json_schema() -> None:
    proc = cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["additionalProperties"] is False
    assert "nodes" in schema["properties"]


# ------------------------------------------------- model entries checked without running

UNRUNNABLE = """\
version: 1
name: unrunnable
models:
  big: {backend: local, model: llama-900b}
  filed: {backend: local, model: mine, options: {path: missing.gguf}}
  hub: {backend: vllm, model: hosted_vllm/org/model}
  spaced: {backend: litellm, model: "openai/ gpt-4o"}
  keyed: {backend: litellm, model: openai/gpt-4o-mini, api_key_env: TTS_GRAPH_TEST_UNSET}
nodes:
  a: {role: solver, model: big}
  b: {role: solver, model: filed}
  c: {role: solver, model: hub}
  d: {role: solver, model: spaced}
  e: {role: fuser, model: keyed, inputs: [a, b, c, d]}
output: e
"""


def test_validate_checks_model_entries_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(UNRUNNABLE)
    proc = cli("validate", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert f"{bad}:4: models.big.model: unknown local model 'llama-900b'" in proc.stderr
    assert f"{bad}:5: models.filed.options.path: no model file at missing.gguf" in proc.stderr
    assert f"{bad}:6: models.hub.model: 'hosted_vllm/org/model' is not a Hugging Face " \
           "repo id" in proc.stderr
    assert f"{bad}:7: models.spaced.model: 'openai/ gpt-4o' is not a litellm model " \
           "string" in proc.stderr
    warning = (f"{bad}:8: models.keyed.api_key_env: environment variable "
               "TTS_GRAPH_TEST_UNSET is not set (warning: set it where the graph runs)")
    assert warning in lines and len(lines) == 5


def test_unset_key_is_a_warning_and_run_gives_the_same_line(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(UNRUNNABLE.split("models:")[0] + """models:
  hub: {backend: vllm, model: Qwen/Qwen2.5-0.5B-Instruct}
  keyed: {backend: litellm, model: openai/gpt-4o-mini, api_key_env: TTS_GRAPH_TEST_UNSET}
  local: {backend: local, model: smollm2-135m}
nodes:
  a: {role: solver, model: hub}
  b: {role: solver, model: local}
  e: {role: fuser, model: keyed, inputs: [a, b]}
output: e
""")
    proc = cli("validate", str(ok))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (f"{ok}:5: models.keyed.api_key_env: environment variable "
                                   "TTS_GRAPH_TEST_UNSET is not set (warning: set it where "
                                   "the graph runs)")
    proc = cli("run", str(ok), "-q", "hi")  # the model is called now: the key is needed
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"{ok}:5: models.keyed.api_key_env: environment variable "
                                   "TTS_GRAPH_TEST_UNSET is not set")
    bad = tmp_path / "bad.yaml"
    bad.write_text(UNRUNNABLE)
    proc = cli("run", str(bad), "-q", "hi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(
        f"{bad}:4: models.big.model: unknown local model 'llama-900b'")


def test_validate_and_run_check_simulated_models_and_keys_with_file_and_line(
        tmp_path: Path) -> None:
    """An unknown simulated model passed ``validate`` and failed ``run`` with a line
    without its file; a key holding a line break inside was found only by the call."""
    bad = tmp_path / "sim.yaml"
    bad.write_text("version: 1\nname: s\nmodels:\n"
                   "  a: {backend: sim, model: strong}\n"
                   "  b: {backend: sim, model: mine, options: {base: llama-9b}}\n"
                   "  c: {backend: sim, model: llama-8b, options: {colour: blue}}\n"
                   "  d: {backend: openai, model: x, api_key_env: TTS_GRAPH_TEST_TWO_KEYS}\n"
                   "nodes:\n  s: {role: solver, model: a}\n  t: {role: solver, model: b}\n"
                   "  u: {role: solver, model: c}\n  v: {role: fuser, model: d, "
                   "inputs: [s, t, u]}\noutput: v\n")
    env = {"TTS_GRAPH_TEST_TWO_KEYS": "sk-one\nsk-two"}
    for command in (("validate", str(bad)), ("run", str(bad), "-q", "hi")):
        proc = cli(*command, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[0].startswith(f"{bad}:4: models.a.model: unknown simulated model "
                                   "'strong'"), lines
        assert lines[1].startswith(f"{bad}:5: models.b.options.base: unknown simulated "
                                   "model 'llama-9b'"), lines
        assert lines[2].startswith(f"{bad}:6: models.c.options: unknown options colour"), lines
        assert lines[3] == (f"{bad}:7: models.d.api_key_env: environment variable "
                            "TTS_GRAPH_TEST_TWO_KEYS (api_key_env) holds a line break or "
                            "another control character: not one key"), lines
        assert "sk-one" not in proc.stderr
