"""A cost cap needs prices: without them the worst case would price every call at $0."""

from __future__ import annotations

import pytest

from tts_graph.errors import TTSGraphError
from tts_graph.search.space import Space
from tts_graph.search.spec import SearchSpec

BASE = {
    "version": 1, "name": "b",
    "models": {"m": {"backend": "scripted", "model": "x"}},
    "nodes": {"s": {"role": "solver", "model": "m", "samples": 2}},
    "output": "s",
}


def spec(**constraints: float) -> SearchSpec:
    return SearchSpec.model_validate({
        "name": "c", "base": "b.yaml", "task": {"name": "easy"},
        "choices": [{"node": "s", "field": "samples", "values": [1, 2, 4]}],
        "constraints": constraints, "budget": {"trials": 3},
        "searcher": {"name": "random"},
    })


def test_cost_cap_without_prices_is_refused() -> None:
    with pytest.raises(TTSGraphError, match="declares no price for m"):
        Space(spec(max_cost_usd_per_query=0.01), BASE)


def test_cost_cap_with_prices_prices_the_worst_case() -> None:
    base = {**BASE, "models": {"m": {**BASE["models"]["m"],
                                     "price": {"input_per_mtok": 1, "output_per_mtok": 2}}}}
    space = Space(spec(max_cost_usd_per_query=0.01), base)
    est = space.estimate(space.compile({"s.samples": 4}), 100)
    assert est.cost_usd == pytest.approx(4 * (100 * 1 + 256 * 2) / 1e6)
