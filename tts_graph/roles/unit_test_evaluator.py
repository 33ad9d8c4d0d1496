"""unit_test_evaluator: checks each candidate against a ``unit_test_generator``'s tests and
keeps the passing ones (Archon's component), with a model or in the code sandbox.

- ``check: model``: one call per distinct candidate; the model answers ``Unit Test #i:
  [Passed]`` or ``[Failed]`` for each test.
- ``check: sandbox``: no model call; the candidate's code (its last fenced block, else its
  text) runs in ``tts_graph.sandbox`` with each test executed after it; a test
  passes when it raises nothing.

Candidates are ranked by tests passed (stable: input order breaks ties). Kept: those that pass
every test (all of them, ranked, when none do: like the verifier), or the ``top_k`` best, or
with ``first_k`` the first k in input order that pass every test when k of them do.
"""

from __future__ import annotations

import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from ..answers import extract_code
from ..errors import BackendError
from ..sandbox import run_python
from ..spec import UnitTestEvaluatorNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext, clip

_VERDICT = re.compile(r"unit\s+test\s*#?\s*(\d+)\s*:?[^\n\[]*\[\s*(passed|failed)\s*\]",
                      re.IGNORECASE)
# runs after the candidate's code in the sandbox: each test alone, the count on stdout
_HARNESS = """

def _tts_graph_run_tests(_tests):
    _passed = []
    for _src in _tests:
        try:
            exec(_src, globals())
            _passed.append(True)
        except BaseException:
            _passed.append(False)
    __import__("sys").stdout.flush()
    __import__("os").write(1, ("\\n{marker} " + __import__("json").dumps(_passed) + "\\n")
                           .encode())

_tts_graph_run_tests({tests})
"""


def tests_of(ctx: StepContext) -> list[str]:
    """The tests of the step's ``unit_test_generator`` inputs, in input order."""
    out: list[str] = []
    for inp in ctx.inputs:
        if inp.kind == "tests" and inp.candidates:
            out.extend(inp.candidates[0].meta.get("tests", []))
    return out


def parse_verdicts(text: str, count: int) -> list[bool]:
    """Per test, whether the reply says it passed (the last verdict given for it wins; a
    test without one failed)."""
    found: dict[int, bool] = {}
    for m in _VERDICT.finditer(text):
        found[int(m.group(1))] = m.group(2).lower() == "passed"
    return [found.get(i, False) for i in range(1, count + 1)]


def sandbox_verdicts(code: str, tests: list[str], timeout_s: float) -> list[bool]:
    """Run ``code`` then each test in the sandbox; per test, whether it raised nothing."""
    # this run's marker: a line the candidate's own output cannot pass for the harness's
    marker = f"TTS_GRAPH_TESTS {secrets.token_hex(8)}"
    result = run_python(code + _HARNESS.format(tests=repr(tests), marker=marker),
                        timeout_s=timeout_s)
    if result.setup_failed:  # the code never ran: no verdict on it (an infrastructure error)
        raise BackendError(f"code sandbox: {result.reason}")
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(marker + " "):
            try:
                got = json.loads(line.removeprefix(marker + " "))
            except ValueError:
                break
            if isinstance(got, list) and len(got) == len(tests):
                return [v is True for v in got]
    return [False] * len(tests)  # the code itself failed (syntax error, timeout...)


class UnitTestEvaluator(Role):
    name = "unit_test_evaluator"
    system_prompt: ClassVar[dict[str, str]] = {"main": "You are a unit test evaluator."}
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "Query: {question}\n\nResponse:\n{candidate}\n\nUnit tests:\n{tests}\n\n"
        "For each unit test, decide whether the response passes it. Answer with one line "
        "per test, 'Unit Test #1: [Passed]' or 'Unit Test #1: [Failed]', and so on."
    }
    placeholders: ClassVar[dict[str, set[str]]] = {"main": {"question", "context",
                                                            "candidate", "tests"}}

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, UnitTestEvaluatorNode)
        tests = tests_of(ctx)
        if node.check == "sandbox" or not tests:
            return []
        listed = "\n".join(f"Unit Test #{i}: {t}" for i, t in enumerate(tests, start=1))
        return [Call(ctx.model, self.messages(ctx, {"candidate": clip(c.text),
                                                    "tests": listed}),
                     seed_offset=i, key=str(i))
                for i, c in enumerate(ctx.candidates())]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        node = ctx.node
        assert isinstance(node, UnitTestEvaluatorNode)
        tests = tests_of(ctx)
        unique = ctx.candidates()
        if not tests:  # nothing to check against: every candidate passes on, unranked
            return self.output(ctx, ctx.candidates(unique=False), passed=0, tests=0)
        if node.check == "sandbox":
            with ThreadPoolExecutor(max_workers=4) as pool:  # one subprocess each
                verdicts = list(pool.map(
                    lambda c: sandbox_verdicts(extract_code(c.text), tests, node.timeout_s),
                    unique))
        else:
            verdicts = [parse_verdicts(comps[0].text, len(tests)) if comps
                        else [False] * len(tests)
                        for comps in results]
        by_text = dict(zip((c.text for c in unique), verdicts, strict=False))
        # every sample keeps its verdict, so a vote downstream still counts duplicates
        checked = [
            Candidate(c.text, c.answer, sum(by_text.get(c.text, [])) / len(tests), c.model,
                      {**c.meta, "tests_passed": sum(by_text.get(c.text, [])),
                       "tests": len(tests)})
            for c in ctx.candidates(unique=False)
        ]
        passing = [c for c in checked if c.meta["tests_passed"] == len(tests)]
        if node.first_k is not None and len(passing) >= node.first_k:
            return self.output(ctx, passing[:node.first_k], passed=len(passing),
                               tests=len(tests))
        ranked = sorted(checked, key=lambda c: -(c.score or 0.0))
        if node.top_k is not None:
            kept = ranked[:node.top_k]
        elif node.keep == "passing" and passing:
            kept = passing
        else:
            kept = ranked
        return self.output(ctx, kept, passed=len(passing), tests=len(tests))
