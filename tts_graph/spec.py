"""The graph file: pydantic models, the single source of truth (the JSON Schema comes from here).

Every model forbids unknown keys. ``parse_graph`` turns pydantic's errors into one-line
``FILE:LINE: path: message`` errors. The built-in roles' node models are here; the names of
custom roles come from ``custom_roles`` (which says why spec does not ask the role registry).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import arguments, custom_roles
from .errors import ArgumentError, GraphError, GraphErrors
from .yamlpos import Loc, line_of, load_yaml, load_yaml_file

NAME_RE = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
#: upper bounds that catch a typo or an overflow (`samples: 1e9`) at validate time instead
#: of as a request no server takes or an allocation that never ends; far above real use
#: (repeated sampling papers draw 10,000 samples; contexts reach 10M tokens)
MAX_SAMPLES = 100_000
MAX_ROUNDS = 1_000
MAX_TOKENS = 10_000_000
ExtractKind = Literal["auto", "number", "boxed", "choice", "text"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true/false as 1/0 where a number is asked; YAML 1.1 also reads
        # yes/no/on/off as booleans, so `samples: yes` would silently mean one sample
        if isinstance(value, bool) and info.field_name is not None:
            ann = cls.model_fields[info.field_name].annotation
            if not _admits_bool(ann):
                kind = "int_type" if _admits(ann, int) else "float_type"
                raise PydanticCustomError(kind, "a number is required, not {value}",
                                          {"value": value})
        return value


def _admits(tp: Any, kind: type) -> bool:
    """Whether an annotation takes ``kind`` (through Annotated, unions, Optional)."""
    if tp is kind:
        return True
    if get_origin(tp) is Annotated:
        return _admits(get_args(tp)[0], kind)
    if get_origin(tp) in (Union, UnionType):
        return any(_admits(a, kind) for a in get_args(tp))
    return False


def _admits_bool(tp: Any) -> bool:
    """Whether a boolean is a fair value for a field: it takes bool or anything, or is
    neither an int nor a float field (a mapping's own values are checked by its model)."""
    return tp is Any or _admits(tp, bool) or not (_admits(tp, int) or _admits(tp, float))


COUNT_RE = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KkMmBbTt]?)\s*"


def _parse_count(value: Any) -> Any:
    """Accept ``135e6``, ``135000000`` or ``"135M"`` / ``"8B"`` for parameter counts.

    YAML 1.1 (PyYAML) reads ``135e6`` as a string, so exponents are parsed here too.
    """
    if isinstance(value, str):
        m = re.fullmatch(COUNT_RE, value)
        if not m:
            raise ValueError("must be a number like 135e6 or '135M'")
        scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
        return float(m.group(1)) * scale
    return value


class Price(Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelSpec(Strict):
    """A model binding: which backend serves it, and the limits that apply to it."""

    backend: str = Field(description="local | openai | litellm | vllm | sim, or a registered "
                         "backend")
    model: str = Field(min_length=1, description="backend's model id, e.g. smollm2-135m")
    params: float | None = Field(
        default=None, gt=0, description="parameter count for FLOPs (135e6 or '135M')",
        json_schema_extra={"anyOf": [  # the strings that _parse_count accepts, too
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": f"^{COUNT_RE}$"},
            {"type": "null"},
        ]},
    )
    price: Price | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    rpm: float | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute")
    api_base: str | None = Field(default=None, min_length=1,
                                 description="server URL (OpenAI-compatible and others)")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the API key (never the key)",
    )
    timeout_s: float | None = Field(default=None, gt=0, description="per-call timeout")
    max_retries: int | None = Field(
        default=None, ge=0, le=20,
        description="retries of a call after 429/5xx/timeouts/dropped connections (default 3)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend-specific settings (n_ctx, threads, path...)"
    )

    @field_validator("params", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return _parse_count(value)


class Sampling(Strict):
    """Sampling settings shared by defaults and nodes (None = inherit)."""

    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = Field(
        default=None, description="strings that end a completion (`stop` means when a node "
        "stops: debate consensus, adaptive width)"
    )


class Defaults(Sampling):
    model: str | None = Field(default=None, description="model for nodes that name none")
    extract: ExtractKind | None = None


class Prompts(Strict):
    """Template overrides. Placeholders are ``{name}``; ``{{`` and ``}}`` are literal braces."""

    system: str | None = None
    user: str | None = None


class AdaptiveSamples(Strict):
    """Draw samples until the leading answer is settled (adaptive self-consistency)."""

    min: int = Field(default=2, ge=1, le=MAX_SAMPLES)
    max: int = Field(default=16, ge=1, le=MAX_SAMPLES)
    stop: Literal["settled", "confidence"] = "settled"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    batch: int = Field(default=2, ge=1, le=MAX_SAMPLES,
                       description="samples drawn between checks")

    @model_validator(mode="after")
    def _order(self) -> AdaptiveSamples:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class BaseNode(Sampling):
    description: str | None = None
    inputs: list[str] = Field(default_factory=list)
    prompts: Prompts | None = None
    extract: ExtractKind | None = None

    @property
    def calls_model(self) -> bool:
        return True


class ModelNode(BaseNode):
    model: str | None = None


class SolverNode(ModelNode):
    """Answers the question; ``samples`` independent samples (fixed or adaptive)."""

    role: Literal["solver"]
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | AdaptiveSamples = 1


class PlannerNode(ModelNode):
    """Writes a plan that downstream solvers follow."""

    role: Literal["planner"]


class CriticNode(ModelNode):
    """Critiques each input candidate (up to ``limit``)."""

    role: Literal["critic"]
    limit: int = Field(default=4, ge=1, le=MAX_SAMPLES)


class RefinerNode(ModelNode):
    """Critique-then-revise loop, ``rounds`` times, on the best input candidate."""

    role: Literal["refiner"]
    rounds: int = Field(default=1, ge=1, le=MAX_ROUNDS)
    critic_model: str | None = None


class JudgeNode(ModelNode):
    """Selects the best candidate (``select``: one listwise call; ``score``: one call each)."""

    role: Literal["judge"]
    mode: Literal["select", "score"] = "select"


class VerifierNode(ModelNode):
    """Checks each candidate; keeps the passing ones (all if none pass), best first."""

    role: Literal["verifier"]
    keep: Literal["passing", "all"] = "passing"
    first_k: int | None = Field(default=None, ge=1, description="keep at most the first k "
                                "passing candidates (input order)")


class RankerNode(ModelNode):
    """Ranks candidates in one listwise call and keeps the top ``top_k``."""

    role: Literal["ranker"]
    top_k: int = Field(default=3, ge=1)


class FuserNode(ModelNode):
    """Synthesizes one answer from the candidates (Mixture-of-Agents / Fusion-of-N)."""

    role: Literal["fuser"]
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES)


class UnitTestGeneratorNode(ModelNode):
    """Writes unit tests for the question (at most ``cap``). Nodes that take it as an input
    are asked to pass them; a ``unit_test_evaluator`` checks candidates against them."""

    role: Literal["unit_test_generator"]
    cap: int | None = Field(default=None, ge=1, description="most tests kept")


class UnitTestEvaluatorNode(ModelNode):
    """Checks each candidate against the tests of a ``unit_test_generator`` input, with a
    model (``check: model``) or by running the candidate's code in the sandbox (``check:
    sandbox``, no model call); ranks candidates by tests passed and keeps the passing ones
    (all of them, ranked, when none pass), or the ``top_k`` best."""

    role: Literal["unit_test_evaluator"]
    check: Literal["model", "sandbox"] = "model"
    keep: Literal["passing", "all"] = "passing"
    top_k: int | None = Field(default=None, ge=1, description="keep the k best instead")
    first_k: int | None = Field(
        default=None, ge=1, description="keep the first k candidates (input order) that "
        "pass every test, when k of them do")
    timeout_s: float = Field(default=10, gt=0, description="per candidate, check: sandbox")

    @property
    def calls_model(self) -> bool:
        return self.check == "model"

    @model_validator(mode="after")
    def _sandbox_has_no_model(self) -> UnitTestEvaluatorNode:
        if self.check == "sandbox" and self.model is not None:
            raise ValueError("check: sandbox runs the code and calls no model: drop 'model'")
        return self


class VoteNode(BaseNode):
    """Majority (or score-weighted) vote over extracted answers. No model call."""

    role: Literal["vote"]
    method: Literal["majority", "weighted"] = "majority"

    @property
    def calls_model(self) -> bool:
        return False


class DebateNode(ModelNode):
    """``agents`` agents answer, then see each other's answers and revise, ``rounds`` times."""

    role: Literal["debate"]
    models: list[str] | None = Field(default=None, min_length=1)
    agents: int = Field(default=3, ge=1, le=MAX_ROUNDS)
    rounds: int = Field(default=2, ge=1, le=MAX_ROUNDS)
    stop: Literal["none", "consensus"] = "none"

    @model_validator(mode="after")
    def _one_of(self) -> DebateNode:
        if self.model is not None and self.models is not None:
            raise ValueError("give either model or models, not both")
        return self


class FirstFinishNode(ModelNode):
    """Starts ``samples`` samples, keeps the first ``k`` to finish and cancels the rest."""

    role: Literal["first_finish"]
    samples: int = Field(default=4, ge=1, le=MAX_SAMPLES)
    k: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _k(self) -> FirstFinishNode:
        if self.k > self.samples:
            raise ValueError(f"k ({self.k}) must be <= samples ({self.samples})")
        return self


class CustomNode(ModelNode):
    """A role registered through the ``tts_graph.roles`` entry point; its own fields go in
    ``params`` and are checked by the role."""

    role: str
    models: list[str] | None = Field(default=None, min_length=1)
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES)
    params: dict[str, Any] = Field(default_factory=dict)


BUILTIN_NODES: dict[str, type[BaseNode]] = {
    "solver": SolverNode,
    "planner": PlannerNode,
    "critic": CriticNode,
    "refiner": RefinerNode,
    "judge": JudgeNode,
    "verifier": VerifierNode,
    "ranker": RankerNode,
    "fuser": FuserNode,
    "vote": VoteNode,
    "debate": DebateNode,
    "first_finish": FirstFinishNode,
    "unit_test_generator": UnitTestGeneratorNode,
    "unit_test_evaluator": UnitTestEvaluatorNode,
}


def _node_tag(value: Any) -> str | None:
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    if not isinstance(role, str):
        return None
    if role in BUILTIN_NODES:
        return role
    return "custom" if role in custom_roles.names() else role


NodeSpec = Annotated[
    Annotated[SolverNode, Tag("solver")]
    | Annotated[PlannerNode, Tag("planner")]
    | Annotated[CriticNode, Tag("critic")]
    | Annotated[RefinerNode, Tag("refiner")]
    | Annotated[JudgeNode, Tag("judge")]
    | Annotated[VerifierNode, Tag("verifier")]
    | Annotated[RankerNode, Tag("ranker")]
    | Annotated[FuserNode, Tag("fuser")]
    | Annotated[VoteNode, Tag("vote")]
    | Annotated[DebateNode, Tag("debate")]
    | Annotated[FirstFinishNode, Tag("first_finish")]
    | Annotated[UnitTestGeneratorNode, Tag("unit_test_generator")]
    | Annotated[UnitTestEvaluatorNode, Tag("unit_test_evaluator")]
    | Annotated[CustomNode, Tag("custom")],
    Discriminator(_node_tag),
]


def _check_name(key: Any) -> Any:
    if not isinstance(key, str) or not re.match(NAME_RE, key):
        raise ValueError(
            f"invalid name {key!r}: use letters, digits, _ and -, starting with a letter or _"
        )
    return key


#: a model or node name; checked as a dict key, so an error names the key's own line
Name = Annotated[str, StringConstraints(pattern=NAME_RE), BeforeValidator(_check_name)]


class Budget(Strict):
    """Per-query caps. A call that could overrun one is not sent."""

    max_tokens_per_query: int | None = Field(default=None, ge=1)
    max_cost_usd_per_query: float | None = Field(default=None, gt=0)
    max_flops_per_query: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)


class GraphSpec(Strict):
    """A collaboration graph."""

    version: Literal[1] = 1
    name: str = Field(pattern=NAME_RE)
    description: str | None = None
    models: dict[Name, ModelSpec] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    nodes: dict[Name, NodeSpec] = Field(min_length=1)
    output: str
    budget: Budget = Field(default_factory=Budget)


# --------------------------------------------------------------------------- error reporting

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "a mapping",
}


#: errors that only say the value has the wrong type; in a union, one comes from each branch
_TYPE_KINDS = {
    "int_type", "int_parsing", "float_type", "float_parsing", "string_type", "bool_type",
    "bool_parsing", "list_type", "dict_type", "model_type", "model_attributes_type",
}


@dataclass
class _Problem:
    loc: Loc
    kind: str
    message: str
    suggestion: str | None = None  # for an unknown field: the field it is probably a typo of


def _known_fields() -> set[str]:
    names: set[str] = set()
    for model in (GraphSpec, ModelSpec, Price, Defaults, Prompts, AdaptiveSamples, Budget,
                  *BUILTIN_NODES.values(), CustomNode):
        names.update(model.model_fields)
    return names


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and type(None) in get_args(tp):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _owner(raw_loc: tuple[Any, ...], root: type[BaseModel] | None = None
           ) -> type[BaseModel] | None:
    """The model whose fields the last segment of pydantic's ``raw_loc`` is checked against
    (``root``: the document's model, a graph unless told)."""
    tp: Any = root or GraphSpec
    for part in raw_loc[:-1]:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(part) if isinstance(part, str) else None
            tp = info.annotation if info is not None else None
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        elif get_origin(tp) in (Union, UnionType):
            tp = next((m for m in get_args(tp) if part in (
                *(t.tag for t in getattr(m, "__metadata__", ()) if isinstance(t, Tag)),
                getattr(_strip(m), "__name__", None))), None)
        else:
            tp = None
        if tp is None:
            return None
    tp = _strip(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _get(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _unknown_field(raw_loc: tuple[Any, ...], loc: Loc, data: Any,
                   root: type[BaseModel] | None = None) -> tuple[str, str | None]:
    key = str(raw_loc[-1])
    owner = _owner(raw_loc, root)
    # the names a user writes: a field's alias where it has one
    known = {f.alias or k for k, f in owner.model_fields.items()} if owner is not None else \
        _known_fields() if root is None else set()
    # a field that starts with the key (stop -> stop_sequences) beats a near spelling
    close = sorted(k for k in known if k.startswith(key + "_"))[:1] or \
        difflib.get_close_matches(key, sorted(known - {key}), n=1)
    if close:
        return f"unknown field (did you mean '{close[0]}'?)", close[0]
    node = _get(data, loc[:-1])
    if owner is not None and issubclass(owner, BaseNode) and isinstance(node, dict):
        return f"unknown field for role '{node.get('role')}'", None
    return "unknown field", None


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _message(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx['ge'])}"
    if kind == "greater_than":
        return f"must be > {_num(ctx['gt'])}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx['le'])}"
    if kind == "less_than":
        return f"must be < {_num(ctx['lt'])}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind in ("float_type", "float_parsing"):
        return "must be a number"
    if kind == "string_type":
        return "must be a string"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')}".replace("'", "")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} items"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return (f"invalid name {err.get('input')!r}: use letters, digits, _ and -, "
                "starting with a letter or _")
    if kind == "union_tag_not_found":
        value = err.get("input")
        roles = ", ".join(_role_names())
        if not isinstance(value, dict):
            return f"must be a mapping with a role (one of {roles})"
        return f"must be one of {roles}" if "role" in value else f"required: one of {roles}"
    if kind == "union_tag_invalid":
        return _unknown_role(str(ctx.get("tag", "")))
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg: str = err["msg"]
    return msg[:1].lower() + msg[1:]


def _role_names() -> list[str]:
    # the same list, in the same order, as roles.registry.all_role_names (a test checks it)
    return [*BUILTIN_NODES, *custom_roles.names()]


def _unknown_role(role: str) -> str:
    known = _role_names()
    close = difflib.get_close_matches(role, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown role '{role}'{hint}; known: {', '.join(known)}"


def _clean_loc(data: Any, loc: tuple[Any, ...], keep_final: bool) -> Loc:
    """Drop pydantic's union/tag segments from ``loc``, keeping the path that exists in data
    (and, with ``keep_final``, the missing key that ends it)."""
    out: list[str | int] = []
    cur: Any = data
    for i, part in enumerate(loc):
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_list or (isinstance(cur, dict) and part in cur):
            out.append(part)
            cur = cur[part]
        elif keep_final and i == len(loc) - 1 and isinstance(cur, dict):
            out.append(part)
    return tuple(out)


def _problems(exc: ValidationError, data: Any, root: type[BaseModel] | None = None
              ) -> list[_Problem]:
    """One problem per place, for ``data`` validated as ``root`` (a graph unless told)."""
    found: list[_Problem] = []
    for err in exc.errors():
        raw_loc = tuple(err["loc"])
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            raw_loc = (*raw_loc, "role")
        loc = _clean_loc(data, raw_loc, keep_final=kind in ("missing", "union_tag_not_found"))
        if kind == "extra_forbidden":
            message, suggestion = _unknown_field(raw_loc, loc, data, root)
            found.append(_Problem(loc, kind, message, suggestion))
        else:
            found.append(_Problem(loc, kind, _message(dict(err))))
    kept: list[_Problem] = []
    for p in found:
        # a union tried each branch: a branch that only says "wrong type" is noise when
        # another branch accepted the type and found a real problem at or below this place
        if p.kind in _TYPE_KINDS and any(
            q.kind not in _TYPE_KINDS and q.loc[: len(p.loc)] == p.loc for q in found
        ):
            continue
        # a misspelt key explains why the field it was meant to be is missing
        if p.kind == "missing" and any(
            q.suggestion is not None and (*q.loc[:-1], q.suggestion) == p.loc for q in found
        ):
            continue
        kept.append(p)
    merged: dict[Loc, _Problem] = {}
    for p in kept:
        first = merged.setdefault(p.loc, p)
        if first is not p and first.kind in _TYPE_KINDS and p.kind in _TYPE_KINDS:
            extra = p.message.removeprefix("must be ")
            if extra not in first.message:  # every branch had the wrong type: list them all
                first.message += f" or {extra}"
    return list(merged.values())


@dataclass
class GraphDoc:
    """A validated graph with the positions of its source, for later (compile-time) errors."""

    spec: GraphSpec
    source: str = "<graph>"
    lines: dict[Loc, int] = field(default_factory=dict)
    base_dir: Path | None = None

    def error(self, loc: Loc, message: str) -> GraphError:
        return GraphError(
            message,
            path=".".join(str(p) for p in loc),
            source=self.source,
            line=line_of(self.lines, loc),
        )


def parse_graph(
    data: Any,
    *,
    source: str = "<graph>",
    lines: dict[Loc, int] | None = None,
    base_dir: Path | None = None,
) -> GraphDoc:
    """Validate ``data`` (already loaded) as a graph; raise ``GraphErrors`` with one-line errors."""
    lines = lines or {}
    if not isinstance(data, dict):
        message = "a graph file must be a mapping (name:, models:, nodes:, output:)"
        if data is None:
            message = f"empty file: {message}"
        else:
            message += ", not " + _TYPE_WORDS.get(type(data).__name__, "a single value")
        raise GraphError(
            message,
            source=source, line=line_of(lines, ()),
        )
    try:
        spec = GraphSpec.model_validate(data)
    except ValidationError as exc:
        raise GraphErrors([
            GraphError(p.message, path=".".join(str(x) for x in p.loc), source=source,
                       line=line_of(lines, p.loc))
            for p in _problems(exc, data)
        ]) from None
    return GraphDoc(spec=spec, source=source, lines=lines, base_dir=base_dir)


def load_graph(path: str | Path) -> GraphDoc:
    """Read and validate a graph file (YAML or JSON)."""
    arguments.path(path, "the graph file")
    data, lines = load_yaml_file(path)
    return parse_graph(data, source=os.fspath(path), lines=lines, base_dir=Path(path).parent)


def loads_graph(text: str, source: str = "<string>") -> GraphDoc:
    """Parse and validate a graph from YAML (or JSON) text."""
    if not isinstance(text, (str, bytes)):  # PyYAML reads bytes itself (UTF-8/16 by BOM)
        hint = ": read a file with Graph.from_yaml(path) or load_graph(path)" \
            if isinstance(text, os.PathLike) else ""
        raise ArgumentError(f"the graph text must be a str, not "
                            f"{arguments.type_name(text)}{hint}")
    data, lines = load_yaml(text, source)
    return parse_graph(data, source=source, lines=lines)


def json_schema() -> dict[str, Any]:
    schema = GraphSpec.model_json_schema()
    # a node matches exactly one branch of the roles' oneOf: a custom role is any other name
    custom_role = schema["$defs"]["CustomNode"]["properties"]["role"]
    custom_role["not"] = {"enum": sorted(BUILTIN_NODES)}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tts-graph collaboration graph"
    return schema
