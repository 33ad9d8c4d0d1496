"""Serve a graph as an OpenAI-compatible model and call it with the official ``openai`` client.

Starts ``tts-graph serve graphs/single.yaml`` on a free loopback port, waits until
``GET /v1/models`` answers, asks the graph a question (plain and streamed), prints the answer,
the usage summed over every call the graph made and the per-node breakdown that tts-graph adds
under ``tts_graph``, then stops the server.

    python examples/serve_openai.py [--graph graphs/single.yaml] ["question"]

Against a server you run yourself (``tts-graph serve graphs/ --port 8000``), only the client
part is needed: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from openai import OpenAI

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"
QUESTION = "What is 17 + 25?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(graph: Path, *, timeout_s: float = 120.0) -> Iterator[str]:
    """Run ``tts-graph serve GRAPH`` until the block ends; yields its ``/v1`` base URL."""
    port = free_port()
    exe = shutil.which("tts-graph")
    cmd = [exe] if exe else [sys.executable, "-m", "tts_graph"]
    cmd += ["serve", str(graph), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tts-graph serve exited with status {proc.returncode}")
            try:
                if httpx.get(f"{base}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tts-graph serve did not answer within {timeout_s:.0f} s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--graph", default=str(GRAPHS / "single.yaml"))
    args = parser.parse_args(argv)
    with serve(Path(args.graph)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused")  # no --api-key-env: no auth
        models = [m.id for m in client.models.list()]
        print(f"server at {base_url}, models: {models}")
        model = models[0]

        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": args.question}])
        print(f"answer: {reply.choices[0].message.content!r}")
        print(f"usage: {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} "
              f"completion tokens over every call of the graph")
        ext = (reply.model_extra or {}).get("tts_graph", {})
        print(f"tts_graph: status {ext.get('status')}, extracted answer {ext.get('answer')!r}, "
              f"cost ${ext.get('cost_usd', 0.0):.6f}, nodes {sorted(ext.get('usage_by_node', {}))}")

        # streamed: token by token when the output node is one sample of a solver, fuser or
        # refiner (single.yaml); a vote's or a judge's pick arrives whole when it is ready
        parts = []
        print("streamed: ", end="", flush=True)
        for chunk in client.chat.completions.create(
                model=model, stream=True,
                messages=[{"role": "system", "content": "Answer briefly."},
                          {"role": "user", "content": args.question}]):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                print(chunk.choices[0].delta.content, end="", flush=True)
        print(f"\nstreamed in {len(parts)} chunks")


if __name__ == "__main__":
    main()
