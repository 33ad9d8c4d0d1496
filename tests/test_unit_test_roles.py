"""The unit-test roles: a model writes tests for the question (``unit_test_generator``);
a model or the code sandbox checks each candidate against them (``unit_test_evaluator``)."""

from __future__ import annotations

import pytest

from tts_graph import Executor, GraphErrors, QueryResult, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.roles.unit_test_evaluator import parse_verdicts
from tts_graph.roles.unit_test_generator import parse_tests

QUESTION = "Write a Python function add(a, b) that returns the sum of a and b."
TESTS_REPLY = "```python\nassert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(2, 2) == 4\n```"
RIGHT = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```"
WRONG = "```python\ndef add(a, b):\n    return a * b\n```"  # passes add(2, 2) only
BROKEN = "```python\ndef add(a, b) return\n```"


def run(nodes: str, backends: dict[str, ScriptedBackend], output: str) -> QueryResult:
    decl = ", ".join(f"{m}: {{backend: scripted, model: {m}}}" for m in backends)
    doc = loads_graph(f"version: 1\nname: t\nmodels: {{{decl}}}\nnodes:\n{nodes}\n"
                      f"output: {output}\n")
    return Executor(doc, backends=backends).run(QUESTION)


def user(req: GenerationRequest) -> str:
    return req.messages[-1].content


@pytest.mark.parametrize(("reply", "tests"), [
    (TESTS_REPLY, ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]),
    ("['The answer names Paris', 'The answer is one sentence']",
     ["The answer names Paris", "The answer is one sentence"]),
    ("Tests:\n- names Paris\n- one sentence", ["names Paris", "one sentence"]),
    ("1. names Paris\n2) one sentence\nUnit Test #3: cites a source",
     ["names Paris", "one sentence", "cites a source"]),
    ("names Paris\none sentence", ["names Paris", "one sentence"]),
])
def test_parse_tests(reply: str, tests: list[str]) -> None:
    assert parse_tests(reply) == tests


def test_parse_verdicts_takes_the_last_verdict_per_test() -> None:
    text = ("Unit Test #1: [Failed]\nUnit Test #2: it adds [Passed]\n"
            "On second thought, Unit Test #1: [Passed]")
    assert parse_verdicts(text, 3) == [True, True, False]


def test_generated_tests_reach_the_solver_prompt_capped() -> None:
    tests = ScriptedBackend(lambda req, i: TESTS_REPLY)
    solver = ScriptedBackend(lambda req, i: RIGHT)
    res = run("""
  tests: {role: unit_test_generator, model: t, cap: 2}
  solve: {role: solver, model: s, inputs: [tests]}
""", {"t": tests, "s": solver}, "solve")
    (treq,) = tests.requests
    assert QUESTION in user(treq) and "at most 2 tests" in user(treq)
    assert res.steps["tests"].kind == "tests"
    assert res.steps["tests"].candidates[0].meta["tests"] == ["assert add(1, 2) == 3",
                                                             "assert add(-1, 1) == 0"]
    (sreq,) = solver.requests
    assert user(sreq) == ("Your response should pass the following unit tests:\n"
                          "- assert add(1, 2) == 3\n- assert add(-1, 1) == 0\n\n" + QUESTION)


GRAPH = """
  tests: {role: unit_test_generator, model: t}
  solve: {role: solver, model: s, samples: 4, inputs: [tests]}
  check: {role: unit_test_evaluator, CHECK, inputs: [solve, tests]EXTRA}
"""
CANDS = (WRONG, RIGHT, BROKEN, RIGHT)


def model_judge(req: GenerationRequest, i: int) -> str:
    """Says what running the code would say."""
    if "a + b" in user(req):
        return "Unit Test #1: [Passed]\nUnit Test #2: [Passed]\nUnit Test #3: [Passed]"
    if "a * b" in user(req):
        return "Unit Test #1: [Failed]\nUnit Test #2: [Failed]\nUnit Test #3: [Passed]"
    return "It does not compile."


def graph_for(check: str, extra: str = "") -> tuple[str, dict[str, ScriptedBackend]]:
    backends = {"t": ScriptedBackend(lambda req, i: TESTS_REPLY),
                "s": ScriptedBackend(lambda req, i: CANDS[req.sample_offset + i])}
    if check == "model":
        backends["e"] = ScriptedBackend(model_judge)
        text = GRAPH.replace("CHECK", "model: e")
    else:
        text = GRAPH.replace("CHECK", "check: sandbox")
    return text.replace("EXTRA", extra), backends


@pytest.mark.parametrize("check", ["model", "sandbox"])
def test_evaluator_keeps_the_candidates_that_pass_every_test(check: str) -> None:
    nodes, backends = graph_for(check)
    res = run(nodes, backends, "check")
    out = res.steps["check"]
    assert [c.text for c in out.candidates] == [RIGHT, RIGHT]  # duplicates kept for votes
    assert all(c.meta["tests_passed"] == 3 and c.score == 1.0 for c in out.candidates)
    assert out.meta == {"passed": 2, "tests": 3}
    if check == "model":  # one call per distinct candidate, listing the tests
        assert len(backends["e"].requests) == 3
        assert "Unit Test #2: assert add(-1, 1) == 0" in user(backends["e"].requests[0])
    else:
        assert "e" not in backends and res.usage.calls == 2  # tests + solve: no model check


@pytest.mark.parametrize("check", ["model", "sandbox"])
def test_evaluator_ranks_by_tests_passed_with_top_k(check: str) -> None:
    nodes, backends = graph_for(check, ", top_k: 3")
    out = run(nodes, backends, "check").steps["check"]
    assert [c.text for c in out.candidates] == [RIGHT, RIGHT, WRONG]
    assert [c.meta["tests_passed"] for c in out.candidates] == [3, 3, 1]


def test_evaluator_first_k_and_nothing_passing() -> None:
    nodes, backends = graph_for("model", ", first_k: 1")
    out = run(nodes, backends, "check").steps["check"]
    assert [c.text for c in out.candidates] == [RIGHT]
    nodes, backends = graph_for("sandbox")
    backends["s"] = ScriptedBackend(lambda req, i: (WRONG, BROKEN, WRONG, BROKEN)[
        req.sample_offset + i])
    out = run(nodes, backends, "check").steps["check"]
    # none passes every test: all are kept, ranked (1 of 3 before 0 of 3), like the verifier
    assert [c.meta["tests_passed"] for c in out.candidates] == [1, 1, 0, 0]
    assert out.meta["passed"] == 0


@pytest.mark.parametrize("ending", [
    'print("TTS_GRAPH_TESTS [true, true, true]", flush=True)\nimport os\nos._exit(0)',
    'print("TTS_GRAPH_TESTS [true, tr", flush=True)\nimport os\nos._exit(0)',
    "import sys\nsys.exit(0)"])
def test_sandbox_check_counts_only_its_own_harness(ending: str) -> None:
    """A candidate that prints what looks like the harness's line, or ends the program
    before the tests run, passes none (it passed all three, or crashed the step)."""
    from tts_graph.roles.unit_test_evaluator import sandbox_verdicts

    code = "def add(a, b):\n    return a * b\n" + ending + "\n"
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
    assert sandbox_verdicts(code, tests, timeout_s=5) == [False, False, False]
    assert sandbox_verdicts("def add(a, b):\n    return a * b\n", tests, timeout_s=5) == [
        False, False, True]


def test_a_sandbox_that_cannot_be_set_up_is_an_infra_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidates' code never ran: every test used to count as failed (a verdict)."""
    from tts_graph.roles import unit_test_evaluator
    from tts_graph.sandbox.host import SandboxResult

    monkeypatch.setattr(unit_test_evaluator, "run_python", lambda *a, **k: SandboxResult(
        False, "sandbox setup failed: mount /proc: Operation not permitted", "", ""))
    nodes, backends = graph_for("sandbox")
    res = run(nodes, backends, "check")
    assert res.status == "error" and res.steps["check"].status == "error"
    assert res.error == ("check: code sandbox: sandbox setup failed: mount /proc: "
                         "Operation not permitted")


@pytest.mark.parametrize(("nodes", "message"), [
    ("  s: {role: solver, model: m}\n  e: {role: unit_test_evaluator, model: m, inputs: [s]}",
     "nodes.e.inputs: needs a unit_test_generator among its inputs"),
    ("  t: {role: unit_test_generator, model: m}\n  s: {role: solver, model: m}\n"
     "  e: {role: unit_test_evaluator, check: sandbox, model: m, inputs: [s, t]}",
     "check: sandbox runs the code and calls no model"),
    ("  t: {role: unit_test_generator, model: m}\n  s: {role: solver, model: m}\n"
     "  e: {role: unit_test_evaluator, inputs: [s, t]}",
     "nodes.e.model: required"),
])
def test_graph_errors(nodes: str, message: str) -> None:
    with pytest.raises(GraphErrors) as exc:
        doc = loads_graph(f"version: 1\nname: t\nmodels: {{m: {{backend: scripted, model: m}}}}"
                          f"\nnodes:\n{nodes}\noutput: e\n")
        from tts_graph.compile import compile_graph

        compile_graph(doc)
    assert any(message in line for line in exc.value.lines()), exc.value.lines()
