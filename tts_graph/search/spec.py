"""The search file (``searchers/*.yaml``): strict pydantic, like graph files.

A search names a base graph, the choices to make on it, the objectives, the per-query
constraints (configurations over them are never run), the task and its search/held-out split,
the trial budget and the searcher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import GraphErrors
from ..spec import GraphDoc, Strict, _problems
from ..yamlpos import line_of, load_yaml_file

ObjectiveName = Literal["accuracy", "cost", "latency", "flops", "tokens"]
SEARCHERS = ("random", "grid", "optuna-tpe", "optuna-nsga2", "optuna-motpe", "agent-reinforce")


class NodeToggle(Strict):
    """Switch a node on or off. Off: its consumers read its inputs instead."""

    node: str
    enabled: list[bool] = Field(default=[True, False], min_length=1)


class EdgeToggle(Strict):
    """Switch an edge (``[from, to]``) on or off."""

    edge: Annotated[list[str], Field(min_length=2, max_length=2)]
    enabled: list[bool] = Field(default=[True, False], min_length=1)


class FieldChoice(Strict):
    """Choose the value of one node field: ``values`` (categorical), ``int: [lo, hi]`` or
    ``float: [lo, hi]`` (with ``log`` and ``step``)."""

    node: str
    field: str
    values: list[Any] | None = Field(default=None, min_length=1)
    int_range: Annotated[list[int], Field(min_length=2, max_length=2)] | None = Field(
        default=None, alias="int")
    float_range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        default=None, alias="float")
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> FieldChoice:
        kinds = [k for k in (self.values, self.int_range, self.float_range) if k is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of values, int or float")
        rng = self.int_range or self.float_range
        if rng is not None:
            if rng[0] > rng[1]:
                raise ValueError(f"range low ({rng[0]}) must be <= high ({rng[1]})")
            if self.log and rng[0] <= 0:
                raise ValueError("a log range must start above 0")
        # Optuna steps an int range by whole numbers only (step=0.5 would crash a trial)
        if self.int_range is not None and self.step is not None and \
                not float(self.step).is_integer():
            raise ValueError(f"the step of an int range must be a whole number, not {self.step}")
        for i, v in enumerate(self.values or []):  # one listed twice is drawn twice as often
            if any(type(w) is type(v) and w == v for w in (self.values or [])[:i]):
                raise ValueError(f"{v!r} is listed twice in values")
        return self

    def count(self) -> int | None:
        """How many values a stepped range holds (None: values, or a range without step)."""
        rng = self.int_range or self.float_range
        if rng is None or self.step is None:
            return None
        return int((rng[1] - rng[0]) // self.step) + 1


def _choice_tag(value: Any) -> str:
    if isinstance(value, dict):
        if "edge" in value:
            return "edge-toggle"
        return "field-choice" if "field" in value else "node-toggle"
    return "edge-toggle" if isinstance(value, EdgeToggle) else \
        "field-choice" if isinstance(value, FieldChoice) else "node-toggle"


Choice = Annotated[
    Annotated[NodeToggle, Tag("node-toggle")] | Annotated[EdgeToggle, Tag("edge-toggle")]
    | Annotated[FieldChoice, Tag("field-choice")],
    Discriminator(_choice_tag),
]


class TaskSpec(Strict):
    name: str = Field(description="task name or file, as for tts-graph eval --task")
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    scorer: str | None = None
    seed: int = 0
    search_limit: int | None = Field(default=None, ge=1, description="search questions used")
    heldout_limit: int | None = Field(default=None, ge=1, description="held-out questions")


class Constraints(Strict):
    """Per-query caps on a configuration's worst case: over them, it is never run."""

    max_tokens_per_query: int | None = Field(default=None, ge=1)
    max_cost_usd_per_query: float | None = Field(default=None, gt=0)
    max_flops_per_query: float | None = Field(default=None, gt=0)
    prompt_tokens_estimate: int = Field(default=256, ge=1,
                                        description="prompt tokens assumed per call")


class Budget(Strict):
    trials: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1, description="live tokens spent")
    max_cost_usd: float | None = Field(default=None, gt=0, description="live USD spent")

    @model_validator(mode="after")
    def _some(self) -> Budget:
        if self.trials is None and self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("give trials, max_tokens or max_cost_usd")
        return self


class Pruning(Strict):
    """Successive halving: score a trial on min_questions, then factor× more, ..., and cut it
    when it cannot win."""

    enabled: bool = True
    min_questions: int = Field(default=8, ge=1)
    factor: int = Field(default=2, ge=2)


class SearcherSpec(Strict):
    name: Literal["random", "grid", "optuna-tpe", "optuna-nsga2", "optuna-motpe",
                  "agent-reinforce"]
    # numpy's and Optuna's generators take 0 <= seed < 2**32: say so at the file's line
    seed: int = Field(default=0, ge=0, lt=2**32)
    batch: int = Field(default=4, ge=1, description="agent-reinforce: graphs per update")
    feedback_model: str | None = Field(
        default=None, description="agent-reinforce: model (from the base graph) giving feedback")
    options: dict[str, Any] = Field(default_factory=dict)


class SearchSpec(Strict):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    description: str | None = None
    base: str = Field(description="base graph file, relative to this file")
    task: TaskSpec
    choices: list[Choice] = Field(min_length=1)
    objectives: list[ObjectiveName] = Field(default=["accuracy"], min_length=1)
    constraints: Constraints = Field(default_factory=Constraints)
    budget: Budget
    searcher: SearcherSpec
    pruning: Pruning = Field(default_factory=Pruning)
    concurrency: int = Field(default=8, ge=1, description="questions at once within a trial")

    # field validators (not a model validator), so that an error points at its own line
    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each objective may appear once")
        if value[0] != "accuracy":
            raise ValueError("the first objective must be accuracy")
        return value

    @field_validator("searcher")
    @classmethod
    def _searcher_fits(cls, value: SearcherSpec, info: ValidationInfo) -> SearcherSpec:
        objectives = info.data.get("objectives") or []
        if value.name == "optuna-tpe" and len(objectives) > 1:
            raise ValueError("optuna-tpe optimises one objective; use optuna-nsga2 or "
                             "optuna-motpe for a Pareto search")
        return value


def load_search(path: str | Path) -> tuple[SearchSpec, GraphDoc]:
    """Read a search file; returns its spec and a GraphDoc-like holder for error positions."""
    data, lines = load_yaml_file(path)
    source = str(path)
    doc_errors: list[Any] = []
    if not isinstance(data, dict):
        from ..errors import GraphError

        raise GraphError("a search file must be a mapping", source=source, line=1)
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as exc:
        from ..errors import GraphError

        # as for graph files: a misspelt key says what it was meant to be, and the
        # "required" of the key it was meant to be is not said again
        for p in _problems(exc, data, SearchSpec):
            doc_errors.append(GraphError(p.message, path=".".join(map(str, p.loc)),
                                         source=source, line=line_of(lines, p.loc)))
        raise GraphErrors(doc_errors) from None
    holder = GraphDoc(spec=None, source=source, lines=lines,  # type: ignore[arg-type]
                      base_dir=Path(path).parent)
    return spec, holder
