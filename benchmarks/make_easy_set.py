"""Generate tts_graph/data/easy_math.jsonl: easy arithmetic questions with Python-computed answers.

Deterministic (seeded): running it again rewrites the same file byte for byte. The set is meant
for tiny embedded models (SmolLM2-135M gets such sums right about half the time), where voting
visibly helps; it is not a hard benchmark.

    .venv/bin/python benchmarks/make_easy_set.py            # writes the packaged file
    .venv/bin/python benchmarks/make_easy_set.py --out x.jsonl --n 200 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tts_graph" / "data" / "easy_math.jsonl"

NAMES = ["Tom", "Anna", "Ravi", "Mia", "Leo", "Sara", "Ken", "Lucy", "Omar", "Ines"]
THINGS = ["apples", "marbles", "books", "stickers", "pencils", "cookies", "coins", "cards"]

Item = tuple[str, int]


def plain_add(r: random.Random) -> Item:
    a, b = r.randint(2, 50), r.randint(2, 50)
    return f"What is {a} + {b}?", a + b


def plain_sub(r: random.Random) -> Item:
    a = r.randint(10, 60)
    b = r.randint(1, a - 1)
    return f"What is {a} - {b}?", a - b


def plain_mul(r: random.Random) -> Item:
    a, b = r.randint(2, 12), r.randint(2, 9)
    return f"What is {a} * {b}?", a * b


def plain_three(r: random.Random) -> Item:
    a, b, c = r.randint(1, 20), r.randint(1, 20), r.randint(1, 20)
    return f"What is {a} + {b} + {c}?", a + b + c


def word_more(r: random.Random) -> Item:
    who, what = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 30), r.randint(2, 30)
    return (f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?",
            a + b)


def word_less(r: random.Random) -> Item:
    who, what = r.choice(NAMES), r.choice(THINGS)
    a = r.randint(8, 40)
    b = r.randint(1, a - 1)
    return (f"{who} has {a} {what} and gives away {b}. How many {what} does {who} have left?",
            a - b)


def word_groups(r: random.Random) -> Item:
    what = r.choice(THINGS)
    a, b = r.randint(2, 9), r.randint(2, 9)
    return f"There are {a} boxes with {b} {what} in each box. How many {what} are there?", a * b


def word_share(r: random.Random) -> Item:
    what = r.choice(THINGS)
    each, kids = r.randint(2, 9), r.randint(2, 6)
    total = each * kids
    return (f"{total} {what} are shared equally among {kids} children. "
            f"How many {what} does each child get?", each)


KINDS: list[tuple[str, Callable[[random.Random], Item]]] = [
    ("add", plain_add), ("sub", plain_sub), ("mul", plain_mul), ("add3", plain_three),
    ("word_more", word_more), ("word_less", word_less), ("word_groups", word_groups),
    ("word_share", word_share),
]


def generate(n: int, seed: int) -> list[dict[str, str]]:
    r = random.Random(seed)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        kind, make = KINDS[i % len(KINDS)]  # round-robin: every kind equally often
        i += 1
        question, answer = make(r)
        if question in seen:
            continue
        seen.add(question)
        out.append({"id": f"easy-{len(out) + 1:03d}-{kind}", "question": question,
                    "answer": str(answer)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="number of questions (default 120)")
    ap.add_argument("--seed", type=int, default=20240917, help="random seed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSONL file")
    args = ap.parse_args()
    rows = generate(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} questions to {args.out}")


if __name__ == "__main__":
    main()
