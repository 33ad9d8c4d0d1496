"""Stopping rules of adaptive width (tts_graph/roles/adaptive.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tts_graph.roles.adaptive import beta_leader_probability, should_stop
from tts_graph.spec import AdaptiveSamples


def integrated(leader: int, runner_up: int, steps: int = 4000) -> float:
    """P(X > 1/2) for X ~ Beta(leader + 1, runner_up + 1), by Simpson's rule."""
    a, b = leader + 1, runner_up + 1
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def pdf(x: float) -> float:
        if x <= 0.0 or x >= 1.0:
            # the density at the ends: finite for a, b >= 1
            if (x <= 0.0 and a == 1) or (x >= 1.0 and b == 1):
                return math.exp(-log_beta)
            return 0.0
        return math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_beta)

    lo, hi = 0.5, 1.0
    h = (hi - lo) / steps
    acc = pdf(lo) + pdf(hi)
    for j in range(1, steps):
        acc += (4 if j % 2 else 2) * pdf(lo + j * h)
    return acc * h / 3


@pytest.mark.parametrize(
    ("leader", "runner_up"),
    [(0, 0), (1, 0), (2, 0), (2, 1), (3, 1), (5, 2), (8, 0), (10, 7), (20, 19), (30, 5)],
)
def test_beta_leader_probability_matches_integration(leader: int, runner_up: int) -> None:
    assert beta_leader_probability(leader, runner_up) == pytest.approx(
        integrated(leader, runner_up), abs=1e-7
    )


def test_beta_leader_probability_known_values() -> None:
    assert beta_leader_probability(0, 0) == pytest.approx(0.5)
    assert beta_leader_probability(3, 3) == pytest.approx(0.5)
    assert beta_leader_probability(2, 0) == pytest.approx(7 / 8)
    assert beta_leader_probability(4, 0) == pytest.approx(31 / 32)


@settings(derandomize=True)
@given(st.integers(0, 40), st.integers(0, 40))
def test_beta_leader_probability_is_a_probability_and_symmetric(a: int, b: int) -> None:
    p = beta_leader_probability(a, b)
    assert 0.0 <= p <= 1.0
    assert p + beta_leader_probability(b, a) == pytest.approx(1.0)
    if a > b:
        assert p > 0.5
    # one more vote for the leader never lowers its probability
    assert beta_leader_probability(a + 1, b) >= p


def rule(**kw: object) -> AdaptiveSamples:
    return AdaptiveSamples.model_validate(kw)


def test_below_min_never_stops() -> None:
    r = rule(min=4, max=16)
    assert not should_stop([], r)
    assert not should_stop(["1", "1", "1"], r)


def test_at_max_always_stops() -> None:
    r = rule(min=2, max=4)
    assert should_stop(["1", "2", "3", "4"], r)
    assert should_stop([None, None, None, None], r)
    assert should_stop(["1", "2", "3", "4", "5"], r)


def test_no_answers_keep_drawing_until_max() -> None:
    r = rule(min=2, max=8)
    assert not should_stop([None] * 7, r)
    assert should_stop([None] * 8, r)


def test_settled_stops_when_the_leader_cannot_be_caught() -> None:
    r = rule(min=2, max=16, stop="settled")
    # leader 8, runner-up 0, 8 left: the runner-up could still tie
    assert not should_stop(["a"] * 8, r)
    # leader 9, 7 left: it can no longer be caught
    assert should_stop(["a"] * 9, r)
    # a runner-up keeps it open longer
    assert not should_stop(["a"] * 8 + ["b"] * 2, r)  # 6 ahead, 6 left
    assert should_stop(["a"] * 10 + ["b"] * 2 + [None], r)  # 8 ahead, 3 left


def test_settled_ignores_missing_answers_in_counts() -> None:
    r = rule(min=2, max=6, stop="settled")
    # a: 3, None: 2 (not a rival), 1 left
    assert should_stop(["a", None, "a", None, "a"], r)
    assert not should_stop(["a", "b", "a", "b", "a"], r)


def test_confidence_rule() -> None:
    r = rule(min=2, max=16, stop="confidence", confidence=0.95)
    assert not should_stop(["a", "a"], r)  # 7/8 < 0.95
    assert not should_stop(["a", "a", "a"], r)  # 15/16 < 0.95
    assert should_stop(["a", "a", "a", "a"], r)  # 31/32 >= 0.95
    assert not should_stop(["a", "b", "a", "b"], r)
    r99 = rule(min=2, max=16, stop="confidence", confidence=0.99)
    assert not should_stop(["a"] * 4, r99)
    assert should_stop(["a"] * 7, r99)  # 255/256


@settings(derandomize=True)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), max_size=20),
    st.integers(1, 10),
    st.integers(0, 10),
)
def test_settled_is_safe(answers: list[str | None], lo: int, extra: int) -> None:
    """When ``settled`` stops before max, no continuation can change the leader."""
    r = rule(min=lo, max=lo + extra, stop="settled")
    answers = answers[: r.max]
    if not should_stop(answers, r) or len(answers) >= r.max:
        return
    counts = {a: answers.count(a) for a in set(answers) if a is not None}
    leader = max(counts.values())
    left = r.max - len(answers)
    second = sorted(counts.values())[-2] if len(counts) > 1 else 0
    assert second + left < leader
