"""Seeded draws: every random number of the simulation is a hash of what it is about (model,
question, seeds, kind of call, what the prompt shows), never of call order or wall time."""

from __future__ import annotations

import hashlib
import math
from statistics import NormalDist


def uniform(*parts: object) -> float:
    """A uniform in (0, 1) from the parts: the only source of randomness here."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


_NORMAL = NormalDist()


def normal(*parts: object) -> float:
    """A standard normal from the parts."""
    return _NORMAL.inv_cdf(uniform(*parts))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def letters(u: float, n: int = 4) -> str:
    """``n`` lowercase letters from a uniform (the "draft" tags of simulated texts)."""
    value = int(u * 26**n)
    return "".join(chr(97 + (value // 26**i) % 26) for i in range(n))
