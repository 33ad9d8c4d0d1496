"""Run a graph over a JSONL file of questions and write one JSON result per line.

Questions run concurrently (``Graph.arun_many``); each result is written the moment it
finishes (a crash loses nothing already written), with a progress bar on stderr.

    python examples/batch_jsonl.py [examples/questions.jsonl] [results.jsonl]
        [--graph graphs/single.yaml] [--concurrency 2] [--max-tokens 64]

Each input line is an object with a "question" (and optionally an "id"), or a plain string.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tts_graph import Graph, QueryResult

HERE = Path(__file__).resolve().parent
GRAPHS = HERE.parent / "graphs"


def read_questions(path: Path) -> list[tuple[str, str]]:
    """(id, question) pairs; ids default to the line number."""
    items = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if isinstance(item, str):
            items.append((str(no), item))
        else:
            items.append((str(item.get("id", no)), item["question"]))
    return items


def load_graph(path: Path, max_tokens: int | None) -> Graph:
    graph = Graph.from_yaml(path)
    if max_tokens is None:
        return graph
    data = graph.to_dict()
    data.setdefault("defaults", {})["max_tokens"] = max_tokens
    for node in data["nodes"].values():  # a node's own max_tokens would win over defaults
        node.pop("max_tokens", None)
    return Graph.from_dict(data, base_dir=path.parent)


async def run(graph: Graph, items: list[tuple[str, str]], out: Path, concurrency: int
              ) -> list[QueryResult]:
    with out.open("w", encoding="utf-8") as fh, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), console=Console(stderr=True)) as progress:
        bar = progress.add_task(graph.name, total=len(items), info="")
        tokens = 0

        def on_result(res: QueryResult) -> None:
            nonlocal tokens
            item_id, question = items[int(res.id)]
            fh.write(json.dumps({
                "id": item_id, "question": question, "answer": res.answer, "text": res.text,
                "status": res.status, "error": res.error, "latency_s": round(res.latency_s, 3),
                "tokens": res.usage.tokens, "cost_usd": res.usage.cost_usd,
            }) + "\n")
            fh.flush()
            tokens += res.usage.tokens
            progress.update(bar, advance=1, info=f"{tokens} tokens")

        return await graph.arun_many([q for _, q in items], concurrency=concurrency,
                                     on_result=on_result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", default=str(HERE / "questions.jsonl"))
    parser.add_argument("output", nargs="?", default="results.jsonl")
    parser.add_argument("--graph", default=str(GRAPHS / "single.yaml"))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="cap every node's completions (cheaper runs)")
    args = parser.parse_args(argv)
    items = read_questions(Path(args.input))
    graph = load_graph(Path(args.graph), args.max_tokens)
    results = asyncio.run(run(graph, items, Path(args.output), args.concurrency))
    ok = sum(r.status == "ok" for r in results)
    tokens = sum(r.usage.tokens for r in results)
    print(f"{len(results)} questions, {ok} ok, {tokens} tokens -> {args.output}")
    return 0 if all(r.status != "error" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
