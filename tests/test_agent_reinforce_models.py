"""agent-reinforce's feedback through real model calls: an OpenAI-compatible server on
loopback (through litellm, as a user's hosted model would answer), the embedded SmolLM2, and
SmolLM2 behind llama.cpp's server. A small model mostly writes JSON the searcher cannot use:
each such reply must be counted and the numeric update used, never a crash or a silent skip."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tts_graph.search.agent_reinforce import AgentReinforceSearcher
from tts_graph.search.driver import SearchSession

MODELS = {
    "a": {"backend": "scripted", "model": "a", "params": "1B",
          "options": {"answers": ["Answer: 0"]}},
    "b": {"backend": "scripted", "model": "b", "params": "3B",
          "options": {"answers": ["Answer: 7"]}},
}
CHOICES = [{"node": "solve", "field": "model", "values": ["a", "b"]},
           {"node": "solve", "field": "samples", "values": [1, 2, 3]}]


def search_file(tmp_path: Path, critic: dict[str, Any], *, trials: int = 4) -> Path:
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": i, "question": f"q{i}: 3 + 4?", "answer": "7"})
                            + "\n" for i in range(8)))
    base = {"version": 1, "name": "toy", "models": {**MODELS, "critic": critic},
            "nodes": {"solve": {"role": "solver", "model": "a"},
                      "vote": {"role": "vote", "inputs": ["solve"]}},
            "output": "vote"}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    search = {"version": 1, "name": "fb", "base": "base.yaml", "task": {"name": str(task)},
              "choices": CHOICES, "budget": {"trials": trials},
              "searcher": {"name": "agent-reinforce", "batch": 2, "feedback_model": "critic",
                           "options": {"feedback_max_tokens": 160}},
              "pruning": {"enabled": False}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def run_search(path: Path, tmp_path: Path) -> AgentReinforceSearcher:
    session = SearchSession(path, out_dir=tmp_path / "out",
                            storage=optuna.storages.InMemoryStorage())  # type: ignore[arg-type]
    try:
        asyncio.run(session.run())
    finally:
        session.close()
    s = session.searcher
    assert isinstance(s, AgentReinforceSearcher)
    return s


def assert_every_call_counted(s: AgentReinforceSearcher, trials: int) -> None:
    # the prior call before the first trial, then one per batch of 2
    assert s.updates == 1 + trials // 2
    assert s.feedback_updates + s.numeric_updates == s.updates
    kinds = [v for k, v in s.study.user_attrs.items() if ".update." in k]
    for info in kinds:
        assert info["kind"] in ("feedback", "numeric")
        if info["kind"] == "numeric":  # a reply that could not be used says why
            assert info["reason"] and info["reason"] != "no feedback model set"
    if s.numeric_updates:
        assert s.last_feedback_error or any(i["kind"] == "numeric" for i in kinds)


class _Answering(BaseHTTPRequestHandler):
    """/v1/chat/completions answering every request with ``server.reply``."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        text = self.server.reply  # type: ignore[attr-defined]
        data = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())


@pytest.fixture
def answering_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    server.requests = []  # type: ignore[attr-defined]
    server.reply = ""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_feedback_over_http_through_litellm_is_parsed_and_applied(
        tmp_path: Path, answering_server: ThreadingHTTPServer) -> None:
    answering_server.reply = json.dumps(  # type: ignore[attr-defined]
        {"analysis": "b answers right", "updates": [
            {"param": "solve.model", "value": "b", "direction": "increase", "strength": 1}]})
    url = f"http://127.0.0.1:{answering_server.server_address[1]}/v1"
    critic = {"backend": "litellm", "model": "openai/critic", "api_base": url}
    s = run_search(search_file(tmp_path, critic), tmp_path)
    assert s.feedback_updates == 3 and s.numeric_updates == 0 and s.feedback_tokens == 3 * 70
    reqs = answering_server.requests  # type: ignore[attr-defined]
    assert len(reqs) == 3 and "solve.model" in reqs[-1]["messages"][-1]["content"]


def test_junk_feedback_over_http_is_counted_and_the_search_goes_on(
        tmp_path: Path, answering_server: ThreadingHTTPServer) -> None:
    answering_server.reply = "Sure! Use the bigger model, it is better."  # type: ignore
    url = f"http://127.0.0.1:{answering_server.server_address[1]}/v1"
    critic = {"backend": "litellm", "model": "openai/critic", "api_base": url}
    s = run_search(search_file(tmp_path, critic), tmp_path)
    assert s.feedback_updates == 0 and s.numeric_updates == 3
    assert "no JSON object" in (s.last_feedback_error or "")
    assert_every_call_counted(s, 4)


@pytest.mark.model
def test_feedback_from_the_embedded_model(tmp_path: Path) -> None:
    critic = {"backend": "local", "model": "smollm2-135m"}
    s = run_search(search_file(tmp_path, critic), tmp_path)
    assert_every_call_counted(s, 4)
    assert len(s.history) == 4


@pytest.mark.model
def test_feedback_from_smollm2_behind_llama_cpps_server(tmp_path: Path,
                                                       llama_server: Any) -> None:
    critic = {"backend": "litellm", "model": "openai/smollm2",
              "api_base": llama_server.base_url}
    before = llama_server.posts()
    s = run_search(search_file(tmp_path, critic), tmp_path)
    assert llama_server.posts() - before == 3  # every feedback call reached the server
    assert_every_call_counted(s, 4)
