"""Compile a validated graph into a DAG of concrete steps (networkx).

Composite roles (debate rounds, refine rounds) are unrolled here, so the executor only ever
runs a DAG. Checks: roles and models exist, inputs exist, no cycles, every node leads to the
output, prompt templates use known placeholders, budgets can cover the graph.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import BaseModel, ValidationError

from .errors import GraphError, GraphErrors
from .prompts import TemplateError, check_template
from .roles.base import Role
from .roles.registry import get_role
from .spec import (
    AdaptiveSamples,
    BaseNode,
    CustomNode,
    DebateNode,
    FirstFinishNode,
    FuserNode,
    GraphDoc,
    RefinerNode,
    SolverNode,
    _message,
)
from .yamlpos import Loc

BUILTIN_BACKENDS = ("local", "litellm", "vllm", "sim")
FALLBACK_SAMPLING = {"max_tokens": 256, "temperature": 0.7, "top_p": 1.0, "seed": 0}
#: roles whose steps read answer candidates from their inputs
CONSUMERS = {"critic", "refiner", "judge", "verifier", "ranker", "fuser", "vote"}


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = ()


@dataclass
class Step:
    """One concrete step of the compiled DAG."""

    id: str
    node: str
    role: Role
    spec: BaseNode
    phase: str
    round: int
    deps: tuple[str, ...]
    models: tuple[str, ...]
    sampling: Sampling
    extract: str
    params: BaseModel | None = None

    @property
    def calls_model(self) -> bool:
        return bool(self.models)


@dataclass
class CompiledGraph:
    doc: GraphDoc
    dag: nx.DiGraph
    steps: dict[str, Step]
    order: list[str]
    output: str
    node_dag: nx.DiGraph = field(default_factory=nx.DiGraph)

    @property
    def spec(self) -> Any:
        return self.doc.spec

    @property
    def name(self) -> str:
        return str(self.doc.spec.name)

    def used_models(self) -> list[str]:
        seen: dict[str, None] = {}
        for step in self.steps.values():
            for m in step.models:
                seen.setdefault(m)
        return list(seen)


def _loc(*parts: str | int) -> Loc:
    return tuple(parts)


def _suggest(name: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def min_calls(node: BaseNode) -> int:
    """Fewest model calls a node can make when it runs (for the budget feasibility check)."""
    if isinstance(node, SolverNode):
        return node.samples.min if isinstance(node.samples, AdaptiveSamples) else node.samples
    if isinstance(node, FirstFinishNode):
        return node.k
    if isinstance(node, DebateNode):
        return node.agents
    if isinstance(node, RefinerNode):
        return 2
    if isinstance(node, FuserNode):
        return node.samples
    return 1 if node.calls_model else 0


def compile_graph(doc: GraphDoc, *, backends: Collection[str] | None = None) -> CompiledGraph:
    """Turn a validated graph into a ``CompiledGraph``; raise ``GraphErrors`` on any problem."""
    spec = doc.spec
    errors: list[GraphError] = []
    known_backends = set(backends or BUILTIN_BACKENDS)

    for mname, mspec in spec.models.items():
        if mspec.backend not in known_backends:
            errors.append(doc.error(
                _loc("models", mname, "backend"),
                f"unknown backend '{mspec.backend}'{_suggest(mspec.backend, known_backends)}; "
                f"known: {', '.join(sorted(known_backends))}",
            ))
    if spec.defaults.model is not None and spec.defaults.model not in spec.models:
        errors.append(doc.error(_loc("defaults", "model"),
                                _unknown_model(spec.defaults.model, spec.models)))

    roles: dict[str, Role] = {}
    node_models: dict[str, list[str]] = {}
    params: dict[str, BaseModel | None] = {}
    for name, node in spec.nodes.items():
        role = get_role(node.role)
        roles[name] = role
        params[name] = None
        if isinstance(node, CustomNode) and role.params_model is not None:
            try:
                params[name] = role.params_model.model_validate(node.params)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = _loc("nodes", name, "params", *err["loc"])
                    errors.append(doc.error(loc, _message(dict(err))))
        models = role.node_models(node, spec.defaults.model)
        node_models[name] = models
        calls = role.calls_model and node.calls_model  # a node may opt out (sandbox)
        if calls and not models:
            errors.append(doc.error(_loc("nodes", name, "model"),
                                    "required (no model here and no defaults.model)"))
        for i, m in enumerate(models):
            if m in spec.models:
                continue
            where = _model_loc(node, name, m, i)
            if where == _loc("nodes", name) and m == spec.defaults.model:
                continue  # inherited from defaults.model, which is reported already
            errors.append(doc.error(where, _unknown_model(m, spec.models)))
        if not calls and getattr(node, "model", None):
            errors.append(doc.error(_loc("nodes", name, "model"),
                                    f"role '{node.role}' makes no model call"))
        for i, inp in enumerate(node.inputs):
            if inp == name:
                errors.append(doc.error(_loc("nodes", name, "inputs", i),
                                        "a node cannot be its own input"))
            elif inp not in spec.nodes:
                errors.append(doc.error(_loc("nodes", name, "inputs", i),
                                        f"unknown node '{inp}'{_suggest(inp, spec.nodes)}"))
        if node.role == "unit_test_evaluator" and not any(
                spec.nodes[i].role == "unit_test_generator" for i in node.inputs
                if i in spec.nodes):
            errors.append(doc.error(_loc("nodes", name, "inputs"), "needs a "
                                    "unit_test_generator among its inputs (the tests)"))
        if len(set(node.inputs)) != len(node.inputs):
            errors.append(doc.error(_loc("nodes", name, "inputs"), "lists a node twice"))
        if node.prompts is not None:
            allowed = role.override_placeholders(node)
            for field_name in ("system", "user"):
                text = getattr(node.prompts, field_name)
                if text is None:
                    continue
                try:
                    check_template(text, allowed)
                except TemplateError as exc:
                    errors.append(doc.error(_loc("nodes", name, "prompts", field_name), str(exc)))

    if spec.output not in spec.nodes:
        errors.append(doc.error(_loc("output"),
                                f"unknown node '{spec.output}'{_suggest(spec.output, spec.nodes)}"))
    if errors:
        raise GraphErrors(errors)

    node_dag = nx.DiGraph()
    node_dag.add_nodes_from(spec.nodes)
    for name, node in spec.nodes.items():
        for inp in node.inputs:
            node_dag.add_edge(inp, name)
    try:
        cycle = nx.find_cycle(node_dag)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([cycle[0][0], *(v for _, v in cycle)])
        first = min((v for _, v in cycle), key=lambda n: doc.lines.get(("nodes", n), 0))
        raise GraphErrors([doc.error(_loc("nodes", first, "inputs"), f"cycle: {path}")])

    needed = nx.ancestors(node_dag, spec.output) | {spec.output}
    for name in spec.nodes:
        if name not in needed:
            errors.append(doc.error(_loc("nodes", name),
                                    f"does not lead to the output '{spec.output}' "
                                    "(connect it or remove it)"))
    for name, node in spec.nodes.items():
        if node.role in CONSUMERS:
            feeds = [i for i in node.inputs if roles[i].output_kind == "answer"]
            if not feeds:
                errors.append(doc.error(
                    _loc("nodes", name, "inputs"),
                    f"role '{node.role}' needs at least one input that produces answers",
                ))
    budget = spec.budget
    if budget.max_tokens_per_query is not None:
        least = sum(min_calls(spec.nodes[n]) for n in needed)
        if least > budget.max_tokens_per_query:
            errors.append(doc.error(
                _loc("budget", "max_tokens_per_query"),
                f"{budget.max_tokens_per_query} cannot cover the graph: it makes at least "
                f"{least} calls of at least one token each",
            ))
    if errors:
        raise GraphErrors(errors)

    steps: dict[str, Step] = {}
    dag = nx.DiGraph()
    for name in nx.lexicographical_topological_sort(node_dag):
        node = spec.nodes[name]
        plans = roles[name].unroll(node)
        if not plans or plans[-1].suffix != "" or any(p.suffix == "" for p in plans[:-1]):
            # the node's own step (named as the node) must be its last: the steps that read
            # the node, and the executor's output step, are its last step
            raise GraphErrors([doc.error(_loc("nodes", name), (
                f"role '{node.role}' unrolls the node into steps {[p.suffix for p in plans]}: "
                "the step with suffix '' (the node's own) must come last, once"))])
        prev: str | None = None
        for plan in plans:
            sid = name + plan.suffix
            if prev is None:
                deps: tuple[str, ...] = tuple(node.inputs)
            else:
                deps = (prev, *node.inputs) if plan.with_inputs else (prev,)
            steps[sid] = Step(
                id=sid, node=name, role=roles[name], spec=node, phase=plan.phase,
                round=plan.round, deps=deps, models=tuple(node_models[name]),
                sampling=_sampling(doc, node), extract=node.extract or spec.defaults.extract
                or "auto", params=params[name],
            )
            dag.add_node(sid)
            for d in deps:
                dag.add_edge(d, sid)
            prev = sid
    order = list(nx.lexicographical_topological_sort(dag))
    return CompiledGraph(doc=doc, dag=dag, steps=steps, order=order, output=spec.output,
                         node_dag=node_dag)


def _model_loc(node: BaseNode, name: str, model: str, index: int) -> Loc:
    if isinstance(node, RefinerNode) and node.critic_model == model and node.model != model:
        return _loc("nodes", name, "critic_model")
    models = getattr(node, "models", None)
    if models and model in models:
        return _loc("nodes", name, "models", models.index(model))
    if getattr(node, "model", None) == model:
        return _loc("nodes", name, "model")
    return _loc("nodes", name)


def _unknown_model(model: str, declared: Collection[str]) -> str:
    names = ", ".join(declared) or "none"
    return f"unknown model '{model}'{_suggest(model, declared)}; declared: {names}"


def _sampling(doc: GraphDoc, node: BaseNode) -> Sampling:
    d = doc.spec.defaults

    def pick(field_name: str) -> Any:
        own = getattr(node, field_name)
        if own is not None:
            return own
        inherited = getattr(d, field_name)
        return inherited if inherited is not None else FALLBACK_SAMPLING[field_name]

    stop = node.stop_sequences if node.stop_sequences is not None else d.stop_sequences
    return Sampling(
        max_tokens=int(pick("max_tokens")), temperature=float(pick("temperature")),
        top_p=float(pick("top_p")), seed=int(pick("seed")), stop=tuple(stop or ()),
    )


#: node fields that name models (replaced by the models' own entries) or only document
_NAMING_FIELDS = {"description", "inputs", "model", "models", "critic_model",
                  "max_tokens", "temperature", "top_p", "seed", "stop_sequences", "extract"}


def graph_identity(graph: CompiledGraph) -> str:
    """What the graph computes, as a digest: two graphs with one identity make the same calls
    on the same inputs. Each step is hashed with its role, settings (resolved sampling
    included), its models' entries (not their names) and its inputs' digests, in order (a
    Merkle hash), so the graph's and nodes' names, descriptions and unused declarations do
    not count. The search uses it to tell which configurations are the same graph."""
    import hashlib
    import json

    spec = graph.spec
    models = {name: m.model_dump(mode="json", exclude_none=True)
              for name, m in spec.models.items()}
    digest: dict[str, str] = {}
    for sid in graph.order:
        step = graph.steps[sid]
        content = {
            "role": step.spec.role, "phase": step.phase, "round": step.round,
            "settings": step.spec.model_dump(mode="json", exclude=_NAMING_FIELDS,
                                             exclude_none=True),
            "models": [models[m] for m in step.models],
            "sampling": [step.sampling.max_tokens, step.sampling.temperature,
                         step.sampling.top_p, step.sampling.seed, list(step.sampling.stop)],
            "extract": step.extract,
            "params": step.params.model_dump(mode="json") if step.params is not None else None,
            "deps": [digest[d] for d in step.deps],
        }
        blob = json.dumps(content, sort_keys=True, default=str).encode()
        digest[sid] = hashlib.sha256(blob).hexdigest()
    outputs = [digest[s] for s in graph.order if graph.steps[s].node == spec.output]
    budget = spec.budget.model_dump(mode="json", exclude_none=True)
    blob = json.dumps({"output": outputs, "budget": budget}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
