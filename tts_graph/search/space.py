"""The search space: the choices of a search file as named parameters, and how a configuration
(parameter → value) turns the base graph into a concrete, validated graph.

Parameter names: ``NODE.enabled``, ``edge:FROM->TO``, ``NODE.FIELD``.
A node switched off is bypassed: its consumers read its inputs instead. A configuration whose
graph does not compile (say, a judge left with no input) is infeasible and never run.

The space is *conditional* (Optuna's define-by-run): a field of a node that is switched off is
not a parameter of that configuration, nor is an edge toggle whose ends are switched off
(``Param.requires``). ``Space.suggest`` asks a trial only for the active parameters and
``Space.normalize`` drops the others. A configuration's identity is its graph
(``Space.key``: ``compile.graph_identity`` of the compiled graph, names and descriptions
aside), so two configurations of one graph are one configuration to the driver's repeat rule,
the trial stores, the front, ``Space.size`` and ``Space.grid``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..backends.registry import backend_names
from ..compile import CompiledGraph, compile_graph, graph_identity, min_calls
from ..errors import GraphError, GraphErrors, TTSGraphError
from ..spec import AdaptiveSamples, parse_graph
from .spec import Constraints, EdgeToggle, FieldChoice, NodeToggle, SearchSpec

Kind = Literal["categorical", "int", "float"]
#: searchers that list every value of a range with a step
ENUMERATING = ("grid", "agent-reinforce")
log = logging.getLogger("tts_graph.search")

#: conditional configurations beyond which ``Space.grid`` and ``Space.size`` stop compiling
#: every one to find the distinct graphs (``size`` then reports the conditional count)
GRID_LIMIT = 100_000
#: values of one stepped range that ``grid`` and ``agent-reinforce`` may enumerate: a range
#: of 10^9 steps would be a list of 10^9 values before the first trial
MAX_LEVELS = 10_000


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    #: the node toggles (``NODE.enabled``) that must be on for this parameter to matter
    requires: tuple[str, ...] = ()

    @property
    def node(self) -> str | None:
        """The node a field or toggle belongs to (None for an edge)."""
        return None if self.name.startswith("edge:") else self.name.split(".", 1)[0]

    def count(self, n: int = 5) -> int:
        """``len(self.levels(n))``, without making the list."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int" and (self.step or (self.high - self.low) < n):
            return int((self.high - self.low) // int(self.step or 1)) + 1
        if self.kind == "float" and self.step:
            return round((self.high - self.low) / self.step) + 1
        return len(self.levels(n))

    def levels(self, n: int = 5) -> list[Any]:
        """A finite set of values (the categorical choices, or n levels of a range)."""
        if self.kind != "categorical" and self.step and self.count(n) > MAX_LEVELS:
            raise TTSGraphError(f"{self.name}: {self.count(n):,} values with step "
                                f"{self.step:g}: at most {MAX_LEVELS:,} can be enumerated")
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            if self.step or (self.high - self.low) < n:
                step = int(self.step or 1)
                return list(range(int(self.low), int(self.high) + 1, step))
            if self.log:
                vals = [round(math.exp(math.log(self.low) + i * (math.log(self.high)
                        - math.log(self.low)) / (n - 1))) for i in range(n)]
            else:
                vals = [round(self.low + i * (self.high - self.low) / (n - 1)) for i in range(n)]
            return sorted(set(vals))
        if self.step:
            k = round((self.high - self.low) / self.step)
            return [round(self.low + i * self.step, 10) for i in range(k + 1)]
        if self.log:
            return [math.exp(math.log(self.low) + i * (math.log(self.high) - math.log(self.low))
                             / (n - 1)) for i in range(n)]
        return [self.low + i * (self.high - self.low) / (n - 1) for i in range(n)]


class Infeasible(TTSGraphError):
    """A configuration that cannot be run (its graph is invalid, or over a constraint)."""


@dataclass
class Estimate:
    """A configuration's worst case per query (every call at max_tokens)."""

    tokens: float
    cost_usd: float
    flops: float
    calls: int


@dataclass(frozen=True)
class Census:
    """How many configurations a space has, counted three ways (ranges at ``levels``)."""

    configurations: int  # the product of every parameter's levels
    conditional: int  # without the settings of switched-off nodes (define-by-run)
    graphs: int  # distinct valid graphs (by ``Space.key``); -1 when not counted
    invalid: int  # conditional configurations whose graph does not compile


def suggest(trial: Any, p: Param) -> Any:
    """Ask an Optuna trial for ``p``'s value."""
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log,
                                 step=int(p.step or 1))
    return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)


class Space:
    def __init__(self, spec: SearchSpec, base: dict[str, Any], *, source: str = "<base>",
                 base_dir: Path | None = None) -> None:
        """Problems with the choices raise ``GraphError`` with the choice's path
        (``choices.2.node``); the caller adds the search file's name and line."""
        self.spec = spec
        self.base = base
        self.source = source
        self.base_dir = base_dir
        self.params: list[Param] = []
        nodes = base.get("nodes") or {}
        for i, ch in enumerate(spec.choices):
            where = f"choices.{i}"
            if isinstance(ch, NodeToggle):
                if ch.node not in nodes:
                    raise GraphError(_unknown_node(ch.node, nodes), path=f"{where}.node")
                if ch.node == base.get("output"):
                    raise GraphError("the output node cannot be switched off",
                                     path=f"{where}.node")
                self.params.append(Param(f"{ch.node}.enabled", "categorical",
                                         tuple(dict.fromkeys(ch.enabled))))
            elif isinstance(ch, EdgeToggle):
                src, dst = ch.edge
                if dst not in nodes or src not in (nodes[dst].get("inputs") or []):
                    raise GraphError(f"the base graph has no edge {src} -> {dst}",
                                     path=f"{where}.edge")
                self.params.append(Param(f"edge:{src}->{dst}", "categorical",
                                         tuple(dict.fromkeys(ch.enabled))))
            else:
                assert isinstance(ch, FieldChoice)
                if ch.node not in nodes:
                    raise GraphError(_unknown_node(ch.node, nodes), path=f"{where}.node")
                name = f"{ch.node}.{ch.field}"
                if ch.values is not None:
                    self.params.append(Param(name, "categorical", tuple(ch.values)))
                elif ch.int_range is not None:
                    self.params.append(Param(name, "int", low=ch.int_range[0],
                                             high=ch.int_range[1], log=ch.log, step=ch.step))
                else:
                    assert ch.float_range is not None
                    self.params.append(Param(name, "float", low=ch.float_range[0],
                                             high=ch.float_range[1], log=ch.log, step=ch.step))
        self.params = _with_conditions(self.params)
        self._keys: dict[str, str] = {}
        self._grids: dict[int, tuple[list[dict[str, Any]], Census]] = {}
        if spec.constraints.max_cost_usd_per_query is not None:
            # the worst case is priced from declared prices only: an unpriced model would
            # make the cap silently pass everything
            unpriced = sorted(n for n, m in (base.get("models") or {}).items()
                              if isinstance(m, dict) and m.get("price") is None)
            if unpriced:
                raise GraphError(
                    f"the base graph declares no price for {', '.join(unpriced)}; add price: "
                    "{input_per_mtok, output_per_mtok} (0 for a free model)",
                    path="constraints.max_cost_usd_per_query")
        names = [p.name for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GraphError(f"{', '.join(dupes)} chosen more than once", path="choices")
        for i, ch in enumerate(spec.choices):
            if isinstance(ch, FieldChoice):
                self._check_values(i, ch)
                count = ch.count()
                if spec.searcher.name in ENUMERATING and count and count > MAX_LEVELS:
                    raise GraphError(
                        f"{count:,} values with step {ch.step:g}: {spec.searcher.name} "
                        f"enumerates them, at most {MAX_LEVELS:,}; use a coarser step, or "
                        "no step (ranges are then taken at a few levels)", path=f"choices.{i}")

    def _check_values(self, i: int, ch: FieldChoice) -> None:
        """A misspelt field or a value the node refuses on its own (samples 0, an undeclared
        model) is a mistake in the search file, not an infeasible configuration."""
        param = next(p for p in self.params if p.name == f"{ch.node}.{ch.field}")
        values = param.levels(3) if param.kind == "categorical" else [param.low, param.high]
        if param.kind == "float" and param.high > param.low:
            # a value inside the range too: a float range on an int field (samples) passes
            # at whole ends and fails at every value between
            inside = (param.high - param.low) * 0.37  # not a third: [1, 4] has 2.0 there
            if param.step:
                inside = round(inside / param.step) * param.step
            values.append(param.low + inside)
        at = f"nodes.{ch.node}.{ch.field}"
        for value in values:
            g = copy.deepcopy(self.base)
            g["nodes"][ch.node][ch.field] = _plain(value)
            try:
                compile_graph(parse_graph(g, source=self.source), backends=backend_names())
            except GraphErrors as exc:
                for e in exc.errors:
                    if e.path == at or e.path.startswith(at + "."):
                        raise GraphError(f"{ch.field} = {value!r}: {e.message}",
                                         path=f"choices.{i}") from None
            except TTSGraphError:
                pass  # other problems of the graph show up when configurations compile

    # ------------------------------------------------------------------ conditions

    def active(self, config: dict[str, Any]) -> list[Param]:
        """The parameters that matter for ``config``: every toggle, and the fields and edges
        whose nodes ``config`` keeps (a toggle missing from ``config`` keeps its node)."""
        return [p for p in self.params if all(config.get(r, True) for r in p.requires)]

    def normalize(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` without the parameters it switches off (plain values)."""
        return {p.name: _plain(config[p.name]) for p in self.active(config) if p.name in config}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: ask ``trial`` for the toggles first, then only for the parameters
        the chosen toggles keep."""
        config: dict[str, Any] = {}
        for p in sorted(self.params, key=lambda p: bool(p.requires)):
            if all(config.get(r, True) for r in p.requires):
                config[p.name] = _plain(suggest(trial, p))
        return config

    def key(self, config: dict[str, Any]) -> str:
        """The configuration's identity: its compiled graph's (``graph_identity``); for a
        configuration whose graph does not compile, its active parameters'."""
        norm = self.normalize(config)
        text = json.dumps(norm, sort_keys=True, default=str)
        found = self._keys.get(text)
        if found is None:
            try:
                found = graph_identity(self.compile(norm))
            except Infeasible:
                found = "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:8]
            self._keys[text] = found
        return found

    # ------------------------------------------------------------------------ graphs

    def graph_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """The base graph with ``config`` applied (not yet validated)."""
        g = copy.deepcopy(self.base)
        nodes: dict[str, dict[str, Any]] = g["nodes"]
        for p in self.params:
            if p.name not in config:
                continue
            value = config[p.name]
            if p.name.startswith("edge:"):
                src, dst = p.name[5:].split("->")
                if not value and dst in nodes:
                    nodes[dst]["inputs"] = [x for x in nodes[dst].get("inputs", []) if x != src]
            elif p.name.endswith(".enabled"):
                continue  # after the fields, below
            else:
                node, field = p.name.split(".", 1)
                nodes[node][field] = _plain(value)
        for p in self.params:
            if p.name.endswith(".enabled") and not config.get(p.name, True):
                node = p.name[: -len(".enabled")]
                feeds = nodes[node].get("inputs", [])
                del nodes[node]
                for other in nodes.values():
                    ins = other.get("inputs") or []
                    if node in ins:
                        new: list[str] = []
                        for x in ins:
                            for y in (feeds if x == node else [x]):
                                if y not in new:
                                    new.append(y)
                        other["inputs"] = new
        g["name"] = f"{self.base.get('name', 'graph')}-{config_digest(self.normalize(config))}"
        return g

    def compile(self, config: dict[str, Any]) -> CompiledGraph:
        """The configuration's graph, compiled; ``Infeasible`` if it is not a valid graph."""
        try:
            doc = parse_graph(self.graph_dict(config), source=f"{self.source} [{config}]",
                              base_dir=self.base_dir)
            return compile_graph(doc, backends=backend_names())
        except GraphErrors as exc:
            raise Infeasible(f"invalid graph: {exc.errors[0].path}: {exc.errors[0].message}"
                             ) from None

    def estimate(self, graph: CompiledGraph, prompt_tokens: int) -> Estimate:
        """Worst case per query: every call of every step at its max_tokens."""
        spec = graph.spec
        tokens = cost = flops = 0.0
        calls = 0
        for step in graph.steps.values():
            if not step.models:
                continue
            node = step.spec
            samples = getattr(node, "samples", 1)
            n = samples.max if isinstance(samples, AdaptiveSamples) else int(samples or 1)
            k = max(1, min_calls(node)) if not hasattr(node, "samples") else n
            if hasattr(node, "agents"):
                k = node.agents
            if node.role in ("judge", "verifier", "critic", "ranker"):
                k = max(k, _max_candidates(graph, step.id))
            per_call = prompt_tokens + step.sampling.max_tokens
            calls += k
            for i in range(k):
                m = spec.models[step.models[i % len(step.models)]]
                tokens += per_call
                if m.price is not None:
                    cost += (prompt_tokens * m.price.input_per_mtok
                             + step.sampling.max_tokens * m.price.output_per_mtok) / 1e6
                if m.params:
                    flops += 2.0 * m.params * per_call
        return Estimate(tokens=tokens, cost_usd=cost, flops=flops, calls=calls)

    def check_constraints(self, est: Estimate, c: Constraints) -> None:
        if c.max_tokens_per_query is not None and est.tokens > c.max_tokens_per_query:
            raise Infeasible(f"worst case {est.tokens:.0f} tokens/query > "
                             f"{c.max_tokens_per_query}")
        if c.max_cost_usd_per_query is not None and est.cost_usd > c.max_cost_usd_per_query:
            raise Infeasible(f"worst case ${est.cost_usd:.6f}/query > "
                             f"${c.max_cost_usd_per_query}")
        if c.max_flops_per_query is not None and est.flops > c.max_flops_per_query:
            raise Infeasible(f"worst case {est.flops:.3g} FLOPs/query > "
                             f"{c.max_flops_per_query:.3g}")

    def unfit(self, limit: int = 2_000) -> tuple[str, str] | None:
        """When no configuration can run (none is a valid graph, or none fits the
        constraints): the search file's path to blame and an example why. None when one can
        run, or more than ``limit`` configurations would have to be tried to be sure."""
        why: dict[str, str] = {}
        for n, config in enumerate(self.conditional()):
            if n >= limit:
                return None
            try:
                graph = self.compile(config)
            except Infeasible as exc:
                why.setdefault("choices", str(exc))
                continue
            try:
                self.check_constraints(self.estimate(
                    graph, self.spec.constraints.prompt_tokens_estimate), self.spec.constraints)
            except Infeasible as exc:
                why.setdefault("constraints", str(exc))
                continue
            return None
        if "constraints" in why:
            return "constraints", ("no graph of the search space fits the constraints (for "
                                   f"example: {why['constraints']})")
        return "choices", ("no configuration of the search space is a valid graph (for "
                           f"example: {why['choices']})")

    def conditional(self, levels: int = 5) -> Iterator[dict[str, Any]]:
        """Every configuration over the parameters' levels (ranges discretized), each
        holding only its active parameters."""
        free = [p for p in self.params if not p.requires]
        bound = [p for p in self.params if p.requires]
        for combo in itertools.product(*(p.levels(levels) for p in free)):
            head = dict(zip((p.name for p in free), combo, strict=True))
            act = [p for p in bound if all(head.get(r, True) for r in p.requires)]
            for rest in itertools.product(*(p.levels(levels) for p in act)):
                yield {**head, **dict(zip((p.name for p in act), rest, strict=True))}

    def _grid(self, levels: int) -> tuple[list[dict[str, Any]], Census]:
        if levels in self._grids:
            return self._grids[levels]
        total = math.prod(p.count(levels) for p in self.params)
        configs = list(itertools.islice(self.conditional(levels), GRID_LIMIT + 1))
        if len(configs) > GRID_LIMIT:
            log.warning("search space: over %d configurations; distinct graphs not counted",
                        GRID_LIMIT)
            result = (configs, Census(total, self._count_conditional(levels), -1, 0))
        else:
            seen: dict[str, dict[str, Any]] = {}
            invalid = 0
            for c in configs:
                k = self.key(c)
                if k.startswith("invalid-"):
                    invalid += 1
                else:
                    seen.setdefault(k, c)
            result = (list(seen.values()), Census(total, len(configs), len(seen), invalid))
        self._grids[levels] = result
        return result

    def _count_conditional(self, levels: int) -> int:
        """How many configurations ``conditional`` yields, counted per setting of the node
        toggles rather than one by one (10^9 configurations took hours to count)."""
        toggles = [p for p in self.params if p.name.endswith(".enabled")]
        rest = [p for p in self.params if not p.name.endswith(".enabled")]
        if math.prod(p.count(levels) for p in toggles) > GRID_LIMIT:
            return math.prod(p.count(levels) for p in self.params)  # an upper bound
        total = 0
        for combo in itertools.product(*(p.levels(levels) for p in toggles)):
            on = dict(zip((p.name for p in toggles), combo, strict=True))
            total += math.prod(p.count(levels) for p in rest
                               if all(on.get(r, True) for r in p.requires))
        return total

    def grid(self, levels: int = 5) -> list[dict[str, Any]]:
        """One configuration per distinct valid graph, in enumeration order (each holding its
        active parameters only). Over ``GRID_LIMIT`` conditional configurations, the
        conditional configurations themselves."""
        return list(self._grid(levels)[0])

    def census(self, levels: int = 5) -> Census:
        return self._grid(levels)[1]

    def size(self, levels: int = 5) -> int:
        """Distinct valid graphs (the conditional count over ``GRID_LIMIT``)."""
        c = self.census(levels)
        return c.graphs if c.graphs >= 0 else c.conditional


def _with_conditions(params: list[Param]) -> list[Param]:
    """Each field and edge toggle requires the toggles of its node(s), where they have one."""
    toggles = {p.name for p in params if p.name.endswith(".enabled")}
    out = []
    for p in params:
        if p.name in toggles:
            out.append(p)
            continue
        ends = p.name[5:].split("->") if p.name.startswith("edge:") else [p.node or ""]
        requires = tuple(f"{n}.enabled" for n in ends if f"{n}.enabled" in toggles)
        out.append(Param(p.name, p.kind, p.choices, p.low, p.high, p.log, p.step, requires))
    return out


def _unknown_node(node: str, nodes: dict[str, Any]) -> str:
    return f"unknown node '{node}'; the base graph has {', '.join(nodes) or 'none'}"


def _max_candidates(graph: CompiledGraph, step_id: str) -> int:
    """Upper bound of the candidates a step can see (sum of its answer inputs' widths)."""
    total = 0
    for dep in graph.steps[step_id].deps:
        node = graph.steps[dep].spec
        samples = getattr(node, "samples", 1)
        n = samples.max if isinstance(samples, AdaptiveSamples) else int(samples or 1)
        total += getattr(node, "agents", None) or n
    return max(1, total)


def _plain(value: Any) -> Any:
    """Optuna hands numpy scalars and tuples back; graphs want plain YAML values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def config_digest(config: dict[str, Any]) -> str:
    blob = json.dumps({k: _plain(v) for k, v in sorted(config.items())}, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
