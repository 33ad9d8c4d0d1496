"""The world of the simulation: the constants every simulated model shares (how difficulty,
traps, fusing, judging, debate and refining act; see the package docstring) and the token
lengths of each kind of call. All of it is part of every sim backend's identity, so response
caches never mix two worlds."""

from __future__ import annotations

from typing import Any

SIM_VERSION = 1

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

#: cumulative shares of MATH levels 1-5 in the MATH test set (437/894/1131/1214/1324 of 5000)
LEVEL_CDF = (0.0874, 0.2662, 0.4924, 0.7352, 1.0)

#: completion-token medians per kind of call (× the model's verbosity) and lognormal sigma
TOKENS: dict[str, tuple[float, float]] = {
    "solve": (380, 0.45), "concise": (300, 0.45), "fuse": (400, 0.45), "debate": (340, 0.45),
    "refine": (340, 0.45), "select": (100, 0.35), "score": (90, 0.35), "verify": (110, 0.35),
    "rank": (90, 0.35), "critic": (140, 0.35), "plan": (90, 0.35),
}
PER_CANDIDATE_TOKENS = 25  # select and rank read every candidate


def world_constants() -> dict[str, Any]:
    """The constants above (part of every sim backend's identity, so caches never mix them)."""
    names = ["SLOPE", "SD_Q", "SD_M", "TRAP_SHARED", "SCATTER", "FEEDBACK_BONUS", "FUSE_BONUS",
             "FUSE_SHARE", "FUSE_MISLEAD", "FUSE_FOLLOW", "LENIENT", "DEBATE_RECOGNISE",
             "REFINE_FIX", "REFINE_FIX_FLAGGED", "REFINE_BREAK", "REFINE_BREAK_FLAGGED",
             "WRONG_LONGER", "LEVEL_CDF", "TOKENS", "PER_CANDIDATE_TOKENS"]
    return {k: globals()[k] for k in names}
