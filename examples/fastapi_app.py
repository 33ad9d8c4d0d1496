"""Embed a graph behind your own FastAPI endpoint: ``POST /ask {"question": "..."}``.

The graph is loaded once when the app starts and every request awaits ``Graph.arun``, so many
requests run concurrently on one event loop (the graph's per-model limits still apply).

    python examples/fastapi_app.py [--graph graphs/single.yaml] [--port 8001]
    curl -s localhost:8001/ask -H 'content-type: application/json' \\
         -d '{"question": "What is 6 * 7?"}'

or ``uvicorn examples.fastapi_app:app`` (set ASK_GRAPH to pick the graph file).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from tts_graph import Graph

DEFAULT_GRAPH = Path(__file__).resolve().parent.parent / "graphs" / "single.yaml"


class Ask(BaseModel):
    question: str = Field(min_length=1, max_length=4000)


class Answer(BaseModel):
    answer: str | None = Field(description="the extracted final answer")
    text: str | None = Field(description="the final node's full text")
    status: str
    latency_s: float
    tokens: int
    cost_usd: float


def create_app(graph: Graph | str | Path = DEFAULT_GRAPH) -> FastAPI:
    """An app answering ``POST /ask`` with ``graph`` (a ``Graph``, or a graph file)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        g = graph if isinstance(graph, Graph) else Graph.from_yaml(graph)
        app.state.graph = g
        yield
        await g.aclose()

    app = FastAPI(title="ask", lifespan=lifespan)

    @app.post("/ask")
    async def ask(req: Ask) -> Answer:
        result = await app.state.graph.arun(req.question)
        if result.status == "error":  # a backend failed after its retries: not an answer
            raise HTTPException(status_code=502, detail="the model backend failed; try again")
        usage = result.usage
        return Answer(answer=result.answer, text=result.text, status=result.status,
                      latency_s=round(result.latency_s, 3), tokens=usage.tokens,
                      cost_usd=usage.cost_usd)

    return app


app = create_app(os.environ.get("ASK_GRAPH", DEFAULT_GRAPH))


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default=str(DEFAULT_GRAPH))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app(args.graph), host=args.host, port=args.port, log_level="info")
