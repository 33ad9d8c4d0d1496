"""Stopping rules for adaptive width (adaptive self-consistency).

``settled``: stop when the leader cannot be overtaken by the samples still allowed.
``confidence``: stop when P(leader's true share > runner-up's) >= the stated confidence, under
a uniform Beta prior on the two (Aggarwal et al., "Let's Sample Step by Step").
"""

from __future__ import annotations

from collections import Counter
from math import comb

from ..spec import AdaptiveSamples


def beta_leader_probability(leader: int, runner_up: int) -> float:
    """P(p1 > p2) for p1/(p1+p2) ~ Beta(leader+1, runner_up+1), i.e. I_0.5 complement.

    For integer parameters a, b: P(X > 1/2) with X ~ Beta(a, b) equals
    P(Binomial(a + b - 1, 1/2) >= a)... taken from the other side, so exact and cheap.
    """
    a, b = leader + 1, runner_up + 1
    n = a + b - 1
    # P(X < 1/2) = P(Binomial(n, 1/2) >= a); we want its complement.
    tail = sum(comb(n, k) for k in range(a, n + 1)) / 2**n
    return 1.0 - tail


def should_stop(answers: list[str | None], rule: AdaptiveSamples) -> bool:
    """Whether to stop drawing, given the answers drawn so far (``None`` = no answer)."""
    drawn = len(answers)
    if drawn >= rule.max:
        return True
    if drawn < rule.min:
        return False
    counts = Counter(a for a in answers if a is not None).most_common(2)
    if not counts:
        return False
    leader = counts[0][1]
    runner_up = counts[1][1] if len(counts) > 1 else 0
    if rule.stop == "settled":
        return leader - runner_up > rule.max - drawn
    return beta_leader_probability(leader, runner_up) >= rule.confidence
