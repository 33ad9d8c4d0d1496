"""``agent-reinforce``: the sampling-feedback-update loop of Agent-REINFORCE ("Generalizing
Test-time Compute-optimal Scaling as an Optimizable Graph", Wang et al., 2025).

A *probabilistic graph* θ holds, for every parameter of the search space, a categorical
distribution over its levels (``Param.levels``: categorical choices as they are, int/float
ranges discretized): probabilities for each node on/off, each edge on/off, the model of each
node, and each budget level (samples, agents, rounds, max_tokens, temperature). The loop:

1. **sample** — ``ask`` draws a configuration from θ (seeded), avoiding configurations the study
   already holds while an unseen one is reasonably likely (a few resamples), and records it as
   an Optuna trial with exactly those parameters;
2. **evaluate** — the driver scores it through the executor and the response cache;
3. **feedback → update** — after every ``batch`` finished trials, a *feedback model* (any model
   of the base graph, ``searcher.feedback_model``, or ``options.feedback: {backend, model}``)
   reads the recent graphs with their scores, θ and the prior insights, and returns a structured
   textual gradient, JSON validated by pydantic::

       {"analysis": "...", "updates": [{"param": "solve.samples", "value": 8,
                                        "direction": "increase", "strength": 0.7}]}

   Each update moves the logit of (param, value) by ``± strength × feedback_step``; logits are
   clipped, and probabilities keep a floor, so nothing ever reaches probability 0. When the
   feedback is invalid (not JSON, fails validation, names an unknown parameter or value, the
   call errors) or no feedback model is set, a **numeric REINFORCE** update is used instead::

       logit[p][v] += lr · A · (1[v chosen] − π(v)),   A = (reward − baseline) / scale

   averaged over the batch, with reward = accuracy − λ · (mean cost normalised by the largest
   seen) — plain accuracy for a single objective —, baseline a running (exponential) mean of
   the rewards and scale their standard deviation (floored at 0.05), and the log
   (logger ``tts_graph.search``) says that the numeric update was used and why.

**Prior** (the insights of that line of work):

- *Tasks prefer certain model sizes*, and bigger is not always better: the model of each node
  starts uniform, and the feedback model is shown each model's declared size and price so it
  can move that distribution (Insight 1).
- *Width and depth each have a sweet spot*: accuracy rises with more samples/agents (width) or
  rounds (depth), then flattens or falls. Their levels start with a prior that favours the
  middle over the extremes: logit = −``prior_strength`` · (2·position − 1)², i.e. the ends get
  e^−1 ≈ 0.37× the middle's weight with the default strength (Insight 2).
- *Width and depth interact*: under one budget, more of one pays only with a moderate amount of
  the other. A sampled configuration with both a width and a depth parameter in their top
  quarter is, with probability ``interaction / (1 + updates)`` (fading as evidence arrives),
  redrawn on one of them below its top quarter (Insight 3).

θ, the counters and one record per update (kind, reason, trials, the feedback's analysis,
θ's modes) are stored in the study's user attributes, so the history shows what moved the
search and a resumed search continues from the same θ. ``feedback_updates``,
``numeric_updates``, ``last_feedback_error`` and ``feedback_tokens`` count on the instance.

The feedback call goes through the backend's ``generate``. The driver calls ``tell`` from
inside its event loop, so the call runs on a private event loop in a daemon thread (one loop
for the backend's lifetime, so loop-bound clients stay valid); ``tell`` works the same way
with or without a running loop. Pruning is the base ``Searcher.should_prune``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from ..backends.base import Backend, GenerationRequest
from ..errors import TTSGraphError
from ..spec import ModelSpec
from ..types import Message
from .base import DIRECTIONS, Proposal, Searcher, measured_values, suggest
from .space import Param, Space
from .trial import TrialResult

log = logging.getLogger("tts_graph.search")

WIDTH_FIELDS = ("samples", "agents")
DEPTH_FIELDS = ("rounds",)
ATTR = "agent_reinforce"

INSIGHTS = """\
1. Tasks prefer certain model sizes and families; bigger is not always better: a smaller model
   sampled several times can beat a larger one at the same compute. Judge models by the scores.
2. Width (samples, agents) and depth (rounds) each have a sweet spot: accuracy rises, then
   flattens or falls, while cost keeps rising.
3. Width and depth interact: under one budget, pushing both to their maximum at once rarely
   pays; more of one works best with a moderate amount of the other."""


class AgentReinforceOptions(BaseModel):
    """``searcher.options`` of ``agent-reinforce`` (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    levels: int = Field(default=5, ge=2, description="levels of a discretized range")
    lr: float = Field(default=1.0, gt=0, description="numeric REINFORCE step size")
    baseline_decay: float = Field(default=0.7, ge=0, lt=1,
                                  description="weight of the old baseline in its running mean")
    cost_weight: float = Field(default=0.3, ge=0,
                               description="λ: reward = accuracy − λ · normalised cost")
    floor: float = Field(default=0.02, gt=0, lt=0.5,
                         description="least probability of any level")
    feedback_step: float = Field(default=1.5, gt=0,
                                 description="largest logit change per update (strength 1)")
    logit_clip: float = Field(default=6.0, gt=0)
    prior_strength: float = Field(default=1.0, ge=0)
    interaction: float = Field(default=0.6, ge=0, le=1)
    resamples: int = Field(default=8, ge=1, description="draws to find an unseen config")
    history: int = Field(default=12, ge=1, description="recent graphs shown to the feedback")
    feedback: dict[str, Any] | None = Field(
        default=None, description="a model entry ({backend, model, ...}) for the feedback")
    feedback_temperature: float = Field(default=0.2, ge=0)
    feedback_max_tokens: int = Field(default=512, ge=16)
    feedback_timeout_s: float = Field(default=120.0, gt=0)


# ------------------------------------------------------------------------- the feedback JSON

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


# ------------------------------------------------------------------------------- history

@dataclass
class Record:
    number: int
    config: dict[str, Any]
    state: str
    values: dict[str, float]
    questions: int = 0


class _LoopThread:
    """A private event loop in a daemon thread: coroutines submitted from any thread (inside
    a running loop or not) run there, one loop for the backend's whole life."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="agent-reinforce-feedback")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise TimeoutError(f"feedback call timed out after {timeout:g} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------ searcher

class AgentReinforceSearcher(Searcher):
    name = "agent-reinforce"
    # a seen graph is proposed only when every draw was seen: it is the policy's sample, run
    # (from the cache) and counted as in Agent-REINFORCE's sampling-feedback-update loop
    skips_repeats = False

    def __init__(self, space: Space, study: optuna.Study, objectives: list[str], *,
                 seed: int = 0, options: dict[str, Any] | None = None, batch: int = 4,
                 feedback_model: str | None = None,
                 base_models: dict[str, Any] | None = None, base_dir: Path | None = None,
                 feedback_backend: Backend | None = None) -> None:
        super().__init__(space, study, objectives, seed=seed, options=options)
        try:
            self.opts = AgentReinforceOptions.model_validate(self.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"]))
            raise TTSGraphError(f"searcher.options.{where}: {err['msg']}") from None
        self.batch = max(1, int(batch))
        self.base_models = dict(base_models or {})
        self.rng = np.random.default_rng(seed)
        self.params: dict[str, Param] = {p.name: p for p in space.params}
        self.levels: dict[str, list[Any]] = {p.name: p.levels(self.opts.levels)
                                            for p in space.params}
        self.logits: dict[str, np.ndarray] = {n: self._prior(self.params[n], len(lv))
                                              for n, lv in self.levels.items()}
        self.width = [n for n in self.params if n.rsplit(".", 1)[-1] in WIDTH_FIELDS
                      and not n.startswith("edge:")]
        self.depth = [n for n in self.params if n.rsplit(".", 1)[-1] in DEPTH_FIELDS
                      and not n.startswith("edge:")]
        self.history: list[Record] = []
        self.pending: list[Record] = []
        self.baseline: float | None = None
        self.updates = 0
        self.feedback_updates = 0
        self.numeric_updates = 0
        self.feedback_tokens = 0
        self.last_feedback_error: str | None = None
        self.feedback_name: str | None = None
        self.feedback_backend: Backend | None = feedback_backend
        self._loop: _LoopThread | None = None
        if feedback_backend is not None:
            self.feedback_name = feedback_backend.info.identity
        else:
            self._make_feedback_backend(feedback_model, base_dir)
        self._restore()

    # ------------------------------------------------------------------------- θ

    def _prior(self, p: Param, k: int) -> np.ndarray:
        field = p.name.rsplit(".", 1)[-1]
        if k > 2 and not p.name.startswith("edge:") and field in WIDTH_FIELDS + DEPTH_FIELDS:
            pos = np.arange(k) / (k - 1)
            return -self.opts.prior_strength * (2 * pos - 1) ** 2
        return np.zeros(k)

    def probs(self, name: str) -> np.ndarray:
        """π over the levels of ``name``: softmax of the logits, mixed with a floor."""
        z = self.logits[name]
        e = np.exp(z - z.max())
        soft = e / e.sum()
        k = len(z)
        floor = min(self.opts.floor, 0.5 / k)
        return floor + (1 - k * floor) * soft

    def theta(self) -> dict[str, dict[str, float]]:
        """θ as {param: {level (as text): probability}}."""
        return {n: {_text(lv): round(float(pi), 4) for lv, pi in zip(self.levels[n],
                                                                     self.probs(n), strict=True)}
                for n in self.levels}

    def _clip(self, name: str) -> None:
        z = self.logits[name]
        z = z - z.mean()
        self.logits[name] = np.clip(z, -self.opts.logit_clip, self.opts.logit_clip)

    # ----------------------------------------------------------------------- sample

    def _draw(self) -> dict[str, Any]:
        idx = {n: int(self.rng.choice(len(self.levels[n]), p=self.probs(n)))
               for n in self.levels}
        if self.width and self.depth and self.opts.interaction > 0:
            high = [n for n in self.width + self.depth if self._position(n, idx[n]) >= 0.75]
            hw = [n for n in high if n in self.width]
            hd = [n for n in high if n in self.depth]
            penalty = self.opts.interaction / (1 + self.updates)
            if hw and hd and self.rng.random() < penalty:
                name = hw[0] if self.rng.random() < 0.5 else hd[0]
                k = len(self.levels[name])
                keep = np.array([self._position(name, i) < 0.75 for i in range(k)])
                if keep.any():
                    p = self.probs(name) * keep
                    idx[name] = int(self.rng.choice(k, p=p / p.sum()))
        return {n: self.levels[n][i] for n, i in idx.items()}

    def _position(self, name: str, i: int) -> float:
        k = len(self.levels[name])
        return i / (k - 1) if k > 1 else 0.0

    def ask(self) -> Proposal:
        seen = {_key(t.params) for t in self.study.get_trials(deepcopy=False) if t.params}
        config = self._draw()
        for _ in range(self.opts.resamples - 1):
            if _key(config) not in seen:
                break
            config = self._draw()
        else:
            if _key(config) in seen:
                log.debug("agent-reinforce: every draw was seen; re-proposing %s", config)
        self.study.enqueue_trial(config)
        trial = self.study.ask()
        config = {p.name: suggest(trial, p) for p in self.space.params}
        return Proposal(config, trial)

    # ------------------------------------------------------------------------ tell

    def tell(self, proposal: Proposal, result: TrialResult) -> None:
        super().tell(proposal, result)
        rec = Record(proposal.number, dict(proposal.config), result.state, dict(result.values),
                     result.questions)
        self.history.append(rec)
        self.pending.append(rec)
        if len(self.pending) >= self.batch:
            batch, self.pending = self.pending, []
            self.update(batch)

    def update(self, batch: list[Record]) -> str:
        """Update θ from ``batch``: with the feedback model's textual gradient, or the numeric
        REINFORCE step when there is none or it is invalid. Returns the kind used."""
        info: dict[str, Any] = {"trials": [r.number for r in batch]}
        reason: str
        if self.feedback_backend is None:
            reason = "no feedback model set"
        else:
            try:
                fb, tokens = self._feedback()
                self.feedback_tokens += tokens
                changes = self._apply_feedback(fb)
                self.feedback_updates += 1
                self.last_feedback_error = None
                info.update(kind="feedback", analysis=fb.analysis[:2000], changes=changes,
                            tokens=tokens)
                self._advance_baseline(batch)
                return self._finish(info)
            except Exception as exc:  # invalid feedback of any kind: fall back, say why
                reason = f"{type(exc).__name__}: {_short(str(exc))}"
                self.last_feedback_error = reason
                log.warning("agent-reinforce: feedback from %s was invalid (%s); numeric "
                            "REINFORCE update used", self.feedback_name, reason)
        if self.feedback_backend is None:
            log.info("agent-reinforce: numeric REINFORCE update (%s)", reason)
        self._numeric(batch)
        self.numeric_updates += 1
        info.update(kind="numeric", reason=reason, baseline=self.baseline)
        return self._finish(info)

    def _finish(self, info: dict[str, Any]) -> str:
        self.updates += 1
        info["modes"] = {n: _text(self.levels[n][int(np.argmax(self.probs(n)))])
                         for n in self.levels}
        tag = f"{ATTR}.s{self.seed}"
        try:
            self.study.set_user_attr(f"{tag}.update.{self.updates:04d}", _jsonable(info))
            self.study.set_user_attr(f"{tag}.state", _jsonable({
                "levels": {n: list(lv) for n, lv in self.levels.items()},
                "logits": {n: [round(float(x), 6) for x in z] for n, z in self.logits.items()},
                "baseline": self.baseline, "updates": self.updates,
                "feedback_updates": self.feedback_updates,
                "numeric_updates": self.numeric_updates,
                "feedback_tokens": self.feedback_tokens,
                "last_feedback_error": self.last_feedback_error}))
        except Exception as exc:  # the history is a courtesy; never lose the search over it
            log.warning("agent-reinforce: could not store the update in the study: %s", exc)
        return str(info["kind"])

    def _restore(self) -> None:
        """Continue from θ stored by an earlier run of this searcher (same seed) on the study,
        and show it the study's finished trials."""
        state = self.study.user_attrs.get(f"{ATTR}.s{self.seed}.state")
        if isinstance(state, dict) and state.get("levels") == _jsonable(
                {n: list(lv) for n, lv in self.levels.items()}):
            self.logits = {n: np.array(z, dtype=float) for n, z in state["logits"].items()}
            self.baseline = state.get("baseline")
            for key in ("updates", "feedback_updates", "numeric_updates", "feedback_tokens"):
                setattr(self, key, int(state.get(key, 0)))
            self.last_feedback_error = state.get("last_feedback_error")
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=done):
            if set(t.params) == set(self.params):
                self.history.append(Record(t.number, dict(t.params),
                                           t.state.name.lower(), measured_values(t),
                                           int(t.user_attrs.get("questions", 0))))

    # --------------------------------------------------------------- numeric update

    def rewards(self, records: list[Record]) -> list[float | None]:
        """Scalar rewards: accuracy − λ · mean normalised cost (None for a failed trial: not
        the configuration's fault). Infeasible configurations get the worst reward."""
        costs = self.objectives[1:]
        worst = -self.opts.cost_weight if costs else 0.0
        scale = {c: max((r.values.get(c, 0.0) for r in self.history if r.values), default=0.0)
                 for c in costs}
        out: list[float | None] = []
        for r in records:
            if r.state == "infeasible":
                out.append(worst)
            elif r.state == "failed" or "accuracy" not in r.values:
                out.append(None)
            else:
                penalty = 0.0
                if costs:
                    penalty = self.opts.cost_weight * float(np.mean(
                        [r.values.get(c, 0.0) / scale[c] if scale[c] > 0 else 0.0
                         for c in costs]))
                out.append(float(r.values["accuracy"]) - penalty)
        return out

    def _numeric(self, batch: list[Record]) -> None:
        rewards = self.rewards(batch)
        pairs = [(r, x) for r, x in zip(batch, rewards, strict=True) if x is not None]
        if not pairs:
            return
        mean = float(np.mean([x for _, x in pairs]))
        baseline = mean if self.baseline is None else self.baseline
        seen = [x for x in self.rewards(self.history) if x is not None]
        scale = max(float(np.std(seen)) if len(seen) > 1 else 0.0, 0.05)
        grads = {n: np.zeros(len(lv)) for n, lv in self.levels.items()}
        for rec, reward in pairs:
            adv = (reward - baseline) / scale
            for n in self.levels:
                if n not in rec.config:
                    continue
                pi = self.probs(n)
                onehot = np.zeros(len(pi))
                onehot[self._index(n, rec.config[n])] = 1.0
                grads[n] += adv * (onehot - pi)
        for n, g in grads.items():
            step = self.opts.lr * g / len(pairs)
            self.logits[n] = self.logits[n] + np.clip(step, -self.opts.feedback_step * 2,
                                                      self.opts.feedback_step * 2)
            self._clip(n)
        self._advance_baseline(batch, rewards)

    def _advance_baseline(self, batch: list[Record],
                          rewards: list[float | None] | None = None) -> None:
        xs = [x for x in (rewards if rewards is not None else self.rewards(batch))
              if x is not None]
        if not xs:
            return
        mean = float(np.mean(xs))
        d = self.opts.baseline_decay
        self.baseline = mean if self.baseline is None else d * self.baseline + (1 - d) * mean

    def _index(self, name: str, value: Any) -> int:
        i = match_level(self.params[name], self.levels[name], value)
        return 0 if i is None else i

    # -------------------------------------------------------------- feedback update

    def _make_feedback_backend(self, name: str | None, base_dir: Path | None) -> None:
        from ..backends.registry import create_backend

        entry: Any
        if name is not None and self.opts.feedback is not None:
            raise TTSGraphError("searcher: give feedback_model or options.feedback, not both")
        if name is not None:
            if name not in self.base_models:
                raise TTSGraphError(f"searcher.feedback_model: '{name}' is not a model of the "
                                    f"base graph (models: {', '.join(self.base_models)})")
            entry, where = self.base_models[name], f"models.{name}"
        elif self.opts.feedback is not None:
            entry, where = self.opts.feedback, "searcher.options.feedback"
        else:
            return
        try:
            spec = ModelSpec.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise TTSGraphError(f"{where}.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                ) from None
        self.feedback_backend = create_backend(spec, base_dir)
        self.feedback_name = name or f"{spec.backend}:{spec.model}"

    def prompt(self) -> list[Message]:
        """The feedback request: recent graphs and scores, θ, the models, the insights."""
        goal = ", ".join(f"{o} ({'up' if DIRECTIONS[o] == 'maximize' else 'down'})"
                         for o in self.objectives)
        lines = ["You tune a test-time-scaling collaboration graph of LLMs for one task.",
                 f"Objectives: {goal}. Costs are per question.", "",
                 "Parameters and the current probability of each allowed value:"]
        for n, probs in self.theta().items():
            lines.append(f"- {n}: " + ", ".join(f"{v}: {p:.2f}" for v, p in probs.items()))
        models = self._model_lines()
        if models:
            lines += ["", "Models of the base graph:", *models]
        lines += ["", f"Recent graphs (last {self.opts.history}) and their scores:"]
        for r in self.history[-self.opts.history:]:
            lines.append(f"- trial {r.number}: " + ", ".join(
                f"{k}={_text(v)}" for k, v in sorted(r.config.items())) + " -> "
                + _scores(r, self.objectives))
        lines += ["", "Insights from research on test-time scaling:", INSIGHTS, "",
                  "Reply with JSON only, no prose around it:",
                  '{"analysis": "<what the scores show, briefly>", "updates": [{"param": '
                  '"<a parameter above>", "value": <one of its values>, "direction": '
                  '"increase" or "decrease", "strength": <0..1>}]}',
                  "'increase' makes that value more likely in the next graphs, 'decrease' "
                  "less likely; strength is how sure you are. Give 1 to 8 updates."]
        system = ("You are an optimisation agent. You read experiment results and return a "
                  "textual gradient as strict JSON.")
        return [Message("system", system), Message("user", "\n".join(lines))]

    def _model_lines(self) -> list[str]:
        used = {lv for n, lvs in self.levels.items() if n.endswith(".model") for lv in lvs}
        out = []
        for name, entry in self.base_models.items():
            if used and name not in used:
                continue
            try:
                m = ModelSpec.model_validate(entry)
            except ValidationError:
                continue
            bits = [f"{m.backend}:{m.model}"]
            if m.params:
                bits.append(f"{m.params / 1e9:.3g}B parameters")
            if m.price is not None:
                bits.append(f"${m.price.input_per_mtok:g}/${m.price.output_per_mtok:g} per "
                            "Mtok in/out")
            out.append(f"- {name}: " + ", ".join(bits))
        return out

    def _feedback(self) -> tuple[Feedback, int]:
        assert self.feedback_backend is not None
        request = GenerationRequest(messages=tuple(self.prompt()),
                                    max_tokens=self.opts.feedback_max_tokens,
                                    temperature=self.opts.feedback_temperature,
                                    seed=self.seed + self.updates, n=1)
        if self._loop is None:
            self._loop = _LoopThread()
        completions = self._loop.run(self.feedback_backend.generate(request),
                                     self.opts.feedback_timeout_s)
        if not completions:
            raise ValueError("the feedback model returned no completion")
        c = completions[0]
        fb = parse_feedback(c.text, self.params, self.levels)
        return fb, int(c.prompt_tokens + c.completion_tokens)

    def _apply_feedback(self, fb: Feedback) -> list[dict[str, Any]]:
        """Move logits by ± strength × feedback_step, at most feedback_step per level in one
        update; clip, and keep the floor (in ``probs``)."""
        delta = {n: np.zeros(len(lv)) for n, lv in self.levels.items()}
        for u in fb.updates:
            sign = 1.0 if u.direction == "increase" else -1.0
            delta[u.param][u.index] += sign * u.strength * self.opts.feedback_step
        changes = []
        for n, d in delta.items():
            if not d.any():
                continue
            before = self.probs(n)
            step = self.opts.feedback_step
            self.logits[n] = self.logits[n] + np.clip(d, -step, step)
            self._clip(n)
            after = self.probs(n)
            changes.append({"param": n, "before": [round(float(x), 4) for x in before],
                            "after": [round(float(x), 4) for x in after]})
        return changes

    def close(self) -> None:
        """Stop the feedback loop thread (and release the feedback backend)."""
        if self._loop is not None:
            if self.feedback_backend is not None:
                try:
                    self._loop.run(self.feedback_backend.aclose(), 30)
                except Exception as exc:
                    log.debug("agent-reinforce: closing the feedback backend: %s", exc)
            self._loop.close()
            self._loop = None


# ----------------------------------------------------------------------------- helpers

def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _key(config: dict[str, Any]) -> str:
    return json.dumps({k: _plain(v) for k, v in sorted(config.items())}, default=str)


def _text(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, bool) else str(v)


def _short(s: str, n: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _scores(r: Record, objectives: list[str]) -> str:
    if r.state == "infeasible":
        return "infeasible (over a constraint or not a valid graph)"
    if not r.values:
        return r.state
    parts = [f"accuracy {r.values.get('accuracy', 0.0):.1%} on {r.questions} questions"]
    for k in ("cost", "tokens", "flops"):
        if k in r.values and (k in objectives or k == "tokens"):
            parts.append(f"{k} {r.values[k]:.4g}/question")
    if "latency" in r.values and "latency" in objectives:
        parts.append(f"latency {r.values['latency']:.3g} s (median)")
    if r.state == "pruned":
        parts.append("(cut early: could not win)")
    return ", ".join(parts)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: _plain(o) if hasattr(o, "item")
                                 else str(o)))
