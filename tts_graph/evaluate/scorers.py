"""Scorers: is a graph's final answer right for an item?

``score(item, answer, text)`` gets the graph's extracted final ``answer`` (``QueryResult.answer``)
and the text it came from (``QueryResult.text``); either may be ``None``. Scoring never raises
on a model's output: a missing or unreadable answer is simply wrong, with a ``detail`` saying
why. Built in: ``numeric``, ``math``, ``choice``, ``exact``, ``normalized``, ``code``.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..answers import (
    extract_choice,
    extract_code,
    extract_number,
    extract_text,
    last_boxed,
    normalize_number,
    normalize_text,
)
from ..errors import TTSGraphError

if TYPE_CHECKING:
    from .tasks import Item


class ScorerError(TTSGraphError):
    """An unknown scorer name, or a scorer used on items it cannot score."""


class ScoringUnavailable(TTSGraphError):
    """What scoring needs could not be had for one answer (the code sandbox could not be
    set up): an infrastructure failure, reported and run again by ``--resume``, never a
    wrong answer."""


@dataclass(frozen=True)
class Score:
    correct: bool
    detail: str = ""


class Scorer:
    """Base class: subclasses set ``name`` and implement ``score``."""

    name: ClassVar[str] = ""

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Load what scoring needs (imports, parsers) before the first question: eval
        workers forked after it share it instead of each loading it again."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _clip(s: str | None, n: int = 60) -> str:
    if s is None:
        return "nothing"
    s = " ".join(s.split())
    return repr(s if len(s) <= n else s[: n - 1] + "…")


def _number(s: str) -> str | None:
    """``s`` as a normalized number: the whole of it, else the number extracted from it."""
    return normalize_number(s) or extract_number(s)


def _same_number(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))


class NumericScorer(Scorer):
    """GSM8K-style: the final number, compared as a number (``18.0`` = ``18``,
    ``1,000`` = ``1000``).

    The graph's answer when it holds a number, else the final number of the text
    (``tts_graph.answers.extract_number``: a ``\\boxed{}``, an "answer:" line, or the last number).
    """

    name = "numeric"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        gold = _number(item.answer)
        if gold is None:
            raise ScorerError(f"item {item.id}: gold answer {item.answer!r} is not a number")
        got = next((n for s in (answer, text) if s and (n := _number(s)) is not None), None)
        if got is None:
            return Score(False, f"no number in {_clip(answer if answer else text)}")
        return Score(_same_number(got, gold), f"got {got}, gold {gold}")


_GSM8K_MARK = re.compile(r"^[ \t]*####[ \t]*(\S[^\n]*)", re.MULTILINE)


class MathScorer(Scorer):
    """Mathematical equivalence with ``math-verify`` (``\\frac{1}{2}`` = ``0.5``, sets,
    intervals, expressions) between the gold answer, read whole, and the reply's last
    ``\\boxed{}`` (else its ``#### N`` line, else what math-verify finds in it); falls back
    to ``numeric`` when either side does not parse (``normalized`` for a gold answer with
    no number in it)."""

    name = "math"

    def __init__(self) -> None:
        self._numeric = NumericScorer()
        self._normalized = NormalizedScorer()

    def warm_up(self) -> None:
        # math-verify imports sympy and builds its LaTeX parser on first use: ~0.5 s
        with contextlib.suppress(Exception):
            from math_verify import parse, verify

            verify(parse("$x^2+1$"), parse("$1+x^2$"))

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        try:
            from math_verify import parse, verify
        except ImportError:  # pragma: no cover - a core dependency
            return self._fallback(item, answer, text, "math-verify is not installed")
        # signal.alarm timeouts work only in the main thread
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        try:
            # a bare gold answer is LaTeX math (MATH's `answer` field): read it whole, as
            # math-verify reads a gold answer in $...$; bare, "(-\infty, 3]" parses as 3
            # and "1,2" as 1.2
            gold = []
            want = item.answer
            # a plain number LaTeX does not read ("€5", "1e3"): the number it is; a comma or
            # a slash is left to math-verify ("1,2" is a set there; 1/3 stays exact)
            if not re.search(r"[\\{}^,/]", want) and (plain := normalize_number(want)):
                want = plain
            if "$" not in want and "\\boxed" not in want:
                gold = parse(f"${want}$", parsing_timeout=timeout)
            if not gold:
                gold = parse(want, parsing_timeout=timeout)
            pred = []
            for s in (text, answer):
                if s:
                    # the last \boxed{} only (MATH's last_boxed_only_string): a reply that
                    # boxes 17, then rechecks and boxes 18, answers 18, not the set {17, 18};
                    # else GSM8K's last "#### N" line, which math-verify does not look for
                    marks = _GSM8K_MARK.findall(s)
                    last = last_boxed(s) or (marks[-1].strip() if marks else None)
                    pred = parse(f"\\boxed{{{last}}}" if last else s,
                                 parsing_timeout=timeout)
                    if pred:
                        break
            if not gold or not pred:
                return self._fallback(item, answer, text, "math-verify could not parse")
            ok = verify(gold, pred, timeout_seconds=timeout)
        except Exception as exc:  # math-verify on odd input: fall back, never crash a run
            return self._fallback(item, answer, text, f"math-verify failed: {exc}")
        return Score(bool(ok), f"got {pred[-1]}, gold {gold[-1]}")

    def _fallback(self, item: Item, answer: str | None, text: str | None, why: str) -> Score:
        # a gold answer that is no number (a word, a name) is compared as normalized text
        fallback = self._numeric if _number(item.answer) is not None else self._normalized
        s = fallback.score(item, answer, text)
        return Score(s.correct, f"{why}; {fallback.name}: {s.detail}")


# an answer that is an option letter: "B", "(b)", "option b", "b) the text", "B. the text";
# a lone lower-case "a" followed by words is an article, not an option
_LETTER_ONLY = re.compile(r"\s*(?:option\s+)?\(?([A-Za-z])\)?[\s.:]*", re.IGNORECASE)
_LETTER_PAREN = re.compile(r"\s*\(?([A-Za-z])\)\s")
_LETTER_DOT = re.compile(r"\s*([A-Z])[.:]\s")


def option_letter(answer: str) -> str | None:
    """The option letter ``answer`` is or starts with ("B", "(b)", "B.", "B) text"), or None."""
    m = (_LETTER_ONLY.fullmatch(answer) or _LETTER_PAREN.match(answer)
         or _LETTER_DOT.match(answer))
    return m.group(1).upper() if m else None


class ChoiceScorer(Scorer):
    """Multiple choice: the option letter (``B``, ``(b)``, ``B) text``, ``Answer: B``); an
    answer equal to an option's text counts as that option. Letters: ``item.meta["choices"]``'s
    keys, else A-D."""

    name = "choice"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        gold = option_letter(item.answer) or item.answer.strip().upper()
        choices = item.meta.get("choices") or {}
        if isinstance(choices, (list, tuple)):  # options in order: A, B, ...
            choices = {chr(65 + i): str(v) for i, v in enumerate(choices[:26])}
        letters = "".join(choices) or "ABCD"
        got = None
        if answer and (lead := option_letter(answer)) in tuple(letters):
            got = lead
        if got is None and text:
            got = extract_choice(text, letters)
        if got is None and answer:
            got = extract_choice(answer, letters)
        if got is None and choices:  # the option's text: the answer, else the answer line
            norms = {normalize_text(answer) if answer else None,
                     extract_text(text) if text else None} - {None, ""}
            got = next((k for k, v in choices.items() if normalize_text(v) in norms), None)
        if got is None:
            return Score(False, f"no option letter in {_clip(answer if answer else text)}")
        return Score(got == gold, f"got {got}, gold {gold}")


class ExactScorer(Scorer):
    """The answer (else the text's answer line) equals the gold answer, after stripping
    surrounding white space only."""

    name = "exact"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        got = answer if answer is not None else (extract_text(text) if text else None)
        if got is None:
            return Score(False, "no answer")
        return Score(got.strip() == item.answer.strip(), f"got {_clip(got)}")


class NormalizedScorer(Scorer):
    """Text equal after normalization (Unicode NFKC, case, white space, surrounding
    punctuation and quotes): the answer, else the text's answer line or last line."""

    name = "normalized"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        gold = normalize_text(item.answer)
        cands = [normalize_text(answer)] if answer else []
        if text:
            t = extract_text(text)
            if t:
                cands.append(t)
        if not cands:
            return Score(False, "no answer")
        return Score(gold in cands, f"got {_clip(cands[0])}")


class CodeScorer(Scorer):
    """HumanEval pass@1: the item's tests run on the extracted code in the sandbox
    (``tts_graph.sandbox``). Needs ``meta`` keys ``prompt``, ``test`` and
    ``entry_point``.

    A reply that defines ``entry_point`` is run after the prompt (so the prompt's imports and
    helper functions are there, and the reply's function replaces the stub); otherwise it is
    taken as the body that completes the prompt.
    """

    name = "code"

    def __init__(self, *, timeout_s: float = 10, memory_mb: int = 512) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def program(self, item: Item, reply: str, marker: str = "") -> str:
        """The script the sandbox runs; with ``marker``, its last line writes the marker
        once ``check`` has returned (see ``score``)."""
        try:
            prompt, test, entry = item.meta["prompt"], item.meta["test"], item.meta["entry_point"]
        except KeyError as exc:
            raise ScorerError(f"item {item.id}: the code scorer needs meta[{exc}]") from None
        code = extract_code(reply)
        if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
            body = prompt.rstrip() + "\n\n\n" + code
        else:
            body = prompt + code
        done = (f"__import__('sys').stdout.flush()\n"
                f"__import__('os').write(1, b'\\n{marker}\\n')\n") if marker else ""
        return f"{body}\n\n\n{test}\n\n\ncheck({entry})\n{done}"

    def score(self, item: Item, answer: str | None, text: str | None) -> Score:
        reply = text if text else answer
        if not reply or not reply.strip():
            return Score(False, "no code")
        from ..sandbox import run_python

        # exit status 0 alone would pass a reply that ends the program before the tests
        # run (`sys.exit(0)`, `exit()`, `os._exit(0)` in a script's main block): the tests
        # passed only when the line after them wrote this run's marker
        marker = f"TTS_GRAPH_CHECKED {secrets.token_hex(8)}"
        result = run_python(self.program(item, reply, marker), timeout_s=self.timeout_s,
                            memory_mb=self.memory_mb)
        if result.setup_failed:  # the code never ran: not a verdict on it
            raise ScoringUnavailable(f"code sandbox: {result.reason}")
        if result.passed and marker not in result.stdout.splitlines():
            return Score(False, "the program ended before the tests ran (exit status 0)")
        return Score(result.passed, result.reason)


def code_sandbox(scorer: Scorer, *, accept_weak: bool) -> str | None:
    """The sandbox mode a code scorer will run in (``None`` for other scorers); refuses
    ``guard`` mode, which does not isolate the code from the user's files and processes,
    unless ``accept_weak`` says the user accepts that."""
    if scorer.name != "code":
        return None
    from ..sandbox import sandbox_mode

    mode = sandbox_mode()
    if mode == "guard" and not accept_weak:
        raise ScorerError(
            "the code scorer's sandbox runs in guard mode here (it needs root and namespaces "
            "for the namespaces mode): model-written code could read this user's files and "
            "environment; pass --accept-weak-sandbox to accept weaker isolation")
    return mode


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (NumericScorer, MathScorer, ChoiceScorer, ExactScorer, NormalizedScorer,
                CodeScorer)
}


def get_scorer(name: str) -> Scorer:
    """A scorer by name: numeric, math, choice, exact, normalized, code."""
    cls = SCORERS.get(name)
    if cls is None:
        raise ScorerError(f"unknown scorer {name!r}; choose one of: {', '.join(SCORERS)}")
    return cls()
