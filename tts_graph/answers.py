"""Answer extraction: the final number, a \\boxed{} answer, a choice letter, or free text.

Used by vote and judge, the unit test evaluator (code) and the scorers. Extraction never
raises: no answer is ``None``.
"""

from __future__ import annotations

import math
import re
import unicodedata

# "answer: X", "the final answer is X", and GSM8K's "#### X" (what few-shot GSM8K prompts teach)
_ANSWER_LINE = re.compile(
    r"(?:final answer|answer|^[ \t]*####)\s*(?:is)?\s*[:=]?\s*(.+)", re.IGNORECASE | re.MULTILINE
)
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+\b)?(?:/\d+)?|-?\.\d+")
#: the characters a match of _NUMBER may hold, besides whitespace
_OF_NUMBER = frozenset("0123456789,.-+$eE/")
# LaTeX a model writes numbers in: \frac{1}{2}, \dfrac12, 1{,}234, 1\,234, the minus sign
_FRAC = re.compile(r"\\[dt]?frac\s*(?:\{\s*(-?[\d.]+)\s*\}|(\d))\s*(?:\{\s*(-?[\d.]+)\s*\}|(\d))")
_DIGIT_GAP = re.compile(r"(?<=\d)(?:\{,\}|\\[,!; ]|[\u00a0\u2009\u202f])(?=\d)")
_GAP_SPACES = "\u00a0\u2009\u202f"  # the typographic spaces of _DIGIT_GAP
_GAP_COMMANDS = ("\\,", "\\!", "\\;", "\\ ")  # and its LaTeX spaces
_CHOICE = re.compile(r"\(?\b([A-J])\b\)?")
# compiled once (not through ``re``'s cache lookup on every reply): what a number's text may
# hold besides the number, a LaTeX text command, runs of space, where an answer's main clause
# ends
_NOT_OF_NUMBER = re.compile(r"[,\s$€£¥₹]|\\(?=[$%])")
_TEXT_CMD = re.compile(r"\\text(?:bf)?\{([^{}]*)\}")
_SPACES = re.compile(r"[\s]+")
_CLAUSE_END = re.compile(r"\(|\[|; |, ")


_BOX = re.compile(r"\\(?:boxed|fbox)(?:\s*(\{)|[ \t]+([^\s${}]+))")
_BRACES = re.compile(r"[{}]")


def _boxed(text: str) -> str | None:
    """Content of the last non-empty ``\\boxed{...}`` (balanced braces; ``\\fbox{}`` and
    MATH's ``\\boxed 5`` too). An empty or unclosed box ("put it in \\boxed{}") is skipped."""
    if "\\" not in text:  # every box starts with a backslash
        return None
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return None
    closes: dict[int, int] = {}  # "{" -> its "}", in one pass (a reply may hold many boxes)
    opened: list[int] = []
    for brace in _BRACES.finditer(text):  # the braces alone, not every character
        j = brace.start()
        if text[j] == "{":
            opened.append(j)
        elif opened:
            closes[opened.pop()] = j
    for m in reversed(boxes):
        if m.group(2) is not None:
            return m.group(2)
        end = closes.get(m.start(1))
        if end is not None and (inner := text[m.start(1) + 1 : end].strip()):
            return inner
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` of ``text``, as written (None: no box)."""
    return _boxed(text)


def _answer_segment(text: str) -> str | None:
    """What the last answer line gives (``_ANSWER_LINE``'s last match, as ``finditer`` finds
    them), or None."""
    last = _last_answer_line(text)
    return None if last is None else last.group(1).strip()


def _case_folded(text: str) -> str:
    """``text`` folded as a case-blind pattern sees the letters of "final answer", one
    character for one: ``lower()``, and the three letters ``re`` takes for one of them that
    ``lower()`` does not make it (İ, ı, ſ: found by trying every code point,
    tests/test_answer_lines.py). ``str.translate`` would go character by character."""
    if text.isascii():
        return text.lower()
    return text.replace("\u0130", "i").lower().replace("\u0131", "i").replace("\u017f", "s")


def _last_answer_line(text: str) -> re.Match[str] | None:
    """``_ANSWER_LINE``'s last match. The pattern, case-blind and anchored at line starts,
    gets no prefix scan from ``re``: ``finditer`` tries it at every position (90 us for a
    1,400-character reply, the size of a chain of thought). A match can only start where
    "answer" or "final answer" is written (in any case), or at the start of a line of
    "####", so the pattern is tried at those places alone, left to right, skipping what a
    match took, as ``finditer`` does."""
    lower = _case_folded(text)
    starts: set[int] = set()
    i = lower.find("answer")
    while i >= 0:
        starts.add(i)
        if i >= 6 and lower.startswith("final ", i - 6):
            starts.add(i - 6)
        i = lower.find("answer", i + 1)
    j = text.find("####")
    while j >= 0:
        line = text.rfind("\n", 0, j) + 1
        if not text[line:j].strip(" \t"):
            starts.add(line)
        j = text.find("####", j + 1)
    last, pos = None, 0
    for start in sorted(starts):
        if start >= pos and (m := _ANSWER_LINE.match(text, start)) is not None:
            last, pos = m, m.end()
    return last


def _plain_numbers(text: str) -> str:
    """``text`` with the LaTeX and typography of numbers made plain (``\\frac{1}{2}`` ->
    ``1/2``, ``1{,}234`` -> ``1,234``, U+2212 -> ``-``), so that they are read whole."""
    text = text.replace("\u2212", "-")
    # each pattern only where what it replaces is written: both scan every position
    if "{,}" in text or ("\\" in text and any(g in text for g in _GAP_COMMANDS)) or (
            not text.isascii() and any(c in text for c in _GAP_SPACES)):
        text = _DIGIT_GAP.sub(lambda m: "," if m.group(0) == "{,}" else "", text)
    if "frac" in text:
        text = _FRAC.sub(lambda m: f"{m.group(1) or m.group(2)}/{m.group(3) or m.group(4)}",
                         text)
    return text


def normalize_number(raw: str) -> str | None:
    if raw.isascii() and raw.isdigit() and len(raw) < 16:
        return str(int(raw))  # a plain whole number below 1e15 (most answers): as below
    # currency signs and a percent sign say what the number counts, not what it is: "€5" is
    # 5 and "25%" is 25, as "$5" always was and as a reply's "25%" is read
    s = _NOT_OF_NUMBER.sub("", raw)
    s = s[:-1] if s.endswith("%") else s
    if not s:
        return None
    if "/" in s:
        num, _, den = s.partition("/")
        try:
            value = float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            return None
    else:
        try:
            value = float(s)
        except ValueError:
            return None
    if not math.isfinite(value):  # "inf", "nan", 1e999: not an answer, and int() would raise
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(round(value, 6))


def extract_number(text: str) -> str | None:
    text = _plain_numbers(text)
    boxed, segment = _boxed(text), _answer_segment(text)
    if boxed and (nums := _NUMBER.findall(boxed)):
        return normalize_number(nums[0])
    if segment and (num := _segment_number(segment)):
        return num
    last = _last_number(text)
    return normalize_number(last) if last is not None else None


def _last_number(text: str) -> str | None:
    """``_NUMBER.findall(text)[-1]`` (None: no number), without reading the whole text:
    ``findall`` tries the pattern at every position (its optional sign, currency and space
    give ``re`` no prefix to skip to), 280 us for a 1,400-character reply. Every digit lies
    in a match (at a digit the pattern always matches), so the last match holds the last
    digit; and no match holds a character outside ``_OF_NUMBER`` (or whitespace), so the
    matches after such a character are ``findall``'s from just after it."""
    if not text.isascii():  # digits of other scripts count too: the scan
        nums = _NUMBER.findall(text)
        return nums[-1] if nums else None
    last = max(text.rfind(d) for d in "0123456789")
    if last < 0:
        return None
    start = last
    while start > 0 and (text[start - 1] in _OF_NUMBER or text[start - 1].isspace()):
        start -= 1
    return _NUMBER.findall(text, start)[-1]


def extract_boxed(text: str) -> str | None:
    boxed = _boxed(text)
    return normalize_text(boxed) if boxed is not None else None


# an answer that is an option letter alone ("C", "(c)", "[C]", "option C", "C.") or one that
# leads its option's text ("c) green", "C: green", "C. green")
_OPTION_ALONE = re.compile(r"[\s*_$]*(?:option\s+)?[(\[]?([A-Za-z])[)\]]?[\s.:*_$]*",
                           re.IGNORECASE)
_OPTION_LEADS = re.compile(r"[\s*_]*(?:\(([A-Za-z])\)|([A-Za-z])\)|([A-Z])[.:])\s")


def _option(part: str, letters: str, *, search: bool) -> str | None:
    """The option letter ``part`` is or starts with; with ``search``, else its first
    capital standing alone (as before: a later capital in the text is not looked for)."""
    part = _TEXT_CMD.sub(r"\1", part)
    m = _OPTION_ALONE.fullmatch(part) or _OPTION_LEADS.match(part)
    if m:
        letter = next(g for g in m.groups() if g).upper()
        return letter if letter in letters else None
    if search and (m := _CHOICE.search(part)) and m.group(1) in letters:
        return m.group(1)
    return None


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    for part in (_boxed(text), _answer_segment(text)):
        if part and (letter := _option(part, letters, search=True)):
            return letter
    # a reply that opens with the letter alone, then explains ("C\n\nA is wrong because")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines and (letter := _option(lines[0], letters, search=False)):
        return letter
    found = [m.group(1) for m in _CHOICE.finditer(text) if m.group(1) in letters]
    return found[-1] if found else None


# LaTeX that wraps a whole text answer: $...$, \(...\), \text{...}, \boxed{...}
_WRAPPED = re.compile(r"\$+(.*?)\$+|\\\((.*?)\\\)|\\(?:text|textbf|mathrm|mbox|boxed)\{(.*)\}",
                      re.DOTALL)


def normalize_text(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).strip().lower()
    s = _SPACES.sub(" ", s)
    s = s.strip(" .!\"'`*")
    while (m := _WRAPPED.fullmatch(s)) is not None:
        s = next(g for g in m.groups() if g is not None).strip(" .!\"'`*")
    return s


def extract_text(text: str) -> str | None:
    part = _boxed(text)
    if part is None:
        part = _answer_segment(text)
    if part is None:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        part = lines[-1] if lines else ""
    norm = normalize_text(part)
    return norm or None


def _segment_number(segment: str) -> str | None:
    """The number an answer line gives: its first number ("Answer: 12 apples, not 13"), or,
    when its main clause (up to a parenthesis, "; " or ", ") is a calculation, the result
    after the clause's last ``=`` ("The answer is 5 + 3 = 8", but "Answer: 10 (2*5=10,
    not 3*3=9)" is 10)."""
    clause = _CLAUSE_END.split(segment, maxsplit=1)[0]
    nums = _NUMBER.findall(clause.rpartition("=")[2]) if "=" in clause else []
    nums = nums or _NUMBER.findall(segment)
    return normalize_number(nums[0]) if nums else None


def extract_answer(text: str, kind: str = "auto") -> str | None:
    """Extract the answer of ``kind``: auto | number | boxed | choice | text."""
    if kind == "number":
        return extract_number(text)
    if kind == "boxed":
        return extract_boxed(text)
    if kind == "choice":
        return extract_choice(text)
    if kind == "text":
        return extract_text(text)
    # auto: a boxed answer, else a number in the answer line, else the answer line's text
    text = _plain_numbers(text)
    boxed = _boxed(text)
    if boxed is not None:
        return normalize_number(boxed) or normalize_text(boxed)
    segment = _answer_segment(text)
    if segment:
        return _segment_number(segment) or normalize_text(segment) or None
    return extract_number(text) or extract_text(text)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in a model's reply: the last ```python block (else the last ``` block),
    else the whole text."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    py = [code for lang, code in blocks if lang in ("python", "py", "python3")]
    if py:
        return py[-1]
    if blocks:
        return blocks[-1][1]
    return text
