"""The simulated models (``SimProfile``, ``PROFILES``), with the ``skill`` and
``confusion_mean`` fitted as the package docstring's "Calibration" says, and the per-model
options of ``backend: sim``."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import BackendError


@dataclass(frozen=True)
class SimProfile:
    """A simulated model. ``skill`` is its logit on a difficulty-0 question (before the
    per-question terms); the other fields are described in the package docstring."""

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
