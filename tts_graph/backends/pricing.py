"""Model prices from litellm's bundled cost map, shared by the remote backends.

Read from litellm's JSON file once per process, when a backend is created (importing litellm
takes seconds; nothing reaches for the network): the model binding fixes its costing when it
is made, so a price looked up later, at the first call, would never be charged.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

COST_MAP_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def cost_map() -> dict[str, Any]:
    """litellm's bundled price table; empty when litellm is not installed."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            data = json.loads((Path(folder) / COST_MAP_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        return data if isinstance(data, dict) else {}
    return {}


def mapped_price(model: str) -> tuple[float, float] | None:
    """USD per million tokens (input, output) for ``model`` in litellm's cost map: the name
    as given, then without its provider prefix (``anthropic/claude-...`` is listed as
    ``claude-...``), then with ``openai/``."""
    table = cost_map()
    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])
    else:
        names.append(f"openai/{model}")
    for name in names:
        entry = table.get(name)
        if isinstance(entry, dict):
            cin, cout = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
            if cin is not None and cout is not None:
                return float(cin) * 1e6, float(cout) * 1e6
    return None
