"""The search space: the choices of a search file as named parameters, and how a configuration
(parameter → value) turns the base graph into a concrete, validated graph.

Parameter names: ``NODE.enabled``, ``edge:FROM->TO``, ``NODE.FIELD``.
A node switched off is bypassed: its consumers read its inputs instead. A configuration whose
graph does not compile (say, a judge left with no input) is infeasible and never run.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..backends.registry import backend_names
from ..compile import CompiledGraph, compile_graph, min_calls
from ..errors import GraphError, GraphErrors, TTSGraphError
from ..spec import AdaptiveSamples, parse_graph
from .spec import Constraints, EdgeToggle, FieldChoice, NodeToggle, SearchSpec

Kind = Literal["categorical", "int", "float"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def levels(self, n: int = 5) -> list[Any]:
        """A finite set of values (the categorical choices, or n levels of a range)."""
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
        if spec.constraints.max_cost_usd_per_query is not None:
            # the worst case is priced from declared prices only: an unpriced model would
            # make the cap silently pass everything
            unpriced = sorted(n for n, m in (base.get("models") or {}).items()
                              if isinstance(m, dict) and m.get("price") is None)
            if unpriced:
                raise TTSGraphError(
                    "constraints.max_cost_usd_per_query: the base graph declares no price for "
                    f"{', '.join(unpriced)}; add price: {{input_per_mtok, output_per_mtok}} "
                    "(0 for a free model)")
        names = [p.name for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GraphError(f"{', '.join(dupes)} chosen more than once", path="choices")
        for i, ch in enumerate(spec.choices):
            if isinstance(ch, FieldChoice):
                self._check_values(i, ch)

    def _check_values(self, i: int, ch: FieldChoice) -> None:
        """A misspelt field or a value the node refuses on its own (samples 0, an undeclared
        model) is a mistake in the search file, not an infeasible configuration."""
        param = next(p for p in self.params if p.name == f"{ch.node}.{ch.field}")
        values = param.levels(3) if param.kind == "categorical" else [param.low, param.high]
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
        g["name"] = f"{self.base.get('name', 'graph')}-{config_digest(config)}"
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

    def grid(self, levels: int = 5) -> list[dict[str, Any]]:
        """Every configuration over the parameters' levels (ranges discretized)."""
        axes = [p.levels(levels) for p in self.params]
        return [dict(zip((p.name for p in self.params), combo, strict=True))
                for combo in itertools.product(*axes)]

    def size(self, levels: int = 5) -> int:
        return math.prod(len(p.levels(levels)) for p in self.params)


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
    import hashlib
    import json

    blob = json.dumps({k: _plain(v) for k, v in sorted(config.items())}, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
