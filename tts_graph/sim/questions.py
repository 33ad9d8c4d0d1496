"""The simulated questions: a tag the backend reads back from the prompt, a gold answer, a
MATH-like level and difficulty, and the wrong answers models fall into."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .draws import uniform
from .world import LEVEL_CDF


@dataclass(frozen=True)
class SimQuestion:
    id: int
    seed: int = 0

    @property
    def tag(self) -> str:
        return f"[sim:{self.id:06d}]" if self.seed == 0 else f"[sim:s{self.seed}:{self.id:06d}]"

    @property
    def item_id(self) -> str:
        return f"sim-{self.id:06d}" if self.seed == 0 else f"sim-s{self.seed}-{self.id:06d}"

    @property
    def text(self) -> str:
        return f"{self.tag} Compute the value of problem {self.id}."

    @property
    def level(self) -> int:
        u = uniform("level", self.seed, self.id)
        return next(i + 1 for i, c in enumerate(LEVEL_CDF) if u < c)

    @property
    def difficulty(self) -> float:
        return (self.level - 1 + uniform("difficulty", self.seed, self.id)) / 5

    @property
    def gold(self) -> str:
        return gold_answer(self.id)

    def wrong(self, k: int) -> str:
        """Wrong answer ``k``: 0 the common trap, 1-3 model traps, 4.. scattered slips."""
        value = 10 + int(uniform("wrong", self.seed, self.id, k) * 99_990)
        if str(value) == self.gold:
            value += 1
        return str(value)


def gold_answer(qid: int) -> str:
    """The gold answer of simulated question ``qid`` (a function of the id alone)."""
    return str(10 + int(uniform("gold", qid) * 99_990))


_TAG = re.compile(r"\[sim:(?:s(\d+):)?(\d+)\]")


def parse_tag(text: str) -> SimQuestion | None:
    m = _TAG.search(text)
    return SimQuestion(int(m.group(2)), int(m.group(1) or 0)) if m else None


def sim_items(n: int, seed: int = 0) -> list[SimQuestion]:
    return [SimQuestion(i, seed) for i in range(n)]
