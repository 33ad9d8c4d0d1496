"""Task files in the formats they are published in (GSM8K, MATH / MATH-500, multiple choice
as MMLU and ARC write it, HumanEval), loaded with no field options and scored end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_tasks import one_line_error

from tts_graph.evaluate.scorers import get_scorer
from tts_graph.evaluate.tasks import load_task


def jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_gsm8k_as_published(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Janet sells eggs.", "answer": "She makes 9 * 2 = <<9*2=18>>18.\n#### 1,234"},
        {"question": "How cold?", "answer": "It drops 5.\n#### -5"},
    ])
    task = load_task(f)
    # the gold answer is the number after ####, not the whole solution (scored against the
    # whole solution, every reply was wrong)
    assert [it.answer for it in task.items] == ["1,234", "-5"]
    assert task.scorer.name == "numeric"
    assert task.items[0].meta["solution"].endswith("#### 1,234")
    first = task.items[0]
    assert task.scorer.score(first, None, "The answer is $1,234.00.").correct
    assert not task.scorer.score(first, None, "The answer is 18.").correct


def test_math500_and_math_as_published(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "math500.jsonl", [
        {"problem": "Half?", "solution": "... \\boxed{\\frac{1}{2}}", "answer": "\\frac{1}{2}",
         "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
        {"problem": "Where?", "solution": "...", "answer": "(-\\infty, 3]",
         "unique_id": "test/algebra/2.json"},
    ])
    task = load_task(f)
    assert [(it.question, it.answer) for it in task.items] == [
        ("Half?", "\\frac{1}{2}"), ("Where?", "(-\\infty, 3]")]
    assert task.scorer.name == "math"  # LaTeX gold answers; normalized would miss \dfrac
    half, where = task.items
    assert task.scorer.score(half, None, "so \\boxed{\\dfrac{1}{2}}").correct
    assert not task.scorer.score(where, None, "so \\boxed{3}").correct
    # MATH as published: no answer field, the gold answer is the solution's last \boxed{}
    f = jsonl(tmp_path / "math.jsonl", [
        {"problem": "Frac?", "solution": "First \\boxed{2}, no: $\\boxed{\\frac{\\sqrt{3}}{2}}$.",
         "level": "Level 5", "type": "Geometry"},
    ])
    task = load_task(f)
    assert task.items[0].answer == "\\frac{\\sqrt{3}}{2}" and task.scorer.name == "math"
    # a named field is taken as named: no guessing
    assert "no field 'question'" in one_line_error(f, question_field="question")


def test_multiple_choice_files(tmp_path: Path) -> None:
    opts = ["red", "blue", "green", "pink"]
    f = jsonl(tmp_path / "mc.jsonl", [
        {"id": "a", "question": "Which?", "choices": opts, "answer": "B"},
        {"id": "b", "question": "Which?", "choices": opts, "answer": "(C)"},
        {"id": "c", "question": "Which?", "choices": opts, "answer": "A)"},
        {"id": "d", "question": "Which?", "choices": opts, "answer": "D."},
        {"id": "e", "question": "Which?", "choices": opts, "answer": "green"},
        {"id": "f", "question": "Which?", "choices": opts, "answer": 3},  # MMLU: 0-based index
    ])
    task = load_task(f)
    assert task.scorer.name == "choice"
    assert [it.answer for it in task.items] == ["B", "C", "A", "D", "C", "D"]
    first = task.items[0]
    # the model sees the options (it saw only "Which?")
    assert "A) red\nB) blue\nC) green\nD) pink" in first.question
    assert first.meta["choices"] == {"A": "red", "B": "blue", "C": "green", "D": "pink"}
    assert task.scorer.score(first, None, "The answer is (B).").correct
    assert task.scorer.score(first, "blue", None).correct
    assert not task.scorer.score(first, None, "**Answer:** C").correct
    # ARC: {"label": [...], "text": [...]} and answerKey; a question listing its options
    f = jsonl(tmp_path / "arc.jsonl", [
        {"id": "q1", "question": "Which is a gas?\nA) helium\nB) lead",
         "choices": {"label": ["A", "B"], "text": ["helium", "lead"]}, "answerKey": "A"},
    ])
    task = load_task(f, answer_field="answerKey")
    assert task.items[0].question == "Which is a gas?\nA) helium\nB) lead"
    assert task.items[0].answer == "A" and task.scorer.name == "choice"
    # a gold answer that is no option: at load time, naming the item
    f = jsonl(tmp_path / "bad.jsonl", [{"question": "Which?", "choices": opts, "answer": "E"}])
    assert "item 0: gold answer 'E' is not one of the options A, B, C, D" in one_line_error(
        f, scorer="choice")


def test_choice_scorer_gold_and_list_options() -> None:
    from tts_graph.evaluate.tasks import Item

    s = get_scorer("choice")
    assert s.score(Item("1", "q", "D."), None, "Answer: D").correct
    listed = Item("1", "q", "B", {"choices": ["red", "blue", "green"]})
    assert s.score(listed, "blue", None).correct
    assert not s.score(listed, "red", None).correct


def test_humaneval_format_file(tmp_path: Path) -> None:
    rows = [{"task_id": f"HumanEval/{i}", "prompt": f"def {name}(a, b):\n    \"\"\"Doc.\"\"\"\n",
             "canonical_solution": f"    return a {op} b\n",
             "test": f"def check(candidate):\n    assert candidate(3, 2) == {want}\n",
             "entry_point": name}
            for i, (name, op, want) in enumerate([("add", "+", 5), ("sub", "-", 1)])]
    task = load_task(jsonl(tmp_path / "he.jsonl", rows))
    assert task.scorer.name == "code"
    assert [it.id for it in task.items] == ["HumanEval/0", "HumanEval/1"]
    add = task.items[0]
    assert "def add(a, b):" in add.question and add.answer == "    return a + b\n"
    assert {"prompt", "test", "entry_point"} <= set(add.meta)
    program = task.scorer.program(add, "```python\n" + add.meta["prompt"] + add.answer + "```")
    exec(compile(program, "he", "exec"), {})  # the canonical solution passes its tests
    wrong = task.scorer.program(add, "    return a - b\n")
    with pytest.raises(AssertionError):
        exec(compile(wrong, "he", "exec"), {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q?", "answer": ""}', "field 'answer' is empty: no gold answer"),
        ('{"question": "q?", "answer": "  "}', "field 'answer' is empty: no gold answer"),
        ('{"question": "q?", "answer": NaN}', "field 'answer' must be text or a number"),
        ('{"question": "q?", "answer": Infinity}', "field 'answer' must be text or a number"),
    ],
)
def test_missing_gold_answers_are_named(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"question": "ok?", "answer": "1"}\n' + line + "\n", encoding="utf-8")
    assert one_line_error(str(f)) == f"{f}:2: {message}"


def test_long_gold_answers_are_clipped_in_errors(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "t.jsonl", [{"question": "q?", "answer": "x" * 10_000}])
    assert len(one_line_error(f, scorer="numeric")) < 300


def test_gold_numbers_with_currency_or_percent_are_numbers(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "money.jsonl", [
        {"question": "Price?", "answer": "€5"}, {"question": "Cost?", "answer": "£1,234.50"},
        {"question": "Share?", "answer": "25%"}, {"question": "Yen?", "answer": "¥ 300"},
    ])
    task = load_task(f)
    assert task.scorer.name == "numeric"  # it was normalized: "5 euros" never matched "€5"
    price, cost, share, yen = task.items
    assert task.scorer.score(price, None, "It costs 5 euros. The answer is 5.").correct
    assert task.scorer.score(cost, None, "Answer: £1234.5").correct
    assert task.scorer.score(share, None, "The answer is 25%.").correct
    assert not task.scorer.score(share, None, "The answer is 0.25").correct
    assert task.scorer.score(yen, None, "The answer is \\boxed{300}").correct


def test_question_starting_like_an_option_still_gets_its_options(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "mc.jsonl", [
        {"question": "A. Lincoln was president in which year?", "choices": ["1861", "1901"],
         "answer": 0},
        {"question": "Pick one.\n(A) up\n(B) down", "choices": ["up", "down"], "answer": "B"},
    ])
    lincoln, listed = load_task(f).items
    assert lincoln.question.endswith("A) 1861\nB) 1901\n\nAnswer with the letter of the "
                                     "correct option.")
    assert listed.question == "Pick one.\n(A) up\n(B) down"


def test_gsm8k_reference_solutions_score_right_against_their_own_gold() -> None:
    """Each of GSM8K's 1,319 reference solutions, as a reply, is right under numeric and math
    (old code: 7 wrong under numeric, 4 under math, all read off a number before '#### N')."""
    task = load_task("gsm8k")
    numeric, math = get_scorer("numeric"), get_scorer("math")
    wrong = [(name, it.id) for it in task.items for name, s in (("numeric", numeric),
                                                                  ("math", math))
             if not s.score(it, None, it.meta["solution"]).correct]
    assert wrong == []


def test_arc_numeric_labels_and_mmlu_style_csv_columns(tmp_path: Path) -> None:
    # some ARC questions label their options 1-4, and answerKey "3"
    f = jsonl(tmp_path / "arc.jsonl", [
        {"id": "q", "question": "Which is a gas?", "answerKey": "3",
         "choices": {"label": ["1", "2", "3"], "text": ["iron", "wood", "helium"]}},
    ])
    (q,) = load_task(f, answer_field="answerKey").items
    assert q.answer == "C" and "A) iron\nB) wood\nC) helium" in q.question
    # question,A,B,C,D,answer columns
    f = tmp_path / "mmlu.csv"
    f.write_text("question,A,B,C,D,answer\nSky?,red,blue,green,pink,B\n", encoding="utf-8")
    task = load_task(str(f))
    assert task.scorer.name == "choice" and task.items[0].answer == "B"
    assert "B) blue" in task.items[0].question
    assert task.scorer.score(task.items[0], None, "The answer is (B).").correct


def test_arc_and_openbookqa_as_first_published(tmp_path: Path) -> None:
    f = jsonl(tmp_path / "arc.jsonl", [
        {"id": "Mercury_7", "answerKey": "B",
         "question": {"stem": "Which is a metal?",
                      "choices": [{"text": "wood", "label": "A"}, {"text": "iron", "label": "B"}]}},
        {"id": "Mercury_8", "question": "Which is a gas?", "answerKey": "1",
         "choices": {"text": ["helium", "lead"], "label": ["1", "2"]}},
    ])
    task = load_task(f)  # no field options
    assert task.scorer.name == "choice"
    assert [(it.id, it.answer) for it in task.items] == [("Mercury_7", "B"), ("Mercury_8", "A")]
    assert task.items[0].question.startswith("Which is a metal?\n\nA) wood\nB) iron")
