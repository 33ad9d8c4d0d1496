"""The embedding API misused the way app developers who did not write it will: wrong argument
types get one line naming the argument (``ArgumentError``, also a ``TypeError``/``ValueError``)
before anything runs; cancelled runs and abandoned streams leave nothing running; a closed
graph says so; threads share a graph; a ``QueryResult`` serialises (and comes back), pickles,
has a short repr and never holds the API key; a ``Graph`` pickles for multiprocessing."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from test_graph_api import DATA  # a scripted self-consistency graph

from tts_graph import ClosedError, Executor, Graph, QueryResult, load_graph
from tts_graph.backends import registry
from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.registry import register_backend
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import ArgumentError, GraphError
from tts_graph.evaluate.runner import to_row
from tts_graph.evaluate.store import Row
from tts_graph.evaluate.tasks import Item
from tts_graph.spec import ModelSpec
from tts_graph.testing.fault_server import FaultConfig, serve_fault_server
from tts_graph.types import Completion

ROOT = Path(__file__).resolve().parent.parent


def scripted(latency: float = 0.0) -> ScriptedBackend:
    return ScriptedBackend(lambda req, i: "Answer: 4", latency=latency)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# ---------------------------------------------------------------------- argument types


@pytest.mark.parametrize("question", [None, 42, b"What is 2 + 2?", ["q"]])
def test_a_question_that_is_not_a_str_fails_at_the_call(question: Any) -> None:
    """It ran, the solver failed on ``"".join`` and the query came back as a graph error
    ("sequence item 1: expected str instance, NoneType found")."""
    b = scripted()
    g = Graph.from_dict(DATA, backends={"m": b})
    with pytest.raises(ArgumentError) as exc:
        g.run(question)
    assert isinstance(exc.value, TypeError)
    assert one_line(exc.value).startswith("question must be a str, not ")
    with pytest.raises(ArgumentError):
        asyncio.run(g.arun(question))
    with pytest.raises(ArgumentError):
        g.astream(question)  # at the call, not at the first piece
    assert b.requests == []


def test_a_str_where_a_list_of_questions_is_expected_is_refused() -> None:
    """``run_many("What is 2+2?")`` ran one query per character."""
    b = scripted()
    g = Graph.from_dict(DATA, backends={"m": b})
    with pytest.raises(ArgumentError, match="wrap it in a list"):
        g.run_many("abc")
    with pytest.raises(ArgumentError, match=r"^questions\[1\] must be a str, not int$"):
        g.run_many(["a", 3])  # checked before the first one runs
    with pytest.raises(ArgumentError, match="not None"):
        g.run_many(None)  # type: ignore[arg-type]
    assert b.requests == []


@pytest.mark.parametrize(("value", "kind"), [(0, ValueError), (-3, ValueError),
                                             ("4", TypeError), (2.5, TypeError),
                                             (True, TypeError)])
def test_concurrency_below_one_or_not_an_int_is_refused(value: Any, kind: type) -> None:
    g = Graph.from_dict(DATA, backends={"m": scripted()})
    with pytest.raises(kind) as exc:
        g.run_many(["a"], concurrency=value)
    assert isinstance(exc.value, ArgumentError)
    assert one_line(exc.value).startswith("concurrency must be")


def test_a_graph_path_that_is_not_a_path_is_named(tmp_path: Path) -> None:
    for bad in (None, b"graphs/self_consistency.yaml", 3):
        with pytest.raises(ArgumentError, match=r"^the graph file must be a path"):
            Graph.from_yaml(bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="empty path"):
        Graph.from_yaml("")  # was read as the current directory
    # YAML text given to from_yaml: one line, not the whole text as a "file name"
    text = (ROOT / "graphs" / "self_consistency.yaml").read_text()
    with pytest.raises(GraphError) as exc:
        Graph.from_yaml(text)
    assert "not a file path" in one_line(exc.value) and "from_string" in str(exc.value)


def test_missing_directory_and_binary_graph_files_are_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "b.yaml"
    binary.write_bytes(bytes(range(256)))
    # the binary file's first byte that is not UTF-8 (0x80) follows one line break (0x0a)
    for path, says in ((tmp_path / "nope.yaml", ": file not found"),
                       (tmp_path, ": is a directory, not a file"),
                       (binary, ":2: not UTF-8 text (byte 0x80)")):
        with pytest.raises(GraphError) as exc:
            Graph.from_yaml(path)
        assert one_line(exc.value).startswith(f"{path}{says}")


def test_graph_text_and_objects_of_the_wrong_type_are_named() -> None:
    with pytest.raises(ArgumentError, match="from_yaml"):
        Graph.from_string(Path("graphs/self_consistency.yaml"))  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^the graph text must be a str, not None$"):
        Graph.from_string(None)  # type: ignore[arg-type]
    for bad in ("graphs/self_consistency.yaml", DATA):
        with pytest.raises(ArgumentError, match=r"^Graph\(\) takes a GraphDoc"):
            Graph(bad)  # type: ignore[arg-type]
    # Executor(42) was built without a word and failed at the first run
    with pytest.raises(ArgumentError, match=r"^Executor\(\) takes"):
        Executor(42)  # type: ignore[arg-type]
    assert Executor(ROOT / "graphs" / "self_consistency.yaml").graph.name


def test_backends_cache_and_trace_of_the_wrong_type_are_named() -> None:
    with pytest.raises(ArgumentError, match=r"^backends must be a dict"):
        Graph.from_dict(DATA, backends=[scripted()])
    with pytest.raises(ArgumentError, match=r"^backends\['m'\] must be a Backend, not str$"):
        Graph.from_dict(DATA, backends={"m": "gpt-4o"})
    with pytest.raises(ArgumentError, match=r"^cache must be"):
        Graph.from_dict(DATA, cache=3)
    with pytest.raises(ArgumentError, match=r"^trace must be"):
        Graph.from_dict(DATA, trace=3)
    with pytest.raises(ArgumentError, match=r"^otel must be True, False or None, not str$"):
        Graph.from_dict(DATA, otel="yes")  # type: ignore[arg-type]


def test_a_misspelt_backend_name_is_refused_not_ignored() -> None:
    """``backends={"M": mock}`` left the declared backend (a billed remote model, say) in
    place without a word."""
    with pytest.raises(ArgumentError, match=r"^backends\['M'\]: the graph declares no model "
                                            r"of that name \(models: m\)$"):
        Graph.from_dict(DATA, backends={"M": scripted()})
    with pytest.raises(ArgumentError, match="declares no model"):
        Executor(load_graph(ROOT / "graphs" / "self_consistency.yaml"),
                 backends={"nope": scripted()})


# ------------------------------------------------------------------------ cancellation


async def test_a_failing_on_result_stops_the_other_queries() -> None:
    """``arun_many`` raised the callback's error while the other workers went on running
    (and calling the backend) unseen."""
    b = ScriptedBackend(lambda req, i: "Answer: 4",
                        latency=lambda req, i: 0.0 if req.messages[-1].content.endswith("fast")
                        else 30.0)
    g = Graph.from_dict(DATA, backends={"m": b})

    def on_result(res: Any) -> None:
        raise RuntimeError("the app's callback broke")

    with pytest.raises(RuntimeError, match="callback broke"):
        await asyncio.wait_for(g.arun_many(["q fast", "q slow", "q slow2"], concurrency=2,
                                           on_result=on_result), 10)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert b.cancelled >= 1


async def test_wait_for_timeout_cancels_the_run_and_leaves_no_task() -> None:
    b = scripted(latency=30.0)
    g = Graph.from_dict(DATA, backends={"m": b})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(g.arun("q"), 0.1)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert b.cancelled == 3


def test_cancelled_remote_run_warns_nothing(tmp_path: Path) -> None:
    """A real aiohttp client cancelled mid-request: no 'Unclosed client session', no 'Task
    was destroyed but it is pending' (in a subprocess: those appear at interpreter exit)."""
    with serve_fault_server(FaultConfig(latency_ms=3000)) as url:
        script = textwrap.dedent(f"""
            import asyncio, warnings
            warnings.simplefilter("always")
            from tts_graph import Graph
            g = Graph.from_string(
                "version: 1\\nname: c\\nmodels: {{m: {{backend: openai, model: fault, "
                "api_base: '{url}/v1'}}}}\\nnodes:\\n  s: {{role: solver, model: m}}\\n"
                "output: s\\n")
            async def main():
                try:
                    await asyncio.wait_for(g.arun("q"), 0.3)
                except TimeoutError:
                    print("timed out")
                async with g.astream("q") as s:
                    async for _ in s:
                        break
            asyncio.run(main())
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "timed out" and out.stderr == ""


class Gated(Backend):
    """Streams words, each after ``gate`` opens; counts cancellations."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.cancelled = 0
        self._info = ModelInfo(identity="scripted:gated")

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        raise AssertionError("the output step streams")

    async def stream(self, request: GenerationRequest, on_text: Any) -> list[Completion]:
        try:
            for i, w in enumerate(["Two", "and", "two.", "Answer:", "4"]):
                await self.gate.wait()
                self.gate.clear()
                on_text(w if i == 0 else " " + w)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [Completion(text="Two and two. Answer: 4", prompt_tokens=3, completion_tokens=5)]


def gated_graph(gate: asyncio.Event) -> tuple[Graph, Gated]:
    b = Gated(gate)
    g = Graph.from_string("version: 1\nname: s\nmodels: {m: {backend: litellm, model: openai/x}}"
                          "\nnodes:\n  solve: {role: solver, model: m}\noutput: solve\n",
                          backends={"m": b})
    return g, b


async def test_a_stream_left_by_break_without_async_with_cancels_its_run() -> None:
    """``async for piece in graph.astream(q): break`` closes nothing (an async iterator is not
    closed on break): the run went on, unseen and billed, until the loop ended."""
    gate = asyncio.Event()
    g, b = gated_graph(gate)
    gate.set()
    pieces = []
    async for piece in g.astream("q"):
        pieces.append(piece)
        break
    gc.collect()
    for _ in range(20):  # the cancelled run unwinds in a few loop turns
        await asyncio.sleep(0)
    assert pieces == ["Two"] and b.cancelled == 1
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_closed_stream_ends_instead_of_raising_cancelled() -> None:
    """Iterating a stream after ``aclose`` raised ``CancelledError`` into the caller, which
    asyncio reads as the caller itself being cancelled."""
    gate = asyncio.Event()
    g, b = gated_graph(gate)
    gate.set()
    stream = g.astream("q")
    assert await stream.__anext__() == "Two"
    await stream.aclose()
    assert [p async for p in stream] == [] and stream.result is None
    assert b.cancelled == 1


# ------------------------------------------------------------------------- QueryResult


def test_query_result_repr_is_short_json_and_pickle_keep_everything() -> None:
    """The dataclass repr held the whole question, every step and call: 2 MB in a log line."""
    g = Graph.from_dict(DATA, backends={"m": scripted()})
    question = "x" * 2_000_000
    r = g.run(question)
    text = repr(r)
    assert len(text) < 500 and "'4'" in text and "2,000,000 chars" in text
    back = json.loads(json.dumps(r.to_dict()))
    assert back["question"] == question and back["answer"] == "4"
    again = pickle.loads(pickle.dumps(r))
    assert again.answer == "4" and again.usage == r.usage and again.to_dict() == r.to_dict()


def test_the_api_key_is_in_no_result_repr_or_message(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-hardening-secret-4242"
    monkeypatch.setenv("HARDENING_KEY", key)
    with serve_fault_server(FaultConfig(faults={"server_error": 1.0})) as url:
        for base in (f"{url}/v1", f"{url}/v1?key={key}"):
            g = Graph.from_string(
                f"version: 1\nname: k\nmodels: {{m: {{backend: openai, model: fault, "
                f"api_base: '{base}', api_key_env: HARDENING_KEY, max_retries: 0}}}}\n"
                "nodes:\n  s: {role: solver, model: m}\noutput: s\n")
            r = g.run("q")
            assert r.status == "error" and r.error
            blob = repr(r) + json.dumps(r.to_dict()) + repr(pickle.dumps(r)) + repr(g)
            assert key not in blob


def test_load_graph_still_takes_a_path_object() -> None:
    assert load_graph(ROOT / "graphs" / "self_consistency.yaml").spec.name


SIM = """version: 1
name: sim-api
models:
  s: {backend: sim, model: llama-8b}
defaults: {max_tokens: 2048, temperature: 0.7}
nodes:
  solve: {role: solver, model: s, samples: 3}
  vote: {role: vote, inputs: [solve]}
output: vote
"""
SIM_Q = "[sim:000007] Compute the value of problem 7."


def test_odd_questions_run_and_come_back_from_json() -> None:
    """``QueryResult`` had ``to_dict`` and nothing to read it back."""
    g = Graph.from_string(SIM)
    for q in (SIM_Q + " 🤖 ünïcödé \u202e", SIM_Q + "\x00tail", SIM_Q + " " + "x" * 500_000):
        r = g.run(q)
        assert r.status == "ok" and r.answer and r.question == q
        back = QueryResult.from_dict(json.loads(json.dumps(r.to_dict())))
        assert back.to_dict() == r.to_dict() and back.usage == r.usage
    with pytest.raises(ArgumentError, match=r"not a QueryResult\.to_dict\(\)"):
        QueryResult.from_dict({"answer": "4"})
    with pytest.raises(ArgumentError, match="takes a dict, not str"):
        QueryResult.from_dict("{}")  # type: ignore[arg-type]


def test_a_budget_report_comes_back_from_json() -> None:
    g = Graph.from_string(SIM + "budget: {max_tokens_per_query: 6000}\n")
    r = g.run(SIM_Q)
    assert r.budget is not None
    back = QueryResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.budget == r.budget and back.to_dict() == r.to_dict()


def test_eval_rows_serialise_and_pickle() -> None:
    r = Graph.from_string(SIM).run(SIM_Q)
    row = to_row(0, Item("sim-7", SIM_Q, "1"), r, False, "wrong")
    assert Row(**json.loads(json.dumps(asdict(row)))) == row
    assert pickle.loads(pickle.dumps(row)) == row


def test_a_graph_pickles_for_multiprocessing(tmp_path: Path) -> None:
    """``pool.map(graph.run, questions)`` failed: "cannot pickle 'weakref.ReferenceType'
    object"."""
    g = Graph.from_string(SIM, cache=tmp_path / "c.sqlite")
    first = g.run(SIM_Q)
    copy = pickle.loads(pickle.dumps(g))
    assert copy.to_dict() == g.to_dict() and copy.run(SIM_Q).usage.cached_calls == 1
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
        (child,) = pool.map(g.run, [SIM_Q])
    assert child.answer == first.answer and child.usage.cached_calls == 1


# ------------------------------------------------------------------ threads and closing


def test_two_threads_starting_at_once_create_the_backends_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both threads saw no backends yet and each created its own set."""
    made: list[int] = []

    def factory(spec: ModelSpec, base_dir: Path | None) -> Backend:
        made.append(1)
        time.sleep(0.2)  # a backend that takes a while to set up (a model loading)
        return scripted()

    # registered for this test only: validate's "known backends" line lists every name
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register_backend("hardening-slow-setup", factory)
    g = Graph.from_dict({**DATA, "models": {"m": {"backend": "hardening-slow-setup",
                                                  "model": "x"}}})
    out: list[str | None] = []
    threads = [threading.Thread(target=lambda: out.append(g.run("q").answer))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == ["4", "4"] and len(made) == 1


async def test_blocking_runs_from_a_running_loop_and_from_two_threads() -> None:
    g = Graph.from_string(SIM)
    inside = g.run(SIM_Q)  # a notebook cell: blocking inside a running loop
    both = await asyncio.gather(*(asyncio.to_thread(g.run_many, [SIM_Q] * 4)
                                  for _ in range(2)))
    assert inside.status == "ok"
    assert [r.answer for rs in both for r in rs] == [inside.answer] * 8


async def test_a_closed_graph_refuses_to_run_and_closes_once() -> None:
    """A graph used after ``aclose`` quietly opened a new HTTP session."""
    with serve_fault_server(FaultConfig()) as url:
        g = Graph.from_string(
            f"version: 1\nname: oa\nmodels: {{m: {{backend: openai, model: fault, "
            f"api_base: '{url}/v1'}}}}\nnodes:\n  s: {{role: solver, model: m}}\noutput: s\n")
        assert (await g.arun("q")).status == "ok"
        backend = g.executor.bindings()["m"].backend
        assert backend._sessions  # type: ignore[attr-defined]
        await g.aclose()
        await g.aclose()  # again: nothing
        assert g.closed and "closed" in repr(g)
        assert not backend._sessions  # type: ignore[attr-defined]
        for call in (lambda: g.run("q"), lambda: g.run_many(["q"]), lambda: g.astream("q")):
            with pytest.raises(ClosedError, match=r"^graph 'oa' is closed"):
                call()
        with pytest.raises(ClosedError):
            await g.arun("q")
        with pytest.raises(ClosedError):
            await g.arun_many(["q"])
        # a context manager, sync and async
        async with Graph.from_string(SIM) as a:
            assert (await a.arun(SIM_Q)).status == "ok"
        with Graph.from_string(SIM) as s:
            assert s.run(SIM_Q).status == "ok"
        assert a.closed and s.closed


# -------------------------------------------------------------------- the package's names
def test_every_exported_name_loads_from_the_package() -> None:
    """The package's names load on first use (a table, for the CLI's quick start): a name in
    ``__all__`` the table lacks fails only when an app asks for it (``ArgumentError`` came in
    beside that table on another branch). A fresh interpreter: nothing cached by this one."""
    code = textwrap.dedent("""
        import importlib, tts_graph
        from tts_graph import *
        for name in tts_graph.__all__:
            value = getattr(tts_graph, name)
            module = importlib.import_module(value.__module__)
            assert getattr(module, name) is value is globals()[name], name
        print(*tts_graph.__all__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert {"ArgumentError", "ClosedError", "Graph"} <= set(proc.stdout.split())
