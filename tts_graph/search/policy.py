"""The probabilistic graph of ``agent-reinforce``: a distribution over the *distinct graphs*
of a search space that can express interactions, with a prior from the models' declared
sizes and prices, and a Bayesian update from every trial's score.

Candidates
    Every distinct valid graph of the space (``Space.grid``: one configuration per graph,
    ranges at ``levels`` levels) whose worst case fits the search's constraints — a graph over
    a cap is never proposed. Over ``max_candidates`` graphs, a seeded random sample of them.

Features φ(g)
    an intercept; one indicator per (parameter, level) that ``g`` uses (a switched-off node's
    fields use none); a *trend* per ranged parameter (its level's position, on a log scale for
    widths) and a *size* per model parameter (the declared parameter count, or else the price,
    on a log scale, 0 = the smallest model of the choice, 1 = the largest); and interactions
    between the parameters of one node and of nodes joined by an edge in the base graph: the
    indicator pairs (a node's model *and* its width; a fuser's model *given* the solvers') and
    the products of their trends and sizes.

Reward model
    r(g) = φ(g)·w + noise, w ~ N(w₀, Λ). The prior mean w₀ is where the models' sizes and
    prices come in: bigger models answer better (``size`` +0.10 over the range), wider
    sampling helps a little (+0.04) and helps bigger models more than small ones, whose errors
    agree (+0.03 on size × width). Λ lets the data overrule all of it within a few trials.
    A trial's noise is binomial — accuracy(1 − accuracy)/questions plus a misfit floor — so a
    pruned trial's partial score counts, with the weight its few questions deserve.
    Textual feedback (``FeedbackUpdate``) moves w₀ for the named (parameter, level).

Policy
    π(g) = P(g is the best graph under the posterior of w). Sampling from it is Thompson
    sampling: draw w̃ from the posterior, take the best unseen candidate under w̃. With cost
    objectives, the cost of each candidate is predicted from its worst-case estimate
    (``Space.estimate``) corrected by a regression on the measured costs; with one cost
    objective the candidate with the largest hypervolume improvement under w̃ is taken,
    with more, a randomly weighted sum.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spec import ModelSpec
from .feedback import match_level
from .space import Estimate, Infeasible, Param, Space

WIDTH_FIELDS = ("samples", "agents", "k")
DEPTH_FIELDS = ("rounds",)
LOG_TREND_FIELDS = (*WIDTH_FIELDS, *DEPTH_FIELDS, "max_tokens", "top_k")


@dataclass
class PriorWeights:
    """Prior means (w₀) and standard deviations (√Λ) of the feature groups, in reward units
    (accuracy)."""

    intercept: tuple[float, float] = (0.5, 0.3)
    level: tuple[float, float] = (0.0, 0.08)
    trend: tuple[float, float] = (0.0, 0.12)
    size: tuple[float, float] = (0.10, 0.12)
    width: tuple[float, float] = (0.04, 0.12)
    depth: tuple[float, float] = (0.02, 0.12)
    pair: tuple[float, float] = (0.0, 0.04)
    product: tuple[float, float] = (0.0, 0.06)
    size_width: tuple[float, float] = (0.03, 0.06)


@dataclass
class Observation:
    key: str
    reward: float
    noise_var: float
    costs: dict[str, float] = field(default_factory=dict)


class GraphPolicy:
    """Candidates, features, prior and posterior over one search space (see the module)."""

    def __init__(self, space: Space, objectives: list[str], *, levels: int = 5,
                 models: dict[str, Any] | None = None, max_candidates: int = 20_000,
                 prompt_tokens: int = 256, seed: int = 0, misfit: float = 0.02,
                 prior: PriorWeights | None = None) -> None:
        self.space = space
        self.objectives = objectives
        self.costs = objectives[1:]
        self.misfit = misfit
        self.prior = prior or PriorWeights()
        self.params: dict[str, Param] = {p.name: p for p in space.params}
        self.levels: dict[str, list[Any]] = {p.name: p.levels(levels) for p in space.params}
        self._sizes = _model_sizes(self.params, self.levels, models or {})
        self.configs: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.estimates: list[Estimate] = []
        self.excluded: dict[str, str] = {}  # graph -> why it is never proposed
        configs = space.grid(levels)
        if len(configs) > max_candidates:
            pick = np.random.default_rng(seed).choice(len(configs), max_candidates,
                                                      replace=False)
            configs = [configs[int(i)] for i in sorted(pick)]
        for config in configs:
            key = space.key(config)
            try:
                graph = space.compile(config)
                est = space.estimate(graph, prompt_tokens)
                space.check_constraints(est, space.spec.constraints)
            except Infeasible as exc:
                self.excluded[key] = str(exc)
                continue
            self.configs.append(config)
            self.keys.append(key)
            self.estimates.append(est)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self._build_features()
        self.X = np.array([self.features(c) for c in self.configs]).reshape(
            len(self.configs), self.dim)
        self.offsets = np.zeros(self.dim)  # feedback's moves of w₀
        self.mean = self.w0.copy()
        self.chol: np.ndarray | None = None  # of the posterior precision
        self.cost_models: dict[str, tuple[np.ndarray, float]] = {}

    # ------------------------------------------------------------------- features

    def _build_features(self) -> None:
        names: list[str] = ["intercept"]
        w0: list[float] = [self.prior.intercept[0]]
        sd: list[float] = [self.prior.intercept[1]]
        self._onehot: dict[tuple[str, int], int] = {}
        self._numeric: dict[str, int] = {}
        numeric_kind: dict[str, str] = {}
        for n, lv in self.levels.items():
            for i in range(len(lv)):
                self._onehot[(n, i)] = len(names)
                names.append(f"{n}={level_text(lv[i])}")
                w0.append(self.prior.level[0])
                sd.append(self.prior.level[1])
            kind = self._numeric_kind(n)
            if kind is not None:
                numeric_kind[n] = kind
                self._numeric[n] = len(names)
                names.append(f"{n}:{'size' if kind == 'size' else 'trend'}")
                mean, dev = getattr(self.prior, kind)
                w0.append(mean)
                sd.append(dev)
        self._pairs: list[tuple[str, str, int]] = []  # (p, q, first feature index)
        self._products: list[tuple[str, str, int]] = []
        for p, q in itertools.combinations(self.levels, 2):
            if not self._related(p, q):
                continue
            self._pairs.append((p, q, len(names)))
            for i, j in itertools.product(range(len(self.levels[p])),
                                          range(len(self.levels[q]))):
                a, b = level_text(self.levels[p][i]), level_text(self.levels[q][j])
                names.append(f"{p}={a} & {q}={b}")
                w0.append(self.prior.pair[0])
                sd.append(self.prior.pair[1])
            if p in numeric_kind and q in numeric_kind:
                self._products.append((p, q, len(names)))
                kinds = {numeric_kind[p], numeric_kind[q]}
                same_node = self.params[p].node == self.params[q].node
                mean, dev = (self.prior.size_width if kinds == {"size", "width"} and same_node
                             else self.prior.product)
                names.append(f"{p} × {q}")
                w0.append(mean)
                sd.append(dev)
        self.feature_names = names
        self.dim = len(names)
        self.w0 = np.array(w0)
        self.prior_var = np.array(sd) ** 2

    def _numeric_kind(self, name: str) -> str | None:
        p = self.params[name]
        if name.endswith(".model") and name in self._sizes:
            return "size"
        if p.name.endswith(".enabled") or p.name.startswith("edge:"):
            return None
        values = self.levels[name]
        if len(values) < 2 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                      for v in values):
            return None
        field_name = name.rsplit(".", 1)[-1]
        if field_name in WIDTH_FIELDS:
            return "width"
        if field_name in DEPTH_FIELDS:
            return "depth"
        return "trend"

    def _related(self, p: str, q: str) -> bool:
        """Parameters of one node, or of two nodes joined by an edge of the base graph (a
        node's toggle and its own fields are not: the fields exist only when it is on)."""
        a, b = self.params[p].node, self.params[q].node
        if a is None or b is None:
            return False
        if a == b:
            return not (p.endswith(".enabled") or q.endswith(".enabled"))
        nodes = self.space.base.get("nodes") or {}
        ins_a = (nodes.get(a) or {}).get("inputs") or []
        ins_b = (nodes.get(b) or {}).get("inputs") or []
        return a in ins_b or b in ins_a

    def _position(self, name: str, value: Any) -> float:
        """A level's place in [0, 1]: log scale for widths, depths and token limits."""
        values = [float(v) for v in self.levels[name]]
        x = float(value)
        lo, hi = min(values), max(values)
        if name.rsplit(".", 1)[-1] in LOG_TREND_FIELDS and lo > 0:
            lo, hi, x = math.log(lo), math.log(hi), math.log(max(x, 1e-12))
        return 0.0 if hi == lo else (x - lo) / (hi - lo)

    def _numeric_value(self, name: str, value: Any) -> float:
        if name in self._sizes:
            return self._sizes[name].get(str(value), 0.5)
        return self._position(name, value)

    def features(self, config: dict[str, Any]) -> np.ndarray:
        x = np.zeros(self.dim)
        x[0] = 1.0
        idx: dict[str, int] = {}
        num: dict[str, float] = {}
        for n, value in self.space.normalize(config).items():
            i = match_level(self.params[n], self.levels[n], value)
            if i is None:
                continue
            idx[n] = i
            x[self._onehot[(n, i)]] = 1.0
            if n in self._numeric:
                num[n] = self._numeric_value(n, self.levels[n][i])
                x[self._numeric[n]] = num[n]
        for p, q, start in self._pairs:
            if p in idx and q in idx:
                x[start + idx[p] * len(self.levels[q]) + idx[q]] = 1.0
        for p, q, at in self._products:
            if p in num and q in num:
                x[at] = num[p] * num[q]
        return x

    # -------------------------------------------------------------------- posterior

    def fit(self, observations: list[Observation]) -> None:
        """The posterior of w given the observations (and the cost models)."""
        mean0 = self.w0 + self.offsets
        prec0 = 1.0 / self.prior_var
        rows = [(self.index[o.key], o) for o in observations if o.key in self.index]
        if rows:
            X = self.X[[i for i, _ in rows]]
            y = np.array([o.reward for _, o in rows])
            wts = 1.0 / np.array([o.noise_var + self.misfit ** 2 for _, o in rows])
            A = (X * wts[:, None]).T @ X + np.diag(prec0)
            b = X.T @ (wts * y) + prec0 * mean0
        else:
            A = np.diag(prec0)
            b = prec0 * mean0
        self.chol = np.linalg.cholesky(A)
        self.mean = _chol_solve(self.chol, b)
        self.cost_models = {c: self._fit_cost(c, [o for _, o in rows if c in o.costs])
                            for c in self.costs}

    def _cost_base(self, objective: str) -> np.ndarray:
        """log of each candidate's worst-case estimate of ``objective`` (latency: tokens)."""
        attr = {"cost": "cost_usd", "tokens": "tokens", "flops": "flops"}.get(objective,
                                                                            "tokens")
        est = np.array([float(getattr(e, attr)) for e in self.estimates])
        floor = max(float(est.max(initial=0.0)) * 1e-4, 1e-12)
        return np.log(est + floor)

    def _fit_cost(self, objective: str, obs: list[Observation]) -> tuple[np.ndarray, float]:
        """log(measured) = log(worst case) + φ·v, v ~ N(0, 0.3²) (intercept N(0, 3²)): the
        weights, and the floor added to measured values before the log."""
        base = self._cost_base(objective)
        prec = np.full(self.dim, 1 / 0.3 ** 2)
        prec[0] = 1 / 3.0 ** 2
        floor = float(np.exp(base.max(initial=0.0))) * 1e-4 if len(base) else 1e-12
        if not obs:
            return np.zeros(self.dim), floor
        idx = [self.index[o.key] for o in obs]
        X = self.X[idx]
        y = np.log(np.array([o.costs[objective] for o in obs]) + floor) - base[idx]
        A = X.T @ X / 0.1 ** 2 + np.diag(prec)
        v = np.linalg.solve(A, X.T @ y / 0.1 ** 2)
        return v, floor

    def predicted_costs(self) -> dict[str, np.ndarray]:
        out = {}
        for c in self.costs:
            v, floor = self.cost_models.get(c, (np.zeros(self.dim), 0.0))
            out[c] = np.maximum(np.exp(self._cost_base(c) + self.X @ v) - floor, 0.0)
        return out

    def draw_weights(self, rng: np.random.Generator, explore: float = 1.0) -> np.ndarray:
        """One draw of w from the posterior (Thompson sampling)."""
        if self.chol is None:
            self.fit([])
        assert self.chol is not None
        z = rng.standard_normal(self.dim)
        # A = L Lᵀ; L⁻ᵀ z has covariance A⁻¹
        return self.mean + explore * np.linalg.solve(self.chol.T, z)

    def predicted_rewards(self, w: np.ndarray | None = None) -> np.ndarray:
        return self.X @ (self.mean if w is None else w)

    # ---------------------------------------------------------------------- choice

    def choose(self, rng: np.random.Generator, seen: set[str], front: list[tuple[float, ...]],
               explore: float = 1.0) -> int | None:
        """The candidate Thompson sampling picks among the unseen ones (None: none left)."""
        open_ = np.array([k not in seen for k in self.keys], dtype=bool)
        if not open_.any():
            return None
        acc = self.predicted_rewards(self.draw_weights(rng, explore))
        if not self.costs:
            score = acc
        else:
            costs = self.predicted_costs()
            if len(self.costs) == 1:
                c = costs[self.costs[0]]
                ref = float(c.max(initial=0.0)) * 1.1 + 1e-12
                score = hypervolume_improvement(acc, c, [(a, x) for a, x in front], ref)
                if not (score[open_] > 1e-12).any():  # nothing improves the front under w̃
                    score = acc - rng.uniform(0.0, 1.0) * c / ref
            else:
                lam = rng.dirichlet(np.ones(len(self.costs)))
                score = acc - sum(lam[i] * costs[c] / (float(costs[c].max(initial=0.0))
                                                       + 1e-12)
                                  for i, c in enumerate(self.costs))
        score = np.where(open_, score, -np.inf)
        return int(np.argmax(score))

    def marginals(self, rng: np.random.Generator, draws: int = 32) -> dict[str, list[float]]:
        """π's marginal over each parameter's levels: the share of posterior draws whose best
        candidate uses each level (a switched-off node's fields count under no level)."""
        counts = {n: np.zeros(len(lv)) for n, lv in self.levels.items()}
        if not self.configs:
            return {n: [0.0] * len(c) for n, c in counts.items()}
        for _ in range(draws):
            best = self.configs[int(np.argmax(self.predicted_rewards(self.draw_weights(rng))))]
            for n, value in self.space.normalize(best).items():
                i = match_level(self.params[n], self.levels[n], value)
                if i is not None:
                    counts[n][i] += 1
        return {n: [round(float(x) / draws, 4) for x in c] for n, c in counts.items()}

    def move_prior(self, name: str, level: int, delta: float, limit: float) -> None:
        """Feedback: make ``level`` of ``name`` more (delta > 0) or less likely; the moves of
        one level add up to at most ``limit`` either way, so repeated advice cannot outweigh
        what the trials measure."""
        i = self._onehot[(name, level)]
        self.offsets[i] = float(np.clip(self.offsets[i] + delta, -limit, limit))


def hypervolume_improvement(acc: np.ndarray, cost: np.ndarray,
                            front: list[tuple[float, float]], ref_cost: float) -> np.ndarray:
    """For each candidate (acc[i], cost[i]): the area (accuracy up, cost down, reference
    point accuracy 0 and ``ref_cost``) it dominates that the points of ``front`` do not."""
    pts = sorted((c, a) for a, c in front if c < ref_cost)
    # F(x): the best accuracy of a point costing <= x; steps at the points' costs
    xs, best, level = [], [], 0.0
    for c, a in pts:
        if a > level:
            level = a
            xs.append(c)
            best.append(level)
    edges = np.array([*xs, ref_cost])
    lows = np.array([0.0, *best])  # F on [-inf, xs[0]), [xs[0], xs[1]), ...
    starts = np.array([-np.inf, *xs])
    ends = edges
    a = np.maximum(acc, 0.0)[:, None]
    c = np.minimum(cost, ref_cost)[:, None]
    width = np.clip(ends[None, :] - np.maximum(starts[None, :], c), 0.0, None)
    return (np.clip(a - lows[None, :], 0.0, None) * width).sum(axis=1)


def _chol_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.solve(L.T, np.linalg.solve(L, b))


def _model_sizes(params: dict[str, Param], levels: dict[str, list[Any]],
                 models: dict[str, Any]) -> dict[str, dict[str, float]]:
    """For each ``NODE.model`` choice: each model's place in [0, 1] among the choice's models,
    by declared parameters (log), else by declared price (log); none when neither is
    declared for all of them."""
    out: dict[str, dict[str, float]] = {}
    for name, lv in levels.items():
        if not name.endswith(".model") or params[name].kind != "categorical":
            continue
        specs = {}
        for v in lv:
            try:
                specs[str(v)] = ModelSpec.model_validate(models.get(str(v)))
            except Exception:
                specs = {}
                break
        if len(specs) < 2:
            continue
        by: dict[str, float] = {}
        if all(s.params for s in specs.values()):
            by = {k: math.log(float(s.params or 1.0)) for k, s in specs.items()}
        elif all(s.price is not None for s in specs.values()):
            by = {k: math.log(1e-9 + (s.price.input_per_mtok + s.price.output_per_mtok))
                  for k, s in specs.items() if s.price is not None}
        if not by:
            continue
        lo, hi = min(by.values()), max(by.values())
        out[name] = {k: (v - lo) / (hi - lo) if hi > lo else 0.5 for k, v in by.items()}
    return out


def level_text(v: Any) -> str:
    """A level as the prompt and the feature names show it."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float):
        return f"{v:.4g}"
    return "true" if v is True else "false" if v is False else str(v)
