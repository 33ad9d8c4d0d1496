"""Tracing: JSONL trace lines per call (Python API, run and eval), concurrent appends, the
`tts-graph trace` summary, OpenTelemetry spans, and no secret in any trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tts_graph import Graph
from tts_graph.errors import TTSGraphError
from tts_graph.executor import QueryResult
from tts_graph.tracing import (
    TraceFileError,
    Tracer,
    redact,
    summarize_trace,
    trace_lines,
)
from tts_graph.usage import CallRecord

ROOT = Path(__file__).resolve().parent.parent

SCRIPTED = """\
version: 1
name: traced
models:
  m: {backend: scripted, model: fake, options: {answers: ["Answer: 4", "Answer: 4", "Answer: 5"]}}
  j: {backend: scripted, model: judge, price: {input_per_mtok: 1.0, output_per_mtok: 2.0},
      options: {answers: ["Best: 1"], latency_s: 0.01}}
nodes:
  solve: {role: solver, model: m, samples: 3}
  judge: {role: judge, model: j, inputs: [solve]}
output: judge
"""
FIELDS = {"v", "ts", "run", "graph", "query", "query_status", "query_latency_s", "step", "node",
          "model", "model_id", "samples", "prompt_tokens", "completion_tokens", "latency_s",
          "start_s", "cost_usd", "flops", "cached", "retries", "error"}


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(SCRIPTED)
    return p


# --------------------------------------------------------------------------- Python API


def test_graph_trace_writes_one_line_per_call(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    graph = Graph.from_string(SCRIPTED, trace=trace)
    results = graph.run_many([f"q{i}" for i in range(6)], concurrency=3)
    lines = read(trace)
    assert len(lines) == sum(len(r.calls) for r in results) == 12
    assert all(set(x) == FIELDS for x in lines)
    assert {x["run"] for x in lines} == {graph.tracer.run_id}  # type: ignore[union-attr]
    for r in results:  # each query's lines carry exactly its call records
        mine = [x for x in lines if x["query"] == r.id]
        assert [(x["step"], x["model"], x["prompt_tokens"], x["completion_tokens"],
                 x["cost_usd"], x["cached"], x["error"]) for x in mine] == [
            (c.step, c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cached,
             c.error) for c in r.calls]
        assert all(x["query_status"] == "ok" for x in mine)
    judge = [x for x in lines if x["node"] == "judge"]
    assert all(x["model_id"] == "judge" and x["cost_usd"] > 0 for x in judge)
    assert all(x["latency_s"] >= 0.009 for x in judge)
    assert lines[0]["ts"].endswith("Z") and lines[0]["ts"][:2] == "20"


async def test_arun_and_arun_many_are_traced_too(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    graph = Graph.from_string(SCRIPTED, trace=str(trace))
    await graph.arun("one")
    seen: list[QueryResult] = []
    await graph.arun_many(["a", "b"], concurrency=2, on_result=seen.append)
    assert len(seen) == 2
    assert len(read(trace)) == 3 * 2


def test_no_tracer_without_trace_or_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTS_GRAPH_OTEL", raising=False)
    assert Graph.from_string(SCRIPTED).tracer is None


def test_cache_hits_and_the_query_status_are_in_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    for _ in range(2):
        Graph.from_string(SCRIPTED, trace=trace, cache=tmp_path / "c.sqlite").run("q")
    lines = read(trace)
    runs = sorted({x["run"] for x in lines}, key=[x["run"] for x in lines].index)
    assert len(runs) == 2
    assert not any(x["cached"] for x in lines if x["run"] == runs[0])
    assert all(x["cached"] for x in lines if x["run"] == runs[1])
    s = summarize_trace(trace)
    assert s["runs"] == 2 and s["queries"] == 2
    assert s["total"]["cache_hits"] == 2 and s["total"]["calls"] == 4
    # cached calls are not billed
    assert s["total"]["billed_usd"] == pytest.approx(s["total"]["cost_usd"] / 2)


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    """Two processes and several threads append big blocks (200 calls a query) at once."""
    trace = tmp_path / "t.jsonl"
    script = textwrap.dedent(f"""
        import sys, threading
        from tts_graph.executor import QueryResult
        from tts_graph.tracing import Tracer
        from tts_graph.usage import CallRecord
        tracer = Tracer({str(trace)!r}, otel=False)
        def work(t):
            for q in range(15):
                calls = [CallRecord(step="s", node="n", model="m" + sys.argv[1], samples=1,
                                    prompt_tokens=i, error="x" * 300) for i in range(200)]
                tracer.record(QueryResult(question="q", answer="1", text="1", status="ok",
                                          graph="g", calls=calls, id=f"{{t}}-{{q}}"))
        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=ROOT)
             for i in range(2)]
    assert all(p.wait(120) == 0 for p in procs)
    lines = read(trace)  # every line parses
    assert len(lines) == 2 * 3 * 15 * 200
    # each query's 200 lines are contiguous and in order
    for start in range(0, len(lines), 200):
        block = lines[start:start + 200]
        assert len({(x["model"], x["query"]) for x in block}) == 1
        assert [x["prompt_tokens"] for x in block] == list(range(200))


def test_unwritable_trace_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(TTSGraphError, match="cannot write the trace"):
        Tracer(tmp_path / "f" / "t.jsonl")


# ------------------------------------------------------------------------------- CLI


def test_run_trace_and_the_summary(tmp_path: Path, graph_file: Path) -> None:
    trace = tmp_path / "t.jsonl"
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(4)))
    assert cli("run", str(graph_file), "-q", "2+2?", "--trace", str(trace)).returncode == 0
    assert cli("run", str(graph_file), "--input", str(questions), "--trace",
               str(trace)).returncode == 0
    lines = read(trace)
    assert len(lines) == 5 * 2
    proc = cli("trace", str(trace), "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["queries"] == 5 and s["runs"] == 2
    assert s["total"]["calls"] == 10 and s["total"]["errors"] == 0
    assert set(s["by_node"]) == {"solve", "judge"} and set(s["by_model"]) == {"m", "j"}
    assert s["by_model"]["j"]["cost_usd"] == pytest.approx(sum(
        x["cost_usd"] for x in lines if x["model"] == "j"))
    assert s["by_node"]["solve"]["samples"] == 15
    lat = s["by_node"]["judge"]["latency_s"]
    assert 0.009 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    text = cli("trace", str(trace))
    assert text.returncode == 0
    assert "5 queries (5 ok) in 2 run(s)" in text.stdout
    assert "10 calls (0 from the cache, 0 errors, 0 retries)" in text.stdout
    assert "judge" in text.stdout and "p50/p90/p99" in text.stdout


def test_eval_trace(tmp_path: Path, graph_file: Path) -> None:
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{i}?", "answer": "4"})
                            + "\n" for i in range(5)))
    trace = tmp_path / "t.jsonl"
    proc = cli("eval", str(graph_file), "--task", str(task), "--out", str(tmp_path / "run"),
               "--no-cache", "--trace", str(trace), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = read(trace)
    assert sorted({x["query"] for x in lines}) == [f"q{i}" for i in range(5)]
    assert len(lines) == 10


def test_malformed_trace_is_a_one_line_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    Graph.from_string(SCRIPTED, trace=trace).run("q")
    with trace.open("a") as fh:
        fh.write("{not json\n")
    proc = cli("trace", str(trace))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{trace}:3: not a trace line: invalid JSON: Expecting " \
                                  "property name enclosed in double quotes"
    # a last line cut short by a killed writer is skipped, not an error
    trace.write_text(trace.read_text().replace("{not json\n", '{"v": 1, "st'))
    assert summarize_trace(trace)["total"]["calls"] == 2
    with pytest.raises(TraceFileError, match="cannot read"):
        summarize_trace(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------ secrets


def test_redact_removes_known_values_and_key_shapes() -> None:
    text = ("401 Incorrect API key provided: sk-proj-abcdefghijklmnop; headers "
            "{'Authorization': 'Bearer tok_1234567890abcdef'} api_key=hunter2hunter2 "
            "my-own-secret-value AKIAABCDEFGHIJKLMNOP")
    out = redact(text, ["my-own-secret-value"])
    assert out is not None
    for secret in ("sk-proj-abcdefghijklmnop", "tok_1234567890abcdef", "hunter2hunter2",
                   "my-own-secret-value", "AKIAABCDEFGHIJKLMNOP"):
        assert secret not in out
    assert "Incorrect API key provided: ***" in out
    assert redact(None) is None


def test_trace_lines_redact_the_graph_keys(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("TTS_TEST_KEY", "plain-looking-value-42")
    g = Graph.from_string(SCRIPTED.replace(
        "m: {backend: scripted, model: fake,",
        "m: {backend: scripted, model: fake, api_key_env: TTS_TEST_KEY,"))
    res = QueryResult(question="q", answer=None, text=None, status="error", graph="traced",
                      calls=[CallRecord(step="solve", node="solve", model="m", samples=1,
                                        error="server said: plain-looking-value-42")])
    [line] = trace_lines(res, graph=g.compiled)  # nothing known: a plain value stays
    assert line["error"] == "server said: plain-looking-value-42"
    # a tracer shared by graphs redacts the keys of the graph each query belongs to
    tracer = Tracer(tmp_path / "t.jsonl")
    tracer.record(res, graph=g.compiled)
    assert read(tmp_path / "t.jsonl")[0]["error"] == "server said: ***"


def test_one_tracer_shared_by_two_graphs(tmp_path: Path) -> None:
    tracer = Tracer(tmp_path / "t.jsonl", otel=False)
    a = Graph.from_string(SCRIPTED, trace=tracer)
    b = Graph.from_string(SCRIPTED.replace("name: traced", "name: other")
                          .replace("model: judge", "model: judge-2"), trace=tracer)
    a.run("q")
    b.run("q")
    lines = read(tmp_path / "t.jsonl")
    assert [x["graph"] for x in lines] == ["traced"] * 2 + ["other"] * 2
    assert {x["model_id"] for x in lines if x["graph"] == "other"} == {"fake", "judge-2"}
    s = summarize_trace(tmp_path / "t.jsonl")
    assert set(s["by_node"]) == {"traced:solve", "traced:judge", "other:solve", "other:judge"}
    assert set(s["by_graph"]) == {"traced", "other"}


class _EchoKey:
    """An OpenAI-compatible endpoint that rejects every request with a 401 whose message
    echoes the API key it was sent (as some providers do)."""

    def __init__(self) -> None:
        self.echoed: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        key = auth.removeprefix("Bearer ")
        self.echoed.append(key)
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. "
                                                f"(header was '{auth}')",
                                     "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("backend_redacts", [True, False],
                         ids=["as-shipped", "backend-forgets-to-redact"])
def test_no_api_key_in_traces_or_spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       spans_if_installed: Any, backend_redacts: bool
                                       ) -> None:
    """A litellm-backed graph whose key comes from api_key_env, against a loopback server
    that echoes the key in its error: neither the trace file nor the spans hold it."""
    spans = spans_if_installed
    from tts_graph.backends import litellm_backend
    from tts_graph.testing import fault_server

    key = "tts-test-" + os.urandom(12).hex()  # not sk-shaped: only the value itself is known
    monkeypatch.setenv("TTS_TRACE_TEST_KEY", key)
    echo = _EchoKey()
    monkeypatch.setattr(fault_server, "FaultApp", lambda config=None: echo)
    if not backend_redacts:  # the tracer must hold even if a backend leaks the key
        original = litellm_backend.classify
        monkeypatch.setattr(litellm_backend, "classify",
                            lambda exc, litellm, redact=None: original(exc, litellm, None))
    trace = tmp_path / "t.jsonl"
    with fault_server.serve_fault_server() as url:
        graph = Graph.from_string(textwrap.dedent(f"""
            version: 1
            name: keyed
            models:
              remote: {{backend: litellm, model: openai/gpt-4o-mini, api_base: "{url}/v1",
                        api_key_env: TTS_TRACE_TEST_KEY, max_retries: 0, timeout_s: 10}}
            nodes:
              solve: {{role: solver, model: remote, samples: 2}}
            output: solve
        """), trace=trace, otel=spans is not None)
        res = graph.run("What is 2 + 2?")
    assert res.status == "error"
    assert echo.echoed and all(k == key for k in echo.echoed)  # the server did echo it
    errors = [c.error for c in res.calls if c.error]
    assert errors and all("Incorrect API key provided" in e for e in errors)
    text = trace.read_text()
    assert "Incorrect API key provided: ***" in text
    assert key not in text and key[9:] not in text
    if spans is None:
        return  # without the otel extra there are no spans to check
    finished = spans.get_finished_spans()
    assert finished, "no span was emitted"
    dumped = json.dumps([{"name": s.name, "attributes": dict(s.attributes or {}),
                          "status": s.status.description,
                          "events": [dict(e.attributes or {}) for e in s.events]}
                         for s in finished], default=str)
    assert "Incorrect API key provided: ***" in dumped
    assert key not in dumped and key[9:] not in dumped


# ------------------------------------------------------------------------- OpenTelemetry


_EXPORTER: Any = None


@pytest.fixture
def spans() -> Any:
    """The SDK's in-memory exporter on the global tracer provider (both set up once per
    process), emptied for each test. Skips without the ``otel`` extra."""
    pytest.importorskip("opentelemetry.sdk")
    return _exporter()


@pytest.fixture
def spans_if_installed() -> Any:
    """The exporter, or None without the ``otel`` extra (the test then checks the file)."""
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        return None
    return _exporter()


def _exporter() -> Any:
    global _EXPORTER
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _EXPORTER is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        _EXPORTER = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    _EXPORTER.clear()
    return _EXPORTER


def test_otel_spans_per_query_step_and_call(spans: Any) -> None:
    graph = Graph.from_string(SCRIPTED.replace("solve: {role: solver, model: m, samples: 3}",
                                               "solve: {role: solver, model: m, samples: 3}\n"
                                               "  vote: {role: vote, inputs: [solve]}"
                                               ).replace("inputs: [solve]}\noutput",
                                                         "inputs: [solve, vote]}\noutput"),
                              otel=True)
    results = graph.run_many(["a", "b"], concurrency=2)
    got = spans.get_finished_spans()
    queries = [s for s in got if s.name == "tts_graph.query traced"]
    assert len(queries) == 2
    for q, r in zip(sorted(queries, key=lambda s: s.attributes["tts.query_id"]), results,
                    strict=True):
        a = q.attributes
        assert a["tts.status"] == "ok" and a["tts.calls"] == len(r.calls)
        assert a["gen_ai.usage.output_tokens"] == r.usage.completion_tokens
        assert a["tts.cost_usd"] == pytest.approx(r.usage.cost_usd)
        steps = [s for s in got if s.parent is not None
                 and s.parent.span_id == q.context.span_id]
        assert sorted(s.attributes["tts.step"] for s in steps) == ["judge", "solve", "vote"]
        by_step = {s.attributes["tts.step"]: s for s in steps}
        # the judge starts when its inputs end; everything lies inside the query span
        assert by_step["judge"].start_time >= by_step["solve"].end_time
        for s in steps:
            assert q.start_time <= s.start_time <= s.end_time <= q.end_time
        calls = [s for s in got if s.parent is not None
                 and s.parent.span_id in {x.context.span_id for x in steps}]
        assert len(calls) == len(r.calls)
        judge_call = next(s for s in calls if s.attributes["tts.node"] == "judge")
        assert judge_call.name == "tts_graph.call j"
        assert judge_call.attributes["tts.model"] == "j"
        assert judge_call.attributes["gen_ai.request.model"] == "judge"
        assert judge_call.attributes["tts.cached"] is False
        assert judge_call.attributes["tts.cost_usd"] > 0
        assert judge_call.attributes["gen_ai.usage.input_tokens"] > 0
        assert not by_step["vote"].attributes["tts.calls"]
        # model calls and their steps are placed where they happened; the vote (no call)
        # where its input ended
        assert by_step["vote"].attributes["tts.timing"] == "reconstructed"
        assert by_step["judge"].attributes["tts.timing"] == "measured"
        assert all(c.attributes["tts.timing"] == "measured" for c in calls)
        # the judge answers after 10 ms: its span lasts that long, after the solver's calls
        assert judge_call.end_time - judge_call.start_time == pytest.approx(
            judge_call.attributes["tts.latency_s"] * 1e9, abs=1e4)
        assert judge_call.end_time - judge_call.start_time >= 0.009e9
        solve_ends = [s.end_time for s in calls if s.attributes["tts.node"] == "solve"]
        assert judge_call.start_time >= max(solve_ends)
        assert by_step["judge"].start_time == judge_call.start_time


async def test_the_query_span_is_current_while_the_graph_runs(spans: Any) -> None:
    from opentelemetry import trace

    outer_tracer = trace.get_tracer("test")
    graph = Graph.from_string(SCRIPTED, otel=True)
    with outer_tracer.start_as_current_span("request") as outer:
        await graph.arun("q")
    [query] = [s for s in spans.get_finished_spans() if s.name.startswith("tts_graph.query")]
    assert query.parent is not None and query.parent.span_id == outer.get_span_context().span_id


def test_otel_env_switches_spans_on_for_the_cli_code_path(spans: Any,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("TTS_GRAPH_OTEL", "1")
    graph = Graph.from_string(SCRIPTED)
    assert graph.tracer is not None and graph.tracer.otel and graph.tracer.path is None
    graph.run("q")
    assert any(s.name == "tts_graph.query traced" for s in spans.get_finished_spans())
    monkeypatch.setenv("TTS_GRAPH_OTEL", "0")
    assert Graph.from_string(SCRIPTED).tracer is None


def test_otel_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(TTSGraphError, match=r"pip install 'tts-graph\[otel\]'"):
        Graph.from_string(SCRIPTED, otel=True)
    monkeypatch.setenv("TTS_GRAPH_OTEL", "1")
    with pytest.warns(RuntimeWarning, match="OpenTelemetry is not installed"):
        assert Graph.from_string(SCRIPTED).tracer is None


def test_calls_record_when_they_went_out(tmp_path: Path) -> None:
    """``CallRecord.start_s``: seconds after the query started; a step's calls go out after
    the calls of the steps it reads, and every call lies within the query."""
    trace = tmp_path / "t.jsonl"
    graph = Graph.from_string(SCRIPTED.replace('["Answer: 4", "Answer: 4", "Answer: 5"]}',
                                               '["Answer: 4", "Answer: 4", "Answer: 5"], '
                                               'latency_s: 0.02}'),
                              trace=trace, otel=False)
    r = graph.run("q")
    by_node = {c.node: c for c in r.calls}
    solve, judge = by_node["solve"], by_node["judge"]
    assert solve.start_s is not None and judge.start_s is not None
    assert 0 <= solve.start_s < 0.02
    assert judge.start_s >= solve.start_s + solve.latency_s - 1e-3
    assert all(c.start_s is not None and c.start_s + c.latency_s <= r.latency_s + 1e-3
               for c in r.calls)
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert sorted(x["start_s"] for x in lines) == sorted(round(c.start_s, 6) for c in r.calls)
