"""unit_test_generator: a model writes unit tests for the question (Archon's component).

Its output (kind ``tests``) holds one candidate whose ``meta["tests"]`` is the list of tests.
Nodes that take it as an input get "Your response should pass the following unit tests" in
their prompt's ``{context}``; a ``unit_test_evaluator`` checks candidates against them.
"""

from __future__ import annotations

import ast
import re
from typing import ClassVar

from ..spec import UnitTestGeneratorNode
from ..types import Candidate, Completion, StepOutput
from .base import Call, Role, StepContext

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|(?:unit\s+)?test\s*#?\d+\s*[:.)-])\s*",
                     re.IGNORECASE)


def parse_tests(text: str) -> list[str]:
    """The tests in a model's reply: a Python list literal, else ``assert`` lines (code
    tests), else bulleted or numbered lines, else every non-empty line."""
    body = text.strip()
    fence = re.search(r"```[^\n]*\n(.*?)(?:```|\Z)", body, re.DOTALL)
    if fence:
        body = fence.group(1).strip()
    if body.startswith("[") and body.endswith("]"):
        try:
            value = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value if v.strip()]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    asserts = [line for line in lines if line.startswith("assert ")]
    if asserts:
        return asserts
    bulleted = [_BULLET.sub("", line) for line in lines if _BULLET.match(line)]
    return [t for t in (bulleted or lines) if t]


class UnitTestGenerator(Role):
    name = "unit_test_generator"
    output_kind = "tests"
    system_prompt: ClassVar[dict[str, str]] = {"main": "You are a unit test generator."}
    user_prompt: ClassVar[dict[str, str]] = {
        "main": "{context}Write unit tests that a correct response to this query must pass. "
        "{how_many}For code, write each test as one Python `assert` line; otherwise write "
        "each test as one line starting with '- '. Write only the tests.\n\nQuery: {question}"
    }
    placeholders: ClassVar[dict[str, set[str]]] = {"main": {"question", "context",
                                                            "how_many"}}

    def calls(self, ctx: StepContext) -> list[Call]:
        node = ctx.node
        assert isinstance(node, UnitTestGeneratorNode)
        how_many = f"Write at most {node.cap} tests. " if node.cap else ""
        return [Call(ctx.model, self.messages(ctx, {"how_many": how_many}))]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        node = ctx.node
        assert isinstance(node, UnitTestGeneratorNode)
        comps = results[0] if results else []
        if not comps:
            return self.output(ctx, [], tests=0)
        tests = parse_tests(comps[0].text)
        if node.cap is not None:
            tests = tests[:node.cap]
        cand = Candidate(text="\n".join(tests), model=ctx.model, meta={"tests": tests})
        return self.output(ctx, [cand], tests=len(tests))
