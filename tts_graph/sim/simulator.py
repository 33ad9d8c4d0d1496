"""The role rules of the package docstring: one sample's outcome for one simulated model, its
completion tokens and its simulated latency."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .draws import letters, normal, sigmoid, uniform
from .latents import latent_of, recognise_probability, solve_logit, solve_probability
from .profiles import SimProfile
from .prompts import Situation
from .world import (
    DEBATE_RECOGNISE,
    FEEDBACK_BONUS,
    FUSE_BONUS,
    FUSE_FOLLOW,
    FUSE_MISLEAD,
    FUSE_SHARE,
    LENIENT,
    PER_CANDIDATE_TOKENS,
    REFINE_BREAK,
    REFINE_BREAK_FLAGGED,
    REFINE_FIX,
    REFINE_FIX_FLAGGED,
    SCATTER,
    TOKENS,
    WRONG_LONGER,
)


@dataclass(frozen=True)
class Outcome:
    text: str
    tokens_kind: str
    n_shown: int = 0


def _temperature_factor(t: float) -> float:
    return 1.0 + 0.2 * (0.7 - min(t, 1.5))


class Simulator:
    """The rules of the package docstring for one simulated model."""

    def __init__(self, profile: SimProfile) -> None:
        self.p = profile

    # -- helpers
    def _key(self, sit: Situation, seed: object) -> tuple[object, ...]:
        return (self.p.name, sit.q.seed, sit.q.id, seed, sit.kind, sit.signature)

    def _wrong(self, sit: Situation, seed: object, avoid: frozenset[str] = frozenset()) -> str:
        lat = latent_of(self.p, sit.q)
        k = self._key(sit, seed)
        if uniform("confused", *k) < lat.confusion:
            ans = sit.q.wrong(lat.trap)
        else:
            ans = sit.q.wrong(4 + int(uniform("slip", *k) * SCATTER))
        if ans in avoid:
            ans = sit.q.wrong(4 + int(uniform("slip-again", *k) * SCATTER))
        return ans

    def _solve(self, sit: Situation, seed: object, temp: float, bonus: float = 0.0,
               draw: str = "solve") -> str:
        logit = (solve_logit(self.p, sit.q) + bonus + sit.plan_bonus
                 + (FEEDBACK_BONUS if sit.feedback else 0.0)) * _temperature_factor(temp)
        if uniform(draw, *self._key(sit, seed)) < sigmoid(logit):
            return sit.q.gold
        return self._wrong(sit, seed, sit.flagged)

    def _recognises(self, sit: Situation, seed: object, what: str) -> bool:
        return uniform(what, *self._key(sit, seed)) < recognise_probability(self.p, sit.q)

    def _judged_correct(self, sit: Situation, seed: object, answer: str | None) -> bool:
        right = answer is not None and answer == sit.q.gold
        if self._recognises(sit, seed, "check"):
            return right
        return uniform("lenient", *self._key(sit, seed), answer) < LENIENT

    # -- one sample
    def outcome(self, sit: Situation, seed: object, temp: float) -> Outcome:
        kind = sit.kind
        gold = sit.q.gold
        if kind in ("solve", "concise"):
            return self._answer(self._solve(sit, seed, temp), kind, seed)
        if kind == "fuse":
            given = [a for a in sit.shown if a is not None]
            if gold in given:
                bonus = FUSE_BONUS + FUSE_SHARE * given.count(gold) / len(given)
            else:
                bonus = -FUSE_MISLEAD
            ans = self._solve(sit, seed, temp, bonus, draw="fuse")
            wrongs = Counter(a for a in given if a != gold)
            if ans != gold and wrongs and uniform("follow", *self._key(sit, seed)) < FUSE_FOLLOW:
                ans = wrongs.most_common(1)[0][0]
            return self._answer(ans, "fuse", seed, len(sit.shown))
        if kind == "debate":
            shown = [a for a in (sit.own, *sit.shown) if a is not None]
            k = self._key(sit, seed)
            if gold in shown and uniform("debate-see", *k) < DEBATE_RECOGNISE * \
                    recognise_probability(self.p, sit.q):
                ans = gold
            elif uniform("debate-sway", *k) < self.p.sway and (lead := _plurality(shown)):
                ans = lead
            elif sit.own is not None:
                ans = sit.own
            else:
                ans = self._solve(sit, seed, temp, draw="debate-solve")
            return self._answer(ans, "debate", seed, len(sit.shown))
        if kind == "refine":
            ans = self._refine(sit, seed, temp)
            return self._answer(ans, "refine", seed)
        if kind == "select":
            n = len(sit.shown)
            idx = [i for i, a in enumerate(sit.shown) if a == gold]
            pool = idx if idx and self._recognises(sit, seed, "select") else list(range(n))
            pick = pool[int(uniform("pick", *self._key(sit, seed), sit.shown) * len(pool))]
            return Outcome(f"Compared the solutions (simulated judge).\nBest: {pick + 1}",
                           "select", n_shown=n)
        if kind == "rank":
            n = len(sit.shown)
            k = self._key(sit, seed)
            order = sorted(range(n), key=lambda i: uniform("rank", *k, sit.shown, i))
            if self._recognises(sit, seed, "select"):
                order.sort(key=lambda i: sit.shown[i] != gold)
            return Outcome("Ranked the solutions (simulated judge).\nRanking: "
                           + " > ".join(str(i + 1) for i in order), "rank", n_shown=n)
        if kind in ("score", "verify", "critic"):
            answer = sit.shown[0] if sit.shown else None
            ok = self._judged_correct(sit, seed, answer)
            if kind == "score":
                lo = 7 if ok else 1
                value = lo + int(uniform("score", *self._key(sit, seed), answer) * 4)
                return Outcome(f"Rated the solution (simulated judge).\nScore: {value}",
                               "score")
            if kind == "verify":
                return Outcome("Checked the final result (simulated verifier).\nVerdict: "
                               + ("yes" if ok else "no"), "verify")
            if ok or answer is None:
                return Outcome("Review (simulated): No errors found.", "critic")
            return Outcome(f"Review (simulated): the final answer {answer} looks wrong; "
                           "recheck the last steps.", "critic")
        if kind == "plan":
            return Outcome("Plan (simulated):\n- restate the problem\n- set up the equations\n"
                           "- solve and check\n"
                           f"(simulated plan, solver bonus +{self.p.plan_bonus:.2f})", "plan")
        raise AssertionError(kind)

    def _refine(self, sit: Situation, seed: object, temp: float) -> str:
        if sit.own is None:
            return self._solve(sit, seed, temp, draw="refine-solve")
        p = solve_probability(self.p, sit.q, sit.plan_bonus)
        u = uniform("refine", *self._key(sit, seed))
        if sit.own != sit.q.gold:
            fix = REFINE_FIX_FLAGGED if sit.critique_flags else REFINE_FIX
            return sit.q.gold if u < p * fix else sit.own
        brk = REFINE_BREAK_FLAGGED if sit.critique_flags else REFINE_BREAK
        return self._wrong(sit, seed) if u < (1 - p) * brk else sit.own

    def _answer(self, ans: str, kind: str, seed: object, n: int = 0) -> Outcome:
        draft = letters(uniform("draft", self.p.name, seed, kind, ans))
        return Outcome(f"Simulated solution (draft {draft}); reasoning omitted.\nAnswer: {ans}",
                       kind, n_shown=n)

    # -- tokens and latency
    def completion_tokens(self, sit: Situation, out: Outcome, seed: object,
                          wrong: bool) -> int:
        median, sigma = TOKENS[out.tokens_kind]
        if out.tokens_kind in ("select", "rank"):
            median += PER_CANDIDATE_TOKENS * out.n_shown
        median *= self.p.verbosity * (WRONG_LONGER if wrong else 1.0)
        z = normal("tokens", *self._key(sit, seed))
        return max(1, round(median * math.exp(sigma * z)))

    def latency_s(self, prompt_tokens: int, completion_tokens: int) -> float:
        return simulated_latency_s(self.p, prompt_tokens, completion_tokens)


def simulated_latency_s(profile: SimProfile, prompt_tokens: int, completion_tokens: int
                        ) -> float:
    """The simulated latency of one call (what ``latency_scale`` sleeps a fraction of)."""
    return (profile.base_latency_s + prompt_tokens * profile.prefill_s_per_token
            + completion_tokens * profile.decode_s_per_token)


def _plurality(answers: list[str]) -> str | None:
    ranked = Counter(answers).most_common(2)
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]
