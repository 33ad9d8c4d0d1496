"""``agent-reinforce``: the sampling → feedback → update loop of Agent-REINFORCE ("Generalizing
Test-time Compute-optimal Scaling as an Optimizable Graph", Wang et al., 2025), over a
probabilistic graph that can express interactions (``tts_graph.search.policy``).

1. **sample** — ``ask`` draws a graph from the policy π (Thompson sampling: the best unseen
   distinct graph under one posterior draw; with cost objectives, the one that most improves
   the hypervolume of the front), never one over a constraint, never one already tried while
   an untried one is left; it is recorded as an Optuna trial with exactly its parameters
   (define-by-run: a switched-off node's fields are not among them);
2. **evaluate** — the driver scores it through the executor and the response cache
   (successive halving may cut it; its partial score still counts, with the weight its few
   questions deserve);
3. **update** — the numeric update is the Bayesian update of the reward model behind π
   (``GraphPolicy.fit``), after every trial. Every ``batch`` trials, a *feedback model* (any
   model of the base graph, ``searcher.feedback_model``, or ``options.feedback: {backend,
   model}``) reads the history table, the space with π's marginals and the models, and returns
   a textual gradient, JSON parsed strictly (``tts_graph.search.feedback``); its updates move
   the prior mean of the named (parameter, value) by ± strength × ``feedback_step``. A reply
   that is not valid feedback (or a failed call) is counted (``last_feedback_error``), logged,
   and the numeric update alone is used. With a feedback model, the first proposal also waits
   for one feedback call on the empty history: the model's prior knowledge of the models and
   the task shapes the initial distribution, as in the paper.

Why not the plain REINFORCE gradient: measured on ``benchmarks/search_efficiency.py`` it was
no better than random search (independent categorical θ per parameter, a baseline-subtracted
step per batch); the conjugate update uses every trial at once, knows how noisy each score is,
and shares evidence between graphs through the features (BENCHMARKS.md has the figures).

The policy's prior comes from the models' declared sizes and prices (see ``policy``). The
feedback offsets, the counters and one record per update (kind, reason, trials, the
feedback's analysis, π's modes) are stored in the study's user attributes, so the history
shows what moved the search and a resumed search continues from the same state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends.base import Backend, GenerationRequest
from ..errors import TTSGraphError
from ..evaluate.summary import wilson
from ..spec import ModelSpec
from ..types import Message
from .base import DIRECTIONS, Proposal, Searcher, measured_values
from .feedback import Feedback, parse_feedback
from .policy import GraphPolicy, Observation
from .policy import level_text as _text
from .space import Space
from .trial import TrialResult

log = logging.getLogger("tts_graph.search")

ATTR = "agent_reinforce"
#: reward units (accuracy) one feedback step of strength 1 moves a level's prior mean
FEEDBACK_UNIT = 0.05

INSIGHTS = """\
1. Tasks prefer certain model sizes and families; bigger is not always better: a smaller model
   sampled several times can beat a larger one at the same compute. Judge models by the scores.
2. Width (samples, agents) and depth (rounds) each have a sweet spot: accuracy rises, then
   flattens or falls, while cost keeps rising. Where models' errors agree (multiple choice,
   shared traps), voting over more samples gains little.
3. Width and depth interact: under one budget, pushing both to their maximum at once rarely
   pays; more of one works best with a moderate amount of the other."""


class AgentReinforceOptions(BaseModel):
    """``searcher.options`` of ``agent-reinforce`` (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    levels: int = Field(default=5, ge=2, description="levels of a discretized range")
    explore: float = Field(default=0.4, gt=0,
                           description="scale of the posterior draws (more: explore more)")
    misfit: float = Field(default=0.02, gt=0,
                          description="noise floor of a score beyond the binomial (accuracy)")
    prior: bool = Field(default=True, description="the size/price/width prior (off: flat)")
    max_candidates: int = Field(default=20_000, ge=10,
                                description="distinct graphs considered at most")
    feedback_step: float = Field(default=1.5, gt=0,
                                 description="largest prior move per update (strength 1), "
                                 f"in units of {FEEDBACK_UNIT} accuracy")
    initial_feedback: bool = Field(default=True,
                                   description="ask the feedback model for a prior first")
    history: int = Field(default=12, ge=1, description="recent graphs shown to the feedback")
    feedback: dict[str, Any] | None = Field(
        default=None, description="a model entry ({backend, model, ...}) for the feedback")
    feedback_temperature: float = Field(default=0.2, ge=0)
    feedback_max_tokens: int = Field(default=512, ge=16)
    feedback_timeout_s: float = Field(default=120.0, gt=0)


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


@dataclass
class Record:
    """One finished trial as the searcher saw it."""

    number: int
    config: dict[str, Any]
    state: str
    values: dict[str, float]
    questions: int = 0
    correct: int | None = None
    scored: int | None = None


class AgentReinforceSearcher(Searcher):
    name = "agent-reinforce"

    def __init__(self, space: Space, study: optuna.Study, objectives: list[str], *,
                 seed: int = 0, options: dict[str, Any] | None = None, batch: int = 4,
                 feedback_model: str | None = None,
                 base_models: dict[str, Any] | None = None, base_dir: Path | None = None,
                 feedback_backend: Backend | None = None,
                 policy: GraphPolicy | None = None) -> None:
        super().__init__(space, study, objectives, seed=seed, options=options)
        try:
            self.opts = AgentReinforceOptions.model_validate(self.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"]))
            raise TTSGraphError(f"searcher.options.{where}: {err['msg']}") from None
        self.batch = max(1, int(batch))
        self.base_models = dict(base_models or {})
        if policy is None:
            from .policy import PriorWeights

            flat = PriorWeights(size=(0.0, 0.12), width=(0.0, 0.12), depth=(0.0, 0.12),
                                size_width=(0.0, 0.06))
            policy = GraphPolicy(space, objectives, levels=self.opts.levels,
                                 models=self.base_models,
                                 max_candidates=self.opts.max_candidates,
                                 prompt_tokens=space.spec.constraints.prompt_tokens_estimate,
                                 seed=seed, misfit=self.opts.misfit,
                                 prior=None if self.opts.prior else flat)
        self.policy = policy
        if not policy.configs:  # a mistake in the search file: say so before any trial
            why = next(iter(policy.excluded.values()), "the space has no valid graph")
            raise TTSGraphError("agent-reinforce: no graph of the search space fits the "
                                f"constraints (for example: {why})")
        self.params = policy.params
        self.levels = policy.levels
        self.history: list[Record] = []
        self.pending: list[Record] = []
        self.updates = 0
        self.feedback_updates = 0
        self.numeric_updates = 0
        self.feedback_tokens = 0
        self.last_feedback_error: str | None = None
        self.feedback_name: str | None = None
        self.feedback_backend: Backend | None = feedback_backend
        self._loop: _LoopThread | None = None
        self._fitted_at = -1
        if feedback_backend is not None:
            self.feedback_name = feedback_backend.info.identity
        else:
            self._make_feedback_backend(feedback_model, base_dir)
        self._restore()

    # ------------------------------------------------------------------------- π

    def _rng(self, salt: int = 0) -> np.random.Generator:
        """Seeded by the seed and how much the searcher has seen, so a search (and a resumed
        one) draws the same graphs for the same history."""
        return np.random.default_rng([self.seed, len(self.history), self.updates, salt])

    def _observations(self) -> list[Observation]:
        out = []
        for r in self.history:
            if r.state not in ("complete", "pruned") or "accuracy" not in r.values:
                continue
            key = self.space.key(r.config)
            n = r.scored if r.scored else max(1, r.questions)
            acc = float(r.values["accuracy"])
            p = (acc * n + 1) / (n + 2)
            costs = {c: float(r.values[c]) for c in self.objectives[1:] if c in r.values}
            out.append(Observation(key, acc, p * (1 - p) / n, costs))
        return out

    def refresh(self) -> None:
        """The posterior given everything told so far (refitted when something new came)."""
        if self._fitted_at != len(self.history):
            self.policy.fit(self._observations())
            self._fitted_at = len(self.history)

    def probs(self, name: str) -> np.ndarray:
        """π's marginal over the levels of ``name``."""
        return np.array(self.theta_values()[name])

    def theta_values(self) -> dict[str, list[float]]:
        self.refresh()
        return self.policy.marginals(self._rng(salt=1))

    def theta(self) -> dict[str, dict[str, float]]:
        """π's marginals as {param: {level (as text): probability}}."""
        values = self.theta_values()
        return {n: {_text(lv): p for lv, p in zip(self.levels[n], values[n], strict=True)}
                for n in self.levels}

    # ----------------------------------------------------------------------- sample

    def _seen(self) -> set[str]:
        seen = set()
        for t in self.study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.WAITING:
                continue
            key = t.user_attrs.get("graph")
            seen.add(str(key) if key else self.space.key(t.params))
        return seen

    def _front(self) -> list[tuple[float, float]]:
        if len(self.objectives) != 2:
            return []
        cost = self.objectives[1]
        return [(float(r.values["accuracy"]), float(r.values[cost])) for r in self.history
                if r.state == "complete" and "accuracy" in r.values and cost in r.values]

    def ask(self) -> Proposal:
        if (self.feedback_backend is not None and self.opts.initial_feedback
                and not self.history and self.updates == 0):
            self.update([])  # the feedback model's prior knowledge, before any trial
        self.refresh()
        i = self.policy.choose(self._rng(), self._seen(), self._front(), self.opts.explore)
        if i is None:  # every feasible graph was tried: the best one again (a repeat)
            i = int(np.argmax(self.policy.predicted_rewards()))
            log.debug("agent-reinforce: every candidate graph was tried; re-proposing %s",
                      self.policy.configs[i])
        config = self.policy.configs[i]
        self.study.enqueue_trial(config, skip_if_exists=False)
        trial = self.study.ask()
        return Proposal(self.space.suggest(trial), trial)

    # ------------------------------------------------------------------------ tell

    def tell(self, proposal: Proposal, result: TrialResult) -> None:
        super().tell(proposal, result)
        if "repeat_of" in proposal.trial.user_attrs:
            return  # the driver told a repeat the earlier outcome: nothing new to learn
        s = result.summary
        rec = Record(proposal.number, dict(proposal.config), result.state, dict(result.values),
                     result.questions, s.correct if s else None, s.scored if s else None)
        self.history.append(rec)
        if result.state == "infeasible":
            self.policy.excluded.setdefault(self.space.key(rec.config), result.reason)
        self.pending.append(rec)
        if len(self.pending) >= self.batch:
            batch, self.pending = self.pending, []
            self.update(batch)

    def update(self, batch: list[Record]) -> str:
        """After a batch: the feedback model's textual gradient when there is one and it is
        valid, else the numeric (Bayesian) update alone. Returns the kind used."""
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
                return self._finish(info)
            except Exception as exc:  # invalid feedback of any kind: fall back, say why
                reason = f"{type(exc).__name__}: {_short(str(exc))}"
                self.last_feedback_error = reason
                log.warning("agent-reinforce: feedback from %s was invalid (%s); numeric "
                            "REINFORCE update used", self.feedback_name, reason)
        if self.feedback_backend is None:
            log.info("agent-reinforce: numeric REINFORCE update (%s)", reason)
        self.numeric_updates += 1
        info.update(kind="numeric", reason=reason)
        return self._finish(info)

    def _finish(self, info: dict[str, Any]) -> str:
        self.updates += 1
        self._fitted_at = -1  # the prior may have moved
        self.refresh()
        best = self.policy.configs[int(np.argmax(self.policy.predicted_rewards()))] \
            if self.policy.configs else {}
        info["modes"] = {n: _text(v) for n, v in self.space.normalize(best).items()}
        tag = f"{ATTR}.s{self.seed}"
        try:
            self.study.set_user_attr(f"{tag}.update.{self.updates:04d}", _jsonable(info))
            self.study.set_user_attr(f"{tag}.state", _jsonable({
                "features": len(self.policy.feature_names),
                "offsets": {k: round(float(v), 6) for k, v in zip(
                    self.policy.feature_names, self.policy.offsets, strict=True) if v},
                "updates": self.updates, "feedback_updates": self.feedback_updates,
                "numeric_updates": self.numeric_updates,
                "feedback_tokens": self.feedback_tokens,
                "last_feedback_error": self.last_feedback_error}))
        except Exception as exc:  # the history is a courtesy; never lose the search over it
            log.warning("agent-reinforce: could not store the update in the study: %s", exc)
        return str(info["kind"])

    def _restore(self) -> None:
        """Continue from the state stored by an earlier run of this searcher (same seed) on
        the study, and show it the study's finished trials."""
        state = self.study.user_attrs.get(f"{ATTR}.s{self.seed}.state")
        if isinstance(state, dict) and state.get("features") == len(self.policy.feature_names):
            index = {n: i for i, n in enumerate(self.policy.feature_names)}
            for name, value in (state.get("offsets") or {}).items():
                if name in index:
                    self.policy.offsets[index[name]] = float(value)
            for key in ("updates", "feedback_updates", "numeric_updates", "feedback_tokens"):
                setattr(self, key, int(state.get(key, 0)))
            self.last_feedback_error = state.get("last_feedback_error")
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=done):
            if "repeat_of" in t.user_attrs:
                continue
            scored, correct = t.user_attrs.get("scored"), t.user_attrs.get("correct")
            self.history.append(Record(
                t.number, dict(t.params), t.state.name.lower(), measured_values(t),
                int(t.user_attrs.get("questions", 0)),
                correct if isinstance(correct, int) else None,
                scored if isinstance(scored, int) else None))

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
        """The feedback request: the history table, the space with π's marginals, the
        models, the insights, and the reply's JSON shape."""
        goal = ", ".join(f"{o} ({'up' if DIRECTIONS[o] == 'maximize' else 'down'})"
                         for o in self.objectives)
        lines = ["You tune a test-time-scaling collaboration graph of LLMs for one task.",
                 f"Objectives: {goal}. Costs are per question.", "",
                 "Parameters, their allowed values, and how likely the search now is to pick "
                 "each (a field of a node that is switched off is not used):"]
        for n, probs in self.theta().items():
            lines.append(f"- {n}: " + ", ".join(f"{v}: {p:.2f}" for v, p in probs.items()))
        models = self._model_lines()
        if models:
            lines += ["", "Models of the base graph:", *models]
        shown = self.history[-self.opts.history:]
        if shown:
            lines += ["", f"Graphs tried (last {len(shown)} of {len(self.history)}) and "
                      "their scores on the search questions:"]
            for r in shown:
                lines.append(f"- trial {r.number}: " + ", ".join(
                    f"{k}={_text(v)}" for k, v in sorted(r.config.items())) + " -> "
                    + _scores(r, self.objectives))
        else:
            lines += ["", "No graph has been tried yet: say which values you expect to work "
                      "best for this task from what you know of these models."]
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
        """Move the prior mean of each named (parameter, level) by ± strength ×
        feedback_step × FEEDBACK_UNIT (in all at most twice that); the data overrules it as
        trials come in."""
        changes = []
        for u in fb.updates:
            sign = 1.0 if u.direction == "increase" else -1.0
            delta = sign * u.strength * self.opts.feedback_step * FEEDBACK_UNIT
            self.policy.move_prior(u.param, u.index, delta,
                                   limit=2 * self.opts.feedback_step * FEEDBACK_UNIT)
            changes.append({"param": u.param, "value": _text(self.levels[u.param][u.index]),
                            "prior_move": round(delta, 4)})
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

def _short(s: str, n: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _scores(r: Record, objectives: list[str]) -> str:
    if r.state == "infeasible":
        return "infeasible (over a constraint or not a valid graph)"
    if not r.values:
        return r.state
    n = r.scored or r.questions
    acc = r.values.get("accuracy", 0.0)
    parts = [f"accuracy {acc:.1%} on {n} questions"]
    if n:
        correct = r.correct if r.correct is not None else round(acc * n)
        lo, hi = wilson(correct, n)
        parts[0] += f" (95% CI {lo:.0%}-{hi:.0%})"
    for k in ("cost", "tokens", "flops"):
        if k in r.values and (k in objectives or k == "tokens"):
            parts.append(f"{k} {r.values[k]:.4g}/question")
    if "latency" in r.values and "latency" in objectives:
        parts.append(f"latency {r.values['latency']:.3g} s (median)")
    if r.state == "pruned":
        parts.append("(cut early: could not win)")
    return ", ".join(parts)


def _jsonable(x: Any) -> Any:
    import json

    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


__all__ = ["AgentReinforceSearcher", "Record", "parse_feedback"]
