"""Answer extraction's fast paths (``tts_graph.answers``) give what the plain scans gave,
whatever the text: the answer line tried only where one can start, the last number found
from the last digit, boxes' braces matched from the braces alone, text without LaTeX left
as it is."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tts_graph import answers
from tts_graph.answers import (
    _ANSWER_LINE,
    _BOX,
    _DIGIT_GAP,
    _FRAC,
    _NUMBER,
    _boxed,
    _case_folded,
    _last_answer_line,
    _last_number,
    _plain_numbers,
    extract_answer,
)

PIECES = ["answer", "Answer", "ANSWER", "final ", "Final ", "final  ", "####", "###", "# ",
          " ", "\t", "\n", "\r\n", ":", "=", " is ", "is", "42", "-3.5", "x", "The ", ".",
          "answers", "reanswer", "ſ", "é", "\u2212", "\\boxed{7}", "{", "}", "İ", "ı",
          "anſwer", "fınal ", "FİNAL ", "$", "-", ",", "1,234", "2e5", "3/4", ".5", "\u0663",
          "\\frac{1}{2}", "\\dfrac12", "{,}", "\\,", "\u00a0", "\u202f", "\\boxed ", "\\fbox{",
          "\\boxed{}", "\\boxed{\\frac{3}{4}}", "\\boxed 9"]
TEXTS = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _by_finditer(text: str) -> re.Match[str] | None:
    last = None
    for last in _ANSWER_LINE.finditer(text):  # noqa: B007
        pass
    return last


def _span(m: re.Match[str] | None) -> tuple[int, int, str] | None:
    return None if m is None else (m.start(), m.end(), m.group(1))


def _boxed_by_every_character(text: str) -> str | None:
    """``_boxed`` as it was: every character looked at for braces."""
    if "\\" not in text:
        return None
    boxes = list(_BOX.finditer(text))
    closes: dict[int, int] = {}
    opened: list[int] = []
    for j, ch in enumerate(text):
        if ch == "{":
            opened.append(j)
        elif ch == "}" and opened:
            closes[opened.pop()] = j
    for m in reversed(boxes):
        if m.group(2) is not None:
            return m.group(2)
        end = closes.get(m.start(1))
        if end is not None and (inner := text[m.start(1) + 1 : end].strip()):
            return inner
    return None


def _plain_by_substitution(text: str) -> str:
    text = text.replace("\u2212", "-")
    text = _DIGIT_GAP.sub(lambda m: "," if m.group(0) == "{,}" else "", text)
    return _FRAC.sub(lambda m: f"{m.group(1) or m.group(2)}/{m.group(3) or m.group(4)}", text)


@settings(max_examples=3000, deadline=None)
@given(TEXTS)
@example("The answer is: the answer is 5")
@example("Answer:\n\nThe answer is 5")
@example("final answer")
@example("  #### 12\n#### 13 #### 14")
@example("Final Answer: 3\nanswer = 4\n")
@example("anſwer: 9\nanswer: 8")
@example("paid -$ 5, then 7-$\t6 and -.5")  # a number's digit three characters in
def test_each_fast_path_gives_what_the_plain_scan_gave(text: str) -> None:
    assert _span(_last_answer_line(text)) == _span(_by_finditer(text))
    assert _last_number(text) == (_NUMBER.findall(text) or [None])[-1]
    assert _boxed(text) == _boxed_by_every_character(text)
    assert _plain_numbers(text) == _plain_by_substitution(text)


def test_a_long_chain_of_thought_keeps_its_answer() -> None:
    steps = ("We have 3 baskets with 12 apples each, so 36 apples; 7 are eaten, 29 are left, "
             "and the answer to the first part is 29. ") * 20
    assert extract_answer(steps + "\nFinal answer: 44") == "44"
    assert extract_answer(steps + "\n#### 45") == "45"
    assert extract_answer(steps) == "29"  # the last answer line's first number
    assert extract_answer(steps.replace("answer", "result") + " In all 44 × 1") == "1"
    assert extract_answer(steps + "\nSo it is $\\boxed{\\frac{88}{2}}$.") == "44"


def test_the_fold_holds_every_letter_re_takes_for_one_of_final_answer() -> None:
    """Every code point that a case-blind pattern matches to a letter of "final answer" is
    that letter once folded, and folding keeps one character for one."""
    letters = re.compile(r"(?i)[finalswer]")
    for x in range(0x80, 0x110000):
        c = chr(x)
        folded = _case_folded(c)
        assert len(folded) == 1, hex(x)
        if letters.fullmatch(c):
            assert folded in "finalswer" and re.fullmatch(f"(?i){folded}", c), hex(x)
    assert answers._case_folded("ANSWER") == "answer"
