"""Per (model, question) latents: the solve logit ``L(m, q)``, the confusion and the trap, and
the probabilities built on them (solve ``p``, recognise ``R``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .draws import normal, sigmoid, uniform
from .profiles import SimProfile
from .questions import SimQuestion
from .world import SD_M, SD_Q, SLOPE, TRAP_SHARED


@dataclass(frozen=True)
class Latent:
    base_logit: float  # L(m, q) without skill
    confusion: float
    trap: int  # index into SimQuestion.wrong


@lru_cache(maxsize=200_000)
def latent(name: str, q: SimQuestion, confusion_mean: float) -> Latent:
    shared = SD_Q * normal("hardness", q.seed, q.id)
    quirk = SD_M * normal("quirk", name, q.seed, q.id)
    a = 1.0 / min(max(confusion_mean, 1e-6), 1.0) - 1.0  # u ** a has mean confusion_mean
    confusion = uniform("confusion", name, q.seed, q.id) ** a
    trap = 0 if uniform("trap", name, q.seed, q.id) < TRAP_SHARED else \
        1 + int(uniform("trap-which", name, q.seed, q.id) * 3)
    return Latent(-SLOPE * q.difficulty + shared + quirk, confusion, trap)


def latent_of(profile: SimProfile, q: SimQuestion) -> Latent:
    return latent(profile.name, q, profile.confusion_mean)


def solve_logit(profile: SimProfile, q: SimQuestion) -> float:
    return profile.skill + latent_of(profile, q).base_logit


def solve_probability(profile: SimProfile, q: SimQuestion, bonus: float = 0.0) -> float:
    """p(m, q): the chance one sample of ``profile`` answers ``q`` right."""
    return sigmoid(solve_logit(profile, q) + bonus)


def recognise_probability(profile: SimProfile, q: SimQuestion) -> float:
    """R(m, q): the chance ``profile`` recognises the right answer of ``q`` when judging."""
    return sigmoid(solve_logit(profile, q) + profile.judge_bonus)
