"""SIMULATED backend (``backend: sim``): simulated models on a simulated task, for measuring
searchers at a scale that real models cannot reach here. Nothing here is a language model;
every identity says ``sim:``, every completion says "simulated".

It is an ordinary ``Backend``, so graphs run through the real executor, bindings, budgets and
response cache. What it simulates is the *outcome* of each call, by the rules below, from
numbers calibrated to published results (see "Calibration").

The simulated task
------------------
``sim_task(n, seed)`` (also ``--task sim`` / ``sim:N`` / ``sim:N:SEED``) holds ``n`` questions
``"[sim:000123] Compute the value of problem 123."`` (``[sim:s7:000123]`` for task seed 7).
The backend reads the tag from the prompt; it answers nothing else (a prompt without a tag
is a ``BackendError``). Per question, all deterministic:

- the gold answer: an integer, a function of the id;
- a MATH-like level 1-5 (shares 9/18/23/24/26%, those of the MATH test set) and a difficulty
  ``d = (level - 1 + u) / 5`` in [0, 1), from (id, task seed);
- wrong answers ``W[0..]``: ``W[0]`` is the common trap (shared by all models), ``W[1..3]``
  model-specific traps, ``W[4..]`` scattered slips.

Simulated models (``SimProfile``, ``PROFILES``)
----------------------------------------------
``llama-1b``, ``llama-3b``, ``llama-8b``, ``llama-70b`` (named after the Llama 3.x sizes the
reference points use). Model ``m`` on question ``q`` has a latent logit

    L(m, q) = skill_m - SLOPE * d_q + SD_Q * z_q + SD_M * z_mq

(``z_q`` a shared per-question hardness, ``z_mq`` a per-(model, question) quirk, both standard
normal from hashes) and a solve probability ``p(m, q) = sigmoid(L)``. Errors are correlated: a
wrong sample gives the model's *trap* answer with probability ``c(m, q)`` (the per-(model,
question) confusion, mean ``confusion_mean``; the trap is the common ``W[0]`` with probability
``TRAP_SHARED``, else a model-specific one), else a scattered slip. So wrong samples of one
question agree often, and majority voting gains less than independent errors would give.

Completion tokens are lognormal per role (median × the model's verbosity; wrong answers are
30% longer); a completion longer than ``max_tokens`` is cut and loses its final line (no
answer). Simulated latency = ``base + prompt_tokens × prefill + completion_tokens × decode``;
the backend sleeps ``latency × latency_scale`` (option, default 0: no sleep, so the executor's
wall-time latency is ~0). Parameters (1e9, 3e9, 8e9, 70e9) give FLOPs; prices are
illustrative per-million-token prices.

Determinism: every draw is a hash of (model name, question id, task seed, sample seed =
request seed + sample index, kind of call, and what the prompt shows besides the question:
the candidates' answers, a plan's bonus, critiques' flags), never of call order, concurrency
or wall time. As with a real model and a fixed seed, the same prompt with the same seed gives
the same sample: two nodes asking one model the same thing with the same ``seed:`` get the
same samples (give them different seeds for independent ones), and sample ``i`` of a node
does not depend on how many samples it draws (common random numbers: configurations that
differ in width share their first samples, so comparing them is low-noise). Temperature 0 is
greedy (every seed gives the same sample); other temperatures scale the logit by
``1 + 0.2 × (0.7 - T)`` (slightly sharper when colder).

Role rules (recognised from the built-in role prompts of ``tts_graph/roles``; a node with
overridden ``prompts:`` is treated as a solver unless its text keeps the role's phrases)
----------------------------------------------------------------------------------------------
``R(m, q) = sigmoid(L(m, q) + judge_bonus_m)`` is model ``m``'s chance to *recognise* the
correct answer of ``q``: a model that cannot solve a question also judges it badly, and
``judge_bonus`` is negative for the small models (poor verifiers), positive for the large.

- solver, first_finish, debate round 1: "... Answer: X", X = gold with probability ``p``,
  else a wrong answer as above. first_finish ("concisely") writes 20% fewer tokens.
  A plan in the context adds the planner's ``plan_bonus`` to the logit; critiques in the
  context ("Feedback on earlier attempts") add ``FEEDBACK_BONUS`` and a wrong sample avoids
  answers a critique flagged as wrong.
- fuser: a solver whose logit gets ``+ FUSE_BONUS + FUSE_SHARE × share`` when the gold answer
  is among the shown candidates (``share`` = its share of them), ``- FUSE_MISLEAD`` when it is
  not; a wrong fuser repeats the most common wrong shown answer with probability
  ``FUSE_FOLLOW``.
- judge (select): with probability ``R(judge, q)`` it recognises the correct answer and,
  when one is shown, picks a candidate holding it; otherwise it picks uniformly at random.
- judge (score), verifier: per candidate, with probability ``R`` the verdict is right; else a
  lenient coin (``LENIENT`` = 60% "correct"). Scores: 7-10 when judged correct, 1-4 when not.
- ranker: as judge select, for the whole order: recognised → candidates holding the gold
  answer first; else a random order.
- debate, later rounds: with probability ``DEBATE_RECOGNISE × R`` an agent adopts the gold
  answer when any agent shows it; else with probability ``sway_m`` it moves to the strict
  plurality of the shown answers (its own included); else it keeps its own answer.
- critic (and the refiner's critique step): judges the candidate as the verifier does;
  "No errors found." or "the final answer X looks wrong".
- refiner revise: a wrong answer is fixed with probability ``p × (REFINE_FIX_FLAGGED if the
  critique flagged it else REFINE_FIX)``; a right answer is broken with probability
  ``(1 - p) × (REFINE_BREAK_FLAGGED if flagged else REFINE_BREAK)``; else it is kept.
- planner: a plan text carrying its ``plan_bonus`` (a small logit bonus for solvers, fusers
  and debaters that get the plan as context).

Calibration
-----------
Published reference points (Agent-REINFORCE, Wang et al. 2025, "Generalizing Test-time
Compute-optimal Scaling as an Optimizable Graph", MATH): single Llama 1B / 3B / 8B / 70B =
31 / 40 / 49 / 68%; 9 × 1B with majority voting = 39%; 3 × 3B = 54%. Plain majority voting
of three samples of a 40% model cannot reach 54% under any error model (per question it is
right with probability at most p + p² - p³, ties broken by the first answer, and the mean of
that over questions with mean p = 0.4 is at most 50%), so "3 × 3B" is read as three 3B solver
samples aggregated by a 3B fuser (one more 3B call): the best aggregation of three samples the
graph allows. Fitted: ``skill`` per model (to the single-sample points, as the expectation over
10,000 questions), ``confusion_mean`` (9 × 1B) and ``FUSE_BONUS`` (3 × 3B). The other constants
are set by hand to plausible values: ``SLOPE``, ``SD_Q`` and ``SD_M`` give a steep spread over
levels (8B: about 80% at level 1, 25% at level 5); the judge, debate, refine, critic and
planner constants are not calibrated against anything published.
``benchmarks/sim_calibration.py`` runs the reference graphs through the executor and prints
simulated vs published accuracy (BENCHMARKS.md, "Simulated backend calibration").
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from ..answers import normalize_number
from ..errors import BackendError
from ..spec import ModelSpec
from ..types import Completion, Message
from .base import Backend, GenerationRequest, ModelInfo

if TYPE_CHECKING:
    from ..evaluate.tasks import Task

SIM_VERSION = 1

# ---------------------------------------------------------------------------- world constants
SLOPE = 4.0  # logit lost from difficulty 0 to 1
SD_Q = 1.0  # shared per-question hardness (logit sd)
SD_M = 0.8  # per-(model, question) quirk (logit sd)
TRAP_SHARED = 0.5  # chance a model's trap is the common trap W[0]
SCATTER = 60  # scattered slips per question
FEEDBACK_BONUS = 0.1
FUSE_BONUS = 0.9
FUSE_SHARE = 1.0
FUSE_MISLEAD = 0.5
FUSE_FOLLOW = 0.6
LENIENT = 0.6
DEBATE_RECOGNISE = 0.6
REFINE_FIX = 0.1
REFINE_FIX_FLAGGED = 0.35
REFINE_BREAK = 0.02
REFINE_BREAK_FLAGGED = 0.2
WRONG_LONGER = 1.3


def world_constants() -> dict[str, Any]:
    """The constants above (part of every sim backend's identity, so caches never mix them)."""
    names = ["SLOPE", "SD_Q", "SD_M", "TRAP_SHARED", "SCATTER", "FEEDBACK_BONUS", "FUSE_BONUS",
             "FUSE_SHARE", "FUSE_MISLEAD", "FUSE_FOLLOW", "LENIENT", "DEBATE_RECOGNISE",
             "REFINE_FIX", "REFINE_FIX_FLAGGED", "REFINE_BREAK", "REFINE_BREAK_FLAGGED",
             "WRONG_LONGER", "LEVEL_CDF", "TOKENS", "PER_CANDIDATE_TOKENS"]
    return {k: globals()[k] for k in names}


#: cumulative shares of MATH levels 1-5 in the MATH test set (437/894/1131/1214/1324 of 5000)
LEVEL_CDF = (0.0874, 0.2662, 0.4924, 0.7352, 1.0)


@dataclass(frozen=True)
class SimProfile:
    """A simulated model. ``skill`` is its logit on a difficulty-0 question (before the
    per-question terms); the other fields are described in the module docstring."""

    name: str
    params: float
    #: illustrative USD per million tokens (input, output)
    price: tuple[float, float]
    skill: float
    judge_bonus: float = 0.5
    #: mean confusion: the share of wrong samples that give the model's trap answer
    confusion_mean: float = 0.565
    plan_bonus: float = 0.1
    sway: float = 0.5
    verbosity: float = 1.0
    #: seconds: fixed per call, per prompt token, per completion token
    base_latency_s: float = 0.05
    prefill_s_per_token: float = 1e-4
    decode_s_per_token: float = 0.01


PROFILES: dict[str, SimProfile] = {
    p.name: p
    for p in (
        SimProfile("llama-1b", 1e9, (0.04, 0.04), skill=1.20, judge_bonus=-0.6, plan_bonus=0.05,
                   sway=0.6, verbosity=1.15, base_latency_s=0.03, prefill_s_per_token=5e-5,
                   decode_s_per_token=0.004),
        SimProfile("llama-3b", 3e9, (0.08, 0.08), skill=1.77, judge_bonus=-0.2, plan_bonus=0.1,
                   sway=0.5, verbosity=1.05, base_latency_s=0.04, prefill_s_per_token=1e-4,
                   decode_s_per_token=0.007),
        SimProfile("llama-8b", 8e9, (0.18, 0.18), skill=2.32, judge_bonus=0.2, plan_bonus=0.15,
                   sway=0.45, verbosity=1.0, base_latency_s=0.06, prefill_s_per_token=2e-4,
                   decode_s_per_token=0.012),
        SimProfile("llama-70b", 70e9, (0.88, 0.88), skill=3.49, judge_bonus=0.6,
                   plan_bonus=0.25, sway=0.3, verbosity=0.9, base_latency_s=0.2,
                   prefill_s_per_token=1e-3, decode_s_per_token=0.035),
    )
}

#: completion-token medians per kind of call (× the model's verbosity) and lognormal sigma
TOKENS: dict[str, tuple[float, float]] = {
    "solve": (380, 0.45), "concise": (300, 0.45), "fuse": (400, 0.45), "debate": (340, 0.45),
    "refine": (340, 0.45), "select": (100, 0.35), "score": (90, 0.35), "verify": (110, 0.35),
    "rank": (90, 0.35), "critic": (140, 0.35), "plan": (90, 0.35),
}
PER_CANDIDATE_TOKENS = 25  # select and rank read every candidate


# ------------------------------------------------------------------------------------ hashing
def _u(*parts: object) -> float:
    """A uniform in (0, 1) from the parts: the only source of randomness here."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


_NORMAL = NormalDist()


def _z(*parts: object) -> float:
    return _NORMAL.inv_cdf(_u(*parts))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


# ------------------------------------------------------------------------------ the questions
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
        u = _u("level", self.seed, self.id)
        return next(i + 1 for i, c in enumerate(LEVEL_CDF) if u < c)

    @property
    def difficulty(self) -> float:
        return (self.level - 1 + _u("difficulty", self.seed, self.id)) / 5

    @property
    def gold(self) -> str:
        return gold_answer(self.id)

    def wrong(self, k: int) -> str:
        """Wrong answer ``k``: 0 the common trap, 1-3 model traps, 4.. scattered slips."""
        value = 10 + int(_u("wrong", self.seed, self.id, k) * 99_990)
        if str(value) == self.gold:
            value += 1
        return str(value)


def gold_answer(qid: int) -> str:
    """The gold answer of simulated question ``qid`` (a function of the id alone)."""
    return str(10 + int(_u("gold", qid) * 99_990))


_TAG = re.compile(r"\[sim:(?:s(\d+):)?(\d+)\]")


def parse_tag(text: str) -> SimQuestion | None:
    m = _TAG.search(text)
    return SimQuestion(int(m.group(2)), int(m.group(1) or 0)) if m else None


def sim_items(n: int, seed: int = 0) -> list[SimQuestion]:
    return [SimQuestion(i, seed) for i in range(n)]


def sim_task(n: int, seed: int = 0) -> Task:
    """The simulated task: ``n`` questions (ids 0..n-1), numeric scorer. Meta per item:
    ``difficulty``, ``level`` and ``simulated: True``."""
    from ..evaluate.scorers import get_scorer
    from ..evaluate.tasks import Item, Task

    if n < 1:
        raise ValueError("a simulated task needs at least one question")
    items = [Item(q.item_id, q.text, q.gold,
                  {"difficulty": round(q.difficulty, 4), "level": q.level, "simulated": True})
             for q in sim_items(n, seed)]
    name = f"sim:{n}" if seed == 0 else f"sim:{n}:{seed}"
    return Task(name, items, get_scorer("numeric"),
                f"SIMULATED task for the sim backend: {n} questions, MATH-like levels "
                f"(task seed {seed})")


DEFAULT_TASK_SIZE = 2000


def sim_task_from_name(spec: str) -> Task:
    """``sim`` (2,000 questions), ``sim:N`` or ``sim:N:SEED``."""
    from ..evaluate.tasks import TaskError

    parts = spec.split(":")
    try:
        if parts[0] != "sim" or len(parts) > 3:
            raise ValueError
        n = int(parts[1]) if len(parts) > 1 else DEFAULT_TASK_SIZE
        seed = int(parts[2]) if len(parts) > 2 else 0
        if n < 1 or seed < 0:
            raise ValueError
    except ValueError:
        raise TaskError(f"bad simulated task {spec!r}: write sim, sim:N or sim:N:SEED "
                        "(N >= 1 questions, SEED >= 0)") from None
    return sim_task(n, seed)


# ------------------------------------------------------------------------- per-model latents
@dataclass(frozen=True)
class Latent:
    base_logit: float  # L(m, q) without skill
    confusion: float
    trap: int  # index into SimQuestion.wrong


@lru_cache(maxsize=200_000)
def latent(name: str, q: SimQuestion, confusion_mean: float) -> Latent:
    shared = SD_Q * _z("hardness", q.seed, q.id)
    quirk = SD_M * _z("quirk", name, q.seed, q.id)
    a = 1.0 / min(max(confusion_mean, 1e-6), 1.0) - 1.0  # u ** a has mean confusion_mean
    confusion = _u("confusion", name, q.seed, q.id) ** a
    trap = 0 if _u("trap", name, q.seed, q.id) < TRAP_SHARED else \
        1 + int(_u("trap-which", name, q.seed, q.id) * 3)
    return Latent(-SLOPE * q.difficulty + shared + quirk, confusion, trap)


def latent_of(profile: SimProfile, q: SimQuestion) -> Latent:
    return latent(profile.name, q, profile.confusion_mean)


def solve_logit(profile: SimProfile, q: SimQuestion) -> float:
    return profile.skill + latent_of(profile, q).base_logit


def solve_probability(profile: SimProfile, q: SimQuestion, bonus: float = 0.0) -> float:
    """p(m, q): the chance one sample of ``profile`` answers ``q`` right."""
    return _sigmoid(solve_logit(profile, q) + bonus)


def recognise_probability(profile: SimProfile, q: SimQuestion) -> float:
    """R(m, q): the chance ``profile`` recognises the right answer of ``q`` when judging."""
    return _sigmoid(solve_logit(profile, q) + profile.judge_bonus)


# ---------------------------------------------------------------------------- prompt reading
@dataclass(frozen=True)
class Situation:
    """What one request asks, read from its prompt."""

    kind: str  # solve concise fuse debate refine select score verify rank critic plan
    q: SimQuestion
    shown: tuple[str | None, ...] = ()  # candidates' answers, in prompt order
    own: str | None = None  # debate: own previous answer; refine: the previous answer
    plan_bonus: float = 0.0
    feedback: bool = False
    flagged: frozenset[str] = frozenset()  # answers a critique flagged as wrong
    critique_flags: bool = False  # refine: the critique says the answer is wrong

    @property
    def signature(self) -> str:
        """What the prompt shows besides the question (part of every draw's key)."""
        return repr((self.shown, self.own, round(self.plan_bonus, 4), self.feedback,
                     sorted(self.flagged), self.critique_flags))


_ANSWER = re.compile(r"Answer:\s*(\S+)")
_SOLUTION = re.compile(r"^\[Solution \d+\]$", re.MULTILINE)
_AGENT = re.compile(r"^\[Agent \d+\]$", re.MULTILINE)
_PLAN = re.compile(r"simulated plan, solver bonus \+(\d+(?:\.\d+)?)")
_FLAG = re.compile(r"the final answer (\S+) looks wrong")


def _answer_of(text: str) -> str | None:
    found = _ANSWER.findall(text)
    return normalize_number(found[-1]) if found else None


def _blocks(text: str, marker: re.Pattern[str], end: str | None) -> list[str]:
    if end is not None and end in text:
        text = text[: text.rindex(end)]
    found = list(marker.finditer(text))
    ends = [*(m.start() for m in found[1:]), len(text)]
    return [text[m.end():e] for m, e in zip(found, ends, strict=True)]


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:] if j < 0 else text[i:j]


def _critique_flags(critique: str) -> bool:
    if "(simulated)" in critique:
        return "looks wrong" in critique
    return "no error" not in critique.lower()


def read_prompt(messages: tuple[Message, ...]) -> Situation:
    system = "\n".join(m.content for m in messages if m.role == "system")
    user = "\n".join(m.content for m in messages if m.role != "system")
    q = parse_tag(user) or parse_tag(system)
    if q is None:
        raise BackendError("the sim backend (a simulation) answers only simulated questions "
                           "tagged [sim:ID]: run it on the `sim` task (sim_task)")
    plan = [float(x) for x in _PLAN.findall(user)]
    plan_bonus = max(plan) if plan else 0.0
    feedback = "Feedback on earlier attempts:" in user
    flagged = frozenset(a for x in _FLAG.findall(user) if (a := normalize_number(x)))
    ctx = {"plan_bonus": plan_bonus, "feedback": feedback, "flagged": flagged}
    if "'Ranking:" in user:
        return Situation("rank", q, _shown(user, "\n\nRank the"))
    if "'Best: <number>'" in user:
        return Situation("select", q, _shown(user, "\n\nWhich solution is correct?"))
    if "'Score: <number>'" in user:
        return Situation("score", q, (_answer_of(_between(user, "Solution:\n", "\n\nRate")),))
    if "'Verdict: yes'" in user:
        return Situation("verify", q, (_answer_of(_between(user, "Solution:\n", "\n\nIs the")),))
    if "Improved solution:" in user:
        prev = _answer_of(_between(user, "Previous solution:\n", "\n\nCritique:\n"))
        crit = _between(user, "\n\nCritique:\n", "\n\nImproved solution:")
        return Situation("refine", q, own=prev, critique_flags=_critique_flags(crit), **ctx)
    if user.rstrip().endswith("Critique:"):
        return Situation("critic", q, (_answer_of(_between(user, "Solution:\n", "\n\nCritique:")),))
    if "numbered plan" in system:
        return Situation("plan", q)
    if "Other agents' solutions:" in user:
        own = _answer_of(_between(user, "Your previous solution:\n", "\n\nOther agents'"))
        others = _between(user, "Other agents' solutions:\n", "\n\nYour updated solution:")
        shown = tuple(_answer_of(b) for b in _blocks(others, _AGENT, None))
        return Situation("debate", q, shown, own=own, **ctx)
    if _SOLUTION.search(user):
        return Situation("fuse", q, _shown(user, "\n\nYour solution:"), **ctx)
    return Situation("concise" if "concisely" in system else "solve", q, **ctx)


def _shown(user: str, end: str) -> tuple[str | None, ...]:
    return tuple(_answer_of(b) for b in _blocks(user, _SOLUTION, end))


# ---------------------------------------------------------------------------- the simulation
@dataclass(frozen=True)
class Outcome:
    text: str
    tokens_kind: str
    n_shown: int = 0


def _temperature_factor(t: float) -> float:
    return 1.0 + 0.2 * (0.7 - min(t, 1.5))


class Simulator:
    """The rules of the module docstring for one simulated model."""

    def __init__(self, profile: SimProfile) -> None:
        self.p = profile

    # -- helpers
    def _key(self, sit: Situation, seed: object) -> tuple[object, ...]:
        return (self.p.name, sit.q.seed, sit.q.id, seed, sit.kind, sit.signature)

    def _wrong(self, sit: Situation, seed: object, avoid: frozenset[str] = frozenset()) -> str:
        lat = latent_of(self.p, sit.q)
        k = self._key(sit, seed)
        if _u("confused", *k) < lat.confusion:
            ans = sit.q.wrong(lat.trap)
        else:
            ans = sit.q.wrong(4 + int(_u("slip", *k) * SCATTER))
        if ans in avoid:
            ans = sit.q.wrong(4 + int(_u("slip-again", *k) * SCATTER))
        return ans

    def _solve(self, sit: Situation, seed: object, temp: float, bonus: float = 0.0,
               draw: str = "solve") -> str:
        logit = (solve_logit(self.p, sit.q) + bonus + sit.plan_bonus
                 + (FEEDBACK_BONUS if sit.feedback else 0.0)) * _temperature_factor(temp)
        if _u(draw, *self._key(sit, seed)) < _sigmoid(logit):
            return sit.q.gold
        return self._wrong(sit, seed, sit.flagged)

    def _recognises(self, sit: Situation, seed: object, what: str) -> bool:
        return _u(what, *self._key(sit, seed)) < recognise_probability(self.p, sit.q)

    def _judged_correct(self, sit: Situation, seed: object, answer: str | None) -> bool:
        right = answer is not None and answer == sit.q.gold
        if self._recognises(sit, seed, "check"):
            return right
        return _u("lenient", *self._key(sit, seed), answer) < LENIENT

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
            if ans != gold and wrongs and _u("follow", *self._key(sit, seed)) < FUSE_FOLLOW:
                ans = wrongs.most_common(1)[0][0]
            return self._answer(ans, "fuse", seed, len(sit.shown))
        if kind == "debate":
            shown = [a for a in (sit.own, *sit.shown) if a is not None]
            k = self._key(sit, seed)
            if gold in shown and _u("debate-see", *k) < DEBATE_RECOGNISE * \
                    recognise_probability(self.p, sit.q):
                ans = gold
            elif _u("debate-sway", *k) < self.p.sway and (lead := _plurality(shown)):
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
            pick = pool[int(_u("pick", *self._key(sit, seed), sit.shown) * len(pool))]
            return Outcome(f"Compared the solutions (simulated judge).\nBest: {pick + 1}",
                           "select", n_shown=n)
        if kind == "rank":
            n = len(sit.shown)
            k = self._key(sit, seed)
            order = sorted(range(n), key=lambda i: _u("rank", *k, sit.shown, i))
            if self._recognises(sit, seed, "select"):
                order.sort(key=lambda i: sit.shown[i] != gold)
            return Outcome("Ranked the solutions (simulated judge).\nRanking: "
                           + " > ".join(str(i + 1) for i in order), "rank", n_shown=n)
        if kind in ("score", "verify", "critic"):
            answer = sit.shown[0] if sit.shown else None
            ok = self._judged_correct(sit, seed, answer)
            if kind == "score":
                lo = 7 if ok else 1
                value = lo + int(_u("score", *self._key(sit, seed), answer) * 4)
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
        u = _u("refine", *self._key(sit, seed))
        if sit.own != sit.q.gold:
            fix = REFINE_FIX_FLAGGED if sit.critique_flags else REFINE_FIX
            return sit.q.gold if u < p * fix else sit.own
        brk = REFINE_BREAK_FLAGGED if sit.critique_flags else REFINE_BREAK
        return self._wrong(sit, seed) if u < (1 - p) * brk else sit.own

    def _answer(self, ans: str, kind: str, seed: object, n: int = 0) -> Outcome:
        draft = _letters(_u("draft", self.p.name, seed, kind, ans))
        return Outcome(f"Simulated solution (draft {draft}); reasoning omitted.\nAnswer: {ans}",
                       kind, n_shown=n)

    # -- tokens and latency
    def completion_tokens(self, sit: Situation, out: Outcome, seed: object,
                          wrong: bool) -> int:
        median, sigma = TOKENS[out.tokens_kind]
        if out.tokens_kind in ("select", "rank"):
            median += PER_CANDIDATE_TOKENS * out.n_shown
        median *= self.p.verbosity * (WRONG_LONGER if wrong else 1.0)
        z = _z("tokens", *self._key(sit, seed))
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


def _letters(u: float, n: int = 4) -> str:
    value = int(u * 26**n)
    return "".join(chr(97 + (value // 26**i) % 26) for i in range(n))


_ANSWER_KINDS = {"solve", "concise", "fuse", "debate", "refine"}


# ---------------------------------------------------------------------------------- backend
class SimBackend(Backend):
    """A SIMULATED model (``backend: sim``): outcomes by the rules of ``tts_graph.backends.sim``,
    not a language model. Options: ``latency_scale`` (sleep this fraction of the simulated
    latency; default 0), ``base`` (the profile to start from when ``model`` is a new name),
    and any ``SimProfile`` field (``skill``, ``judge_bonus``, ...) to override it."""

    def __init__(self, profile: SimProfile, *, latency_scale: float = 0.0) -> None:
        if latency_scale < 0:
            raise ValueError("latency_scale must be >= 0")
        self.profile = profile
        self.latency_scale = latency_scale
        self.sim = Simulator(profile)
        digest = hashlib.sha256(repr((SIM_VERSION, asdict(profile), world_constants())
                                     ).encode()).hexdigest()[:10]
        self._info = ModelInfo(identity=f"sim:{profile.name}#{digest}", params=profile.params,
                               price=profile.price,
                               extra={"simulated": True, "profile": asdict(profile)})

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SimBackend:
        return cls(profile_from_options(spec.model, spec.options),
                   latency_scale=float(spec.options.get("latency_scale", 0.0)))

    @property
    def info(self) -> ModelInfo:
        return self._info

    def sample(self, request: GenerationRequest, index: int,
               sit: Situation | None = None) -> tuple[Completion, float]:
        """Sample ``index`` of ``request`` and its simulated latency (pure: no sleeping)."""
        sit = sit or read_prompt(request.messages)
        seed: object = "greedy" if request.temperature == 0 else request.seed + index
        out = self.sim.outcome(sit, seed, request.temperature)
        wrong = out.tokens_kind in _ANSWER_KINDS and _answer_of(out.text) != sit.q.gold
        tokens = self.sim.completion_tokens(sit, out, seed, wrong)
        text, finish = out.text, "stop"
        if tokens > request.max_tokens:  # cut: the final line (the answer, verdict) is lost
            tokens, finish = request.max_tokens, "length"
            text = (f"Simulated {sit.kind} output (draft {_letters(_u('cut', seed, text))}), "
                    "cut off by max tokens")
        prompt = self.count_tokens(request.messages)
        comp = Completion(text=text, prompt_tokens=prompt, completion_tokens=tokens,
                          finish_reason=finish)
        return comp, self.sim.latency_s(prompt, tokens)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        sit = read_prompt(request.messages)
        done = [self.sample(request, i, sit) for i in range(request.n)]
        if self.latency_scale > 0:  # samples run in parallel: the slowest one sets the wait
            await asyncio.sleep(max(lat for _, lat in done) * self.latency_scale)
        return [c for c, _ in done]


def profile_from_options(model: str, options: dict[str, Any]) -> SimProfile:
    """The profile for ``model``: a built-in one, or ``options['base']``'s renamed, with any
    ``SimProfile`` field of ``options`` overriding it."""
    names = {f.name for f in fields(SimProfile)} - {"name"}
    base_name = options.get("base", model)
    base = PROFILES.get(str(base_name))
    if base is None:
        raise BackendError(f"sim: unknown simulated model {base_name!r}; known: "
                           f"{', '.join(PROFILES)} (or give options.base)")
    unknown = set(options) - names - {"base", "latency_scale"}
    if unknown:
        raise BackendError(f"sim: unknown options {', '.join(sorted(unknown))}; allowed: "
                           f"latency_scale, base, {', '.join(sorted(names))}")
    changes: dict[str, Any] = {k: v for k, v in options.items() if k in names}
    if "price" in changes:
        changes["price"] = tuple(float(x) for x in changes["price"])
    return replace(base, name=model, **changes)


def create_sim_backend(spec: ModelSpec) -> SimBackend:
    return SimBackend.from_spec(spec)
