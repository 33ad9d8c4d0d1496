"""Ranking trials whose accuracies are noisy: a few hundred questions give each accuracy an
interval several points wide, so the single best search score is often a lucky draw (the
winner's curse). The front is therefore ranked with intervals:

- each trial's accuracy has a Beta(1 + correct, 1 + wrong) posterior;
- ``p_best``: the chance that a trial is the most accurate of those listed (Monte Carlo over
  the posteriors, a fixed seed so the front is reproducible);
- ``p_at_least``: the chance that it is at least as accurate as the leader;
- one objective: the front lists every trial not surely worse than the leader
  (``p_at_least >= TIE``), and *near-ties* (the accuracy difference within one standard error
  of that difference) go to the configuration spending fewer tokens.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

#: a trial with less than this chance of being at least as accurate as the leader is surely
#: worse and left off a one-objective front
TIE = 0.05
#: most entries of a one-objective front (by p_best)
FRONT_MAX = 10
DRAWS = 4000


@dataclass
class Scored:
    """One trial's accuracy counts and the figure that breaks near-ties."""

    ref: int  # the trial number
    correct: int
    scored: int
    accuracy: float
    tokens: float

    @property
    def mean(self) -> float:
        return (self.correct + 1) / (self.scored + 2)

    @property
    def var(self) -> float:
        a, b = self.correct + 1, self.scored - self.correct + 1
        return a * b / ((a + b) ** 2 * (a + b + 1))


def p_at_least(x: Scored, leader: Scored) -> float:
    """P(accuracy of x >= the leader's), normal approximation of the Beta posteriors."""
    if x.ref == leader.ref:
        return 1.0
    sd = math.sqrt(x.var + leader.var)
    if sd == 0:
        return 1.0 if x.mean >= leader.mean else 0.0
    return 0.5 * (1 + math.erf((x.mean - leader.mean) / (sd * math.sqrt(2))))


def p_best(items: list[Scored], seed: int = 0) -> list[float]:
    """P(each item is the most accurate of ``items``), by Monte Carlo."""
    if not items:
        return []
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.beta(i.correct + 1, i.scored - i.correct + 1, DRAWS) for i in items])
    wins = np.bincount(np.argmax(draws, axis=0), minlength=len(items))
    return [float(w) / DRAWS for w in wins]


def near_tie(a: Scored, b: Scored) -> bool:
    """Accuracies within one standard error of their difference."""
    return abs(a.accuracy - b.accuracy) <= math.sqrt(a.var + b.var)


def one_objective_front(items: list[Scored]) -> list[tuple[Scored, float, float]]:
    """The trials not surely worse than the leader, as (item, p_best, p_at_least): most
    accurate first, near-ties cheapest (fewest tokens) first."""
    if not items:
        return []
    by_acc = sorted(items, key=lambda i: (-i.accuracy, i.tokens, i.ref))
    leader = by_acc[0]
    keep = [i for i in by_acc if p_at_least(i, leader) >= TIE]
    best = dict(zip((i.ref for i in keep), p_best(keep), strict=True))
    keep = sorted(keep, key=lambda i: -best[i.ref])[:FRONT_MAX]
    keep.sort(key=lambda i: (-i.accuracy, i.tokens, i.ref))
    ordered: list[Scored] = []
    while keep:  # a group of near-ties of the most accurate one left, cheapest first
        head = keep[0]
        group = [i for i in keep if near_tie(i, head)]
        group.sort(key=lambda i: (i.tokens, -i.accuracy, i.ref))
        ordered += group
        keep = [i for i in keep if i not in group]
    return [(i, best[i.ref], p_at_least(i, leader)) for i in ordered]


def pareto_confidence(front: list[Scored]) -> list[float]:
    """For a Pareto front ordered by cost ascending: P(each point is more accurate than the
    next cheaper one), i.e. how sure it is that the extra cost buys accuracy (1 for the
    cheapest)."""
    out = [1.0]
    for prev, cur in itertools.pairwise(front):
        out.append(p_at_least(cur, prev))
    return out
