"""Scorers: numeric, math, choice, exact, normalized and code (HumanEval pass@1)."""

from __future__ import annotations

import threading

import pytest

from tts_graph.errors import TTSGraphError
from tts_graph.evaluate.scorers import (
    SCORERS,
    Score,
    Scorer,
    ScorerError,
    extract_code,
    get_scorer,
)
from tts_graph.evaluate.tasks import Item, load_task


def item(answer: str, **meta: object) -> Item:
    return Item("q1", "question?", answer, dict(meta))


# --------------------------------------------------------------------------------- numeric
@pytest.mark.parametrize(
    ("gold", "answer", "text"),
    [
        ("18", "18", None),
        ("18", "18.0", None),
        ("1000", "1,000", None),
        ("1,000", "1000", None),
        ("18", "$18", None),
        ("0.5", "1/2", None),
        ("-3", "-3.00", None),
        ("18", None, "She makes 9 * 2 = $18 every day.\n#### 18"),
        ("18", None, "so the total is \\boxed{18}. Check: 3 + 4 = 7"),
        ("18", None, "Answer: 18 dollars"),
        ("18", "18 dollars", "irrelevant 5"),
    ],
)
def test_numeric_correct(gold: str, answer: str | None, text: str | None) -> None:
    s = get_scorer("numeric").score(item(gold), answer, text)
    assert s == Score(True, s.detail) and s.correct, s


@pytest.mark.parametrize(
    ("answer", "text"),
    [("17", None), ("18.5", None), (None, "The answer is 17"), ("180", "18")],
)
def test_numeric_wrong(answer: str | None, text: str | None) -> None:
    s = get_scorer("numeric").score(item("18"), answer, text)
    assert not s.correct
    assert "gold 18" in s.detail


def test_numeric_prefers_the_graphs_answer_then_the_text() -> None:
    sc = get_scorer("numeric")
    assert sc.score(item("7"), "7", "a sample that rambles to 8").correct
    assert sc.score(item("7"), "seven", "so it is 7").correct  # no number in the answer
    s = sc.score(item("7"), None, None)
    assert not s.correct and s.detail == "no number in nothing"
    s = sc.score(item("7"), "no idea", "none at all")
    assert not s.correct and s.detail.startswith("no number in")


def test_numeric_rejects_a_non_numeric_gold() -> None:
    with pytest.raises(ScorerError, match="not a number"):
        get_scorer("numeric").score(item("Paris"), "Paris", None)


# ------------------------------------------------------------------------------------ math
@pytest.mark.parametrize(
    ("gold", "answer", "text"),
    [
        ("70", "70", "The answer is \\boxed{70}"),
        ("1/2", "0.5", "so we get $\\boxed{\\frac{1}{2}}$"),
        ("0.5", None, "which is $\\frac12$"),
        ("\\frac{\\sqrt{2}}{2}", None, "Final: \\boxed{\\frac{\\sqrt2}{2}}"),
        ("\\sqrt{2}/2", None, "\\boxed{\\frac{\\sqrt{2}}{2}}"),
        ("336", None, "The angle is $\\boxed{336}$ degrees"),
    ],
)
def test_math_equivalent(gold: str, answer: str | None, text: str | None) -> None:
    s = get_scorer("math").score(item(gold), answer, text)
    assert s.correct, s


def test_math_not_equivalent() -> None:
    s = get_scorer("math").score(item("\\frac{1}{3}"), None, "\\boxed{0.33}")
    assert not s.correct


def test_math_falls_back_to_numeric(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import math_verify

    def broken(*a: object, **k: object) -> list[object]:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(math_verify, "parse", broken)
    s = get_scorer("math").score(item("1,000"), None, "It costs 1000.0 in total")
    assert s.correct and "numeric" in s.detail and "parser exploded" in s.detail
    monkeypatch.setattr(math_verify, "parse", lambda *a, **k: [])
    s = get_scorer("math").score(item("12"), None, "12")
    assert s.correct and "could not parse" in s.detail
    s = get_scorer("math").score(item("x^2"), None, "y")  # neither side numeric: wrong
    assert not s.correct


def test_math_works_off_the_main_thread() -> None:
    # math-verify's timeouts use signal.alarm, which only works in the main thread
    out: list[Score] = []
    t = threading.Thread(
        target=lambda: out.append(get_scorer("math").score(item("1/2"), None, "\\boxed{0.5}"))
    )
    t.start()
    t.join()
    assert out and out[0].correct, out


# ---------------------------------------------------------------------------------- choice
CHOICES = {"A": "10^-9 eV", "B": "10^-11 eV", "C": "10^-8 eV", "D": "10^-4 eV"}


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ("D", None),
        ("d", None),
        ("(D)", None),
        ("d) 10^-4 ev", None),
        ("option d", None),
        ("D. 10^-4 eV", None),
        (None, "Considering the lifetimes... Answer: D"),
        (None, "The correct option is \\boxed{D}."),
        ("10^-4 eV", None),  # the option's text
        ("the energy", "Answer: (D)"),
    ],
)
def test_choice_correct(answer: str | None, text: str | None) -> None:
    s = get_scorer("choice").score(item("D", choices=CHOICES), answer, text)
    assert s.correct, s


@pytest.mark.parametrize(("answer", "text"), [("B", None), (None, "Answer: A"),
                                              ("10^-8 eV", None)])
def test_choice_wrong(answer: str | None, text: str | None) -> None:
    s = get_scorer("choice").score(item("D", choices=CHOICES), answer, text)
    assert not s.correct and s.detail.endswith("gold D")


def test_choice_no_letter() -> None:
    s = get_scorer("choice").score(item("D", choices=CHOICES), "unsure", "I cannot tell")
    assert not s.correct and s.detail.startswith("no option letter")
    # a lower-case "a" that starts a sentence is an article, not option A
    assert not get_scorer("choice").score(item("A", choices=CHOICES), "a bit more", None).correct
    # E is not an option of a four-option item
    assert not get_scorer("choice").score(item("D", choices=CHOICES), "E", None).correct


# ------------------------------------------------------------------------ exact, normalized
def test_exact_and_normalized() -> None:
    exact, norm = get_scorer("exact"), get_scorer("normalized")
    gold = item("Paris")
    assert exact.score(gold, "Paris", None).correct
    assert exact.score(gold, "  Paris\n", None).correct
    assert not exact.score(gold, "paris", None).correct
    assert not exact.score(gold, "Paris.", None).correct
    assert norm.score(gold, "paris.", None).correct
    assert norm.score(gold, "  PARIS ", None).correct
    assert norm.score(gold, None, "Let me think.\nThe answer is: **Paris**").correct
    assert norm.score(item("New  York"), "new york!", None).correct
    assert not norm.score(gold, "Lyon", "Lyon").correct
    assert not norm.score(gold, None, None).correct
    assert exact.score(gold, None, "reasoning\nParis").correct is False  # extract lowercases
    assert not exact.score(gold, None, None).correct


# ------------------------------------------------------------------------------------ code
def test_extract_code() -> None:
    assert extract_code("x = 1") == "x = 1"
    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone") == (
        "def f():\n    return 1\n"
    )
    text = "```\nplain\n```\nthen\n```py\nfirst\n```\n```python\nsecond\n```"
    assert extract_code(text) == "second\n"
    assert extract_code("```\nonly plain\n```") == "only plain\n"
    assert extract_code("```python\nunclosed = True\n") == "unclosed = True\n"


@pytest.fixture(scope="module")
def humaneval() -> dict[str, Item]:
    return {it.id: it for it in load_task("humaneval").items}


# 0: plain; 10: the prompt defines a helper the solution calls; 32: imports math, helper poly;
# 38: helper encode_cyclic; 53: a one-liner
CANONICAL = ["HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/53"]


@pytest.mark.parametrize("task_id", CANONICAL)
def test_code_canonical_solution_passes(humaneval: dict[str, Item], task_id: str) -> None:
    it = humaneval[task_id]
    sc = get_scorer("code")
    # as a completion of the prompt (the body only) ...
    s = sc.score(it, None, it.answer)
    assert s == Score(True, "passed"), s
    # ... and as the whole function in a fenced block inside chatter
    reply = f"Here it is:\n```python\n{it.meta['prompt']}{it.answer}```\nHope it helps."
    assert sc.score(it, "ignored", reply) == Score(True, "passed")


def test_code_wrong_solution_fails(humaneval: dict[str, Item]) -> None:
    it = humaneval["HumanEval/53"]  # add(x, y)
    sc = get_scorer("code")
    s = sc.score(it, None, "```python\ndef add(x: int, y: int):\n    return x - y\n```")
    assert not s.correct and "AssertionError" in s.detail
    assert not sc.score(it, None, "def add(x, y) return x + y").correct  # syntax error
    assert sc.score(it, None, None) == Score(False, "no code")
    assert sc.score(it, "  ", "") == Score(False, "no code")


@pytest.mark.parametrize("ending", [
    "import sys\nsys.exit(0)", "exit()", "quit()", "import os\nos._exit(0)",
    "raise SystemExit", "print('TTS_GRAPH_CHECKED 0123456789abcdef')\nexit()"])
def test_a_reply_that_ends_the_program_before_the_tests_fails(
        humaneval: dict[str, Item], ending: str) -> None:
    # a wrong add() whose script ends (a main block, a stray exit()) before check() runs:
    # exit status 0, and it passed on that alone
    it = humaneval["HumanEval/53"]
    reply = f"```python\ndef add(x: int, y: int):\n    return x - y\n\n{ending}\n```"
    s = get_scorer("code").score(it, None, reply)
    assert s == Score(False, "the program ended before the tests ran (exit status 0)"), s
    # the same ending after a right add() fails too: the tests never ran
    right = reply.replace("x - y", "x + y")
    assert not get_scorer("code").score(it, None, right).correct


def test_code_scorer_uses_its_limits(humaneval: dict[str, Item]) -> None:
    from tts_graph.evaluate.scorers import CodeScorer

    sc = CodeScorer(timeout_s=0.5)
    it = humaneval["HumanEval/53"]
    s = sc.score(it, None, "def add(x, y):\n    import time; time.sleep(30)\n")
    assert s == Score(False, "timeout")


def test_code_scorer_needs_the_test_fields() -> None:
    with pytest.raises(ScorerError, match="needs meta"):
        get_scorer("code").score(item("x"), None, "def f(): pass")


# -------------------------------------------------------------------------------- registry
def test_get_scorer() -> None:
    assert set(SCORERS) == {"numeric", "math", "choice", "exact", "normalized", "code"}
    for name in SCORERS:
        sc = get_scorer(name)
        assert isinstance(sc, Scorer) and sc.name == name
    with pytest.raises(ScorerError) as err:
        get_scorer("bleu")
    assert isinstance(err.value, TTSGraphError)
    assert str(err.value) == (
        "unknown scorer 'bleu'; choose one of: numeric, math, choice, exact, normalized, code"
    )


# ---------------------------------------------------------- replies nobody here wrote (numeric)
@pytest.mark.parametrize("reply", ["Answer: inf", "Answer: nan", "\\boxed{Infinity}",
                                   "The answer is 1e999", "\\boxed{-inf}"])
def test_numeric_reply_that_is_not_a_finite_number_is_wrong_not_a_crash(reply: str) -> None:
    # float("inf") parsed, then int(inf) raised OverflowError (nan: ValueError) mid-run
    for name in ("numeric", "math"):
        s = get_scorer(name).score(item("5"), reply, reply)
        assert s.correct is False


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        ("1234", "The final answer is $\\boxed{1{,}234}$"),  # LaTeX thousands separator
        ("1234", "The final answer is $\\boxed{1\\,234}$"),
        ("0.5", "so \\boxed{\\frac{1}{2}}"),
        ("0.5", "so \\boxed{\\dfrac12}"),
        ("-0.75", "so \\boxed{-\\tfrac{3}{4}}"),
        ("-3", "so \\boxed{\u22123}"),  # U+2212 MINUS SIGN
        ("1000", "Answer: 1e3"),
        ("0.0015", "Answer: 1.5e-3"),
    ],
)
def test_numeric_reads_numbers_written_in_latex(gold: str, reply: str) -> None:
    assert get_scorer("numeric").score(item(gold), None, reply).correct


def test_numeric_written_numbers_still_judged_as_before() -> None:
    s = get_scorer("numeric")
    assert not s.score(item("1234"), None, "The answer is 1.234").correct
    assert not s.score(item("12"), None, "The answer is twelve.").correct
    assert s.score(item("2"), None, "x = 3e + 2, the answer is 2").correct


# ------------------------------------------------------------ MATH-format gold answers (math)
@pytest.mark.parametrize(
    ("gold", "reply", "right"),
    [
        # MATH's `answer` field is bare LaTeX: read whole, not as its last number
        ("(-\\infty, 3]", "so \\boxed{(-\\infty,3]}", True),
        ("(-\\infty, 3]", "so \\boxed{3}", False),
        ("1,2", "so \\boxed{1.2}", False),
        ("3, 5", "so \\boxed{5}", False),
        ("3, 5", "so \\boxed{3,5}", True),
        ("\\dfrac{3}{4}", "so \\boxed{0.75}", True),
        # the last box is the answer: a recheck that boxes again replaces the first
        ("18", "\\boxed{17} no wait, recheck: \\boxed{18}", True),
        ("17", "\\boxed{17} no wait, recheck: \\boxed{18}", False),
        ("18", "\\boxed{18}. Checking: 17 + 1 = 18, 19 is too big", True),
        # a gold answer that is a word: compared as text when math-verify cannot read it
        ("Paris", "The answer is Paris.", True),
        ("Paris", "The answer is London.", False),
    ],
)
def test_math_reads_math_format_gold_answers(gold: str, reply: str, right: bool) -> None:
    assert get_scorer("math").score(item(gold), None, reply).correct is right


# ------------------------------------------------- replies nobody here wrote (choice, text)
COLOURS = {"A": "red", "B": "blue", "C": "green", "D": "pink"}


@pytest.mark.parametrize(
    ("reply", "got"),
    [
        ("answer: c", "C"),  # a lower-case letter alone on the answer line
        ("Answer: (c) green", "C"),
        ("The answer is \\boxed{\\text{C}}", "C"),
        ("C\n\nExplanation: A is wrong because red is warm.", "C"),  # letter first, then why
        ("**C**\n\nB and A are both wrong.", "C"),
        ("The answer is green", "C"),  # the option's text on the answer line
        ("The answer is a good question; I would pick B", "B"),  # "a" is an article
        ("A is wrong, C is wrong, so B. Final answer: B", "B"),
    ],
)
def test_choice_replies(reply: str, got: str) -> None:
    s = get_scorer("choice").score(item(got, choices=COLOURS), None, reply)
    assert s.correct, s.detail
    other = next(k for k in COLOURS if k != got)
    assert not get_scorer("choice").score(item(other, choices=COLOURS), None, reply).correct


@pytest.mark.parametrize(
    ("gold", "reply", "right"),
    [
        ("8", "The answer is 5 + 3 = 8", True),  # the result, not the first operand
        ("5", "The answer is 5 + 3 = 8", False),
        ("42", "Answer: 42 (check: 6 * 7 = 42)", True),
        ("12", "Answer: 12 apples, not 13", True),
        ("10", "Answer: 10 (since 2*5=10, not 3*3=9)", True),
        ("12", "The answer is 3 * 4 = 12 apples; 13 was a typo", True),
        ("1234", "The answer is 5 + 1,229 = 1,234", True),
    ],
)
def test_numeric_answer_line_with_a_calculation(gold: str, reply: str, right: bool) -> None:
    assert get_scorer("numeric").score(item(gold), None, reply).correct is right


@pytest.mark.parametrize(
    "reply", ["Answer: $\\text{Paris}$", "\\boxed{\\text{Paris}}", "so \\boxed{Paris}.",
              "The answer is **Paris**.", "Answer: \\(\\textbf{Paris}\\)"])
def test_normalized_reads_text_in_latex(reply: str) -> None:
    assert get_scorer("normalized").score(item("Paris"), None, reply).correct
    assert not get_scorer("normalized").score(item("London"), None, reply).correct


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        # GSM8K's own answer marker (lm-eval's strict match): not the recheck's last number
        ("18", "She sells 9 * 2 = 18.\n#### 18\n\nChecking: 3 + 4 = 7"),
        ("1234", "... so\n#### 1,234"),
        ("1234", "The total is 1\u00a0234"),  # a no-break space between thousands
    ],
)
def test_numeric_gsm8k_marker_and_spaced_thousands(gold: str, reply: str) -> None:
    assert get_scorer("numeric").score(item(gold), None, reply).correct


@pytest.mark.parametrize(
    ("reply", "gold"),
    [
        ("So \\boxed{2}. (The instructions said to use \\boxed{}.)", "2"),  # empty box skipped
        ("The answer is $\\boxed 5$ and \\frac{1}{2} was a step.", "5"),  # MATH's \boxed 5
        ("so \\fbox{7}", "7"),
        ("\\boxed{3}, and to check \\boxed{", "3"),  # a reply cut off inside its last box
    ],
)
def test_boxes_models_write(reply: str, gold: str) -> None:
    for name in ("numeric", "math"):
        assert get_scorer(name).score(item(gold), None, reply).correct, name


@pytest.mark.parametrize(
    ("gold", "reply", "right"),
    [("€5", "Answer: 5", True), ("1e3", "Answer: 1000", True), ("25%", "\\boxed{25}", True),
     ("3/4", "The answer is 0.75", True), ("1/3", "\\boxed{\\frac{1}{3}}", True),
     ("1,2", "\\boxed{12}", False), ("€5", "Answer: 6", False)],
)
def test_math_plain_number_gold_answers(gold: str, reply: str, right: bool) -> None:
    assert get_scorer("math").score(item(gold), None, reply).correct is right


def test_math_reads_the_gsm8k_marker() -> None:
    # GSM8K's reference solution 1303: math-verify read "the answer to weeks: 28" as 28
    reply = ("Then divide the number of days by the number of days per week to convert the "
             "answer to weeks: 28 days / 7 days/week = <<28/7=4>>4 weeks\n#### 4")
    assert get_scorer("math").score(item("4"), None, reply).correct
    assert not get_scorer("math").score(item("28"), None, reply).correct
