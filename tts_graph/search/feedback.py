"""The textual gradient of ``agent-reinforce``: the feedback model's reply, parsed strictly.

The reply is one JSON object (code fences and prose around it are allowed)::

    {"analysis": "...", "updates": [{"param": "solve.samples", "value": 8,
                                     "direction": "increase", "strength": 0.7}]}

validated by pydantic against the search space: an unknown parameter or value, a misspelt key,
a direction other than increase/decrease or an empty list is invalid, and the searcher falls
back to its numeric update (and counts it).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from .space import Param


class FeedbackUpdate(BaseModel):
    """One step of the textual gradient: make ``value`` of ``param`` more or less likely."""

    model_config = ConfigDict(extra="forbid")

    param: str
    value: Any
    direction: Literal["increase", "decrease"]
    strength: float = Field(default=0.5, ge=0.0, le=1.0)
    reason: str | None = None
    _index: int = PrivateAttr(default=-1)

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> FeedbackUpdate:
        ctx = info.context or {}
        params: dict[str, Param] = ctx.get("params", {})
        levels: dict[str, list[Any]] = ctx.get("levels", {})
        if self.param not in params:
            raise ValueError(f"unknown param {self.param!r}; known: {sorted(params)}")
        index = match_level(params[self.param], levels[self.param], self.value)
        if index is None:
            raise ValueError(f"{self.param}: unknown value {self.value!r}; "
                             f"allowed: {levels[self.param]}")
        self._index = index
        return self

    @property
    def index(self) -> int:
        return self._index


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analysis: str = ""
    updates: list[FeedbackUpdate] = Field(min_length=1, max_length=64)


def match_level(p: Param, levels: list[Any], value: Any) -> int | None:
    """The level ``value`` names: an exact match (booleans apart from numbers), the same text,
    or, for an int/float range, the nearest level of a value inside the range."""
    for i, lv in enumerate(levels):
        if isinstance(lv, bool) is isinstance(value, bool) and lv == value:
            return i
    if isinstance(value, str):
        for i, lv in enumerate(levels):
            if value.strip().lower() in (str(lv).lower(), json.dumps(lv).lower()):
                return i
        try:  # a number as text, as the prompt shows it ("1" for 1.0, "0.3333" for 1/3)
            x = float(value)
        except ValueError:
            x = math.nan
        for i, lv in enumerate(levels):
            if (isinstance(lv, int | float) and not isinstance(lv, bool)
                    and math.isclose(float(lv), x, rel_tol=1e-3)):
                return i
    if p.kind != "categorical":
        try:
            x = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            x = None
        if x is not None and math.isfinite(x) and p.low - 1e-9 <= x <= p.high + 1e-9:
            dist = [abs((math.log(x) - math.log(lv)) if p.log and x > 0 else (x - lv))
                    for lv in levels]
            return int(np.argmin(dist))
    return None


def parse_feedback(text: str, params: dict[str, Param], levels: dict[str, list[Any]]
                   ) -> Feedback:
    """The JSON object in ``text`` (code fences and prose around it are allowed), validated.
    Raises ``ValueError`` (``ValidationError`` is one) when it is not valid feedback."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    try:
        data, _end = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    return Feedback.model_validate(data, context={"params": params, "levels": levels})
