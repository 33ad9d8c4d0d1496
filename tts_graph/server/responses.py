"""The parts of a chat completion answer built from a graph's result: ``usage``, the
``tts_graph`` extension field, the finish reason, and the 502 of a run that failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api_error import APIError

if TYPE_CHECKING:
    from ..executor import QueryResult


def usage_block(result: QueryResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def extension(result: QueryResult, *, steps: bool = False, calls: bool = False
              ) -> dict[str, Any]:
    """The ``tts_graph`` field of a response."""
    d = result.to_dict()
    out: dict[str, Any] = {
        "graph": result.graph, "status": result.status, "answer": result.answer,
        "error": result.error, "latency_s": d["latency_s"],
        "cost_usd": d["usage"]["cost_usd"], "billed_usd": d["usage"]["billed_usd"],
        "usage": d["usage"], "usage_by_node": d["usage_by_node"],
        "usage_by_model": d["usage_by_model"],
    }
    if steps:
        out["steps"] = d["steps"]
    if calls:
        out["calls"] = d["calls"]
    return out


def _finish_reason(result: QueryResult) -> str:
    return "stop" if result.status == "ok" else "length"


def _infra_error(model: str, result: QueryResult, ext: dict[str, Any]) -> APIError:
    return APIError(502, f"graph '{model}' failed: {result.error or 'infrastructure error'}",
                    type="upstream_error", code="graph_error", extra={"tts_graph": ext})
