"""Token streaming of a graph's answer: ``TextStream``, the executor's choice of what streams,
retries and the cache, ``Graph.astream``, the backends' ``stream`` (llama.cpp for real, vLLM
through a fake engine). The server's SSE side is in test_server.py, litellm over a real wire in
test_wire.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tts_graph import Graph
from tts_graph.backends.base import Backend, GenerationRequest, ModelInfo
from tts_graph.backends.local import _TextTap, _utf8_complete
from tts_graph.errors import TransientBackendError
from tts_graph.streaming import TextStream
from tts_graph.types import Completion, Message

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- TextStream


def collect() -> tuple[TextStream, list[str]]:
    got: list[str] = []
    return TextStream(got.append), got


def test_text_stream_passes_pieces_and_sends_the_rest_at_the_end() -> None:
    s, got = collect()
    s.begin()
    for p in ["The ", "answer ", "is"]:
        s(p)
    s.finish("The answer is 4.")
    assert got == ["The ", "answer ", "is", " 4."]
    assert s.sent == "The answer is 4." and not s.diverged


def test_text_stream_sends_a_whole_answer_when_nothing_streamed() -> None:
    s, got = collect()
    s.finish("Answer: 4")
    s.finish("again")  # once only
    s("late piece")
    assert got == ["Answer: 4"]


def test_a_retried_attempt_does_not_repeat_what_was_sent() -> None:
    s, got = collect()
    s.begin()
    s("Hello ")
    s("wor")  # the connection drops here; the call is retried from the start
    s.begin()
    s("Hel")
    s("lo world")
    s("!")
    s.finish("Hello world!")
    assert "".join(got) == "Hello world!" and got[-2:] == ["ld", "!"]


def test_a_departing_attempt_stops_the_stream_and_says_so() -> None:
    s, got = collect()
    s.begin()
    s("Hello wor")
    s.begin()
    s("Goodbye")
    s.finish("Goodbye")
    assert got == ["Hello wor"] and s.diverged


# ------------------------------------------------------------------- executor and Graph


class Streaming(Backend):
    """Streams ``text`` word by word; each word waits for ``gate`` when one is given, so a test
    can see pieces arrive while the call is still running."""

    def __init__(self, text: str = "Two and two make four.\nAnswer: 4", *,
                 fail_after: int | None = None, gate: asyncio.Event | None = None) -> None:
        self.text = text
        self.fail_after = fail_after
        self.gate = gate
        self.streams = 0
        self.generates = 0
        self.cancelled = 0
        self._info = ModelInfo(identity="scripted:streaming")

    @property
    def info(self) -> ModelInfo:
        return self._info

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        self.generates += 1
        return [self._completion(f"{self.text} #{request.seed + i}") for i in range(request.n)]

    def _completion(self, text: str) -> Completion:
        return Completion(text=text, prompt_tokens=5, completion_tokens=len(text.split()))

    async def stream(self, request: GenerationRequest, on_text: Any) -> list[Completion]:
        self.streams += 1
        text = f"{self.text} #{request.seed}"
        words = text.split(" ")
        try:
            for i, w in enumerate(words):
                if self.fail_after is not None and i == self.fail_after:
                    self.fail_after = None  # the retry gets through
                    raise TransientBackendError("connection reset", kind="connection")
                if self.gate is not None:
                    await self.gate.wait()
                    self.gate.clear()
                on_text(w if i == 0 else " " + w)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [self._completion(text)]


def graph(nodes: str, output: str, **kw: Any) -> Graph:
    return Graph.from_string(
        "version: 1\nname: s\nmodels: {m: {backend: litellm, model: openai/x}}\n"
        f"defaults: {{max_tokens: 64, seed: 3}}\nnodes:\n{nodes}output: {output}\n", **kw)


SINGLE = "  solve: {role: solver, model: m}\n"


async def run_stream(g: Graph, q: str = "What is 2 + 2?") -> tuple[list[str], Any]:
    pieces: list[str] = []
    async with g.astream(q) as s:
        async for p in s:
            pieces.append(p)
    return pieces, s.result


async def test_a_single_sample_solver_streams_word_by_word() -> None:
    b = Streaming()
    pieces, result = await run_stream(graph(SINGLE, "solve", backends={"m": b}))
    assert result.status == "ok"
    assert "".join(pieces) == result.text == "Two and two make four.\nAnswer: 4 #3"
    assert len(pieces) == len(result.text.split(" ")) and b.streams == 1 and b.generates == 0
    assert result.answer == "4"


async def test_pieces_arrive_while_the_model_is_still_decoding() -> None:
    gate = asyncio.Event()
    b = Streaming(gate=gate)
    stream = graph(SINGLE, "solve", backends={"m": b}).astream("q")
    gate.set()
    first = await asyncio.wait_for(stream.__anext__(), 5)
    assert first == "Two" and stream.result is None  # the call has not finished
    rest = []
    while True:
        gate.set()
        try:
            rest.append(await asyncio.wait_for(stream.__anext__(), 5))
        except StopAsyncIteration:
            break
    assert first + "".join(rest) == stream.result.text


async def test_outputs_that_are_not_one_completion_come_whole_at_the_end() -> None:
    b = Streaming()
    vote = ("  solve: {role: solver, model: m, samples: 3}\n"
            "  vote: {role: vote, inputs: [solve]}\n")
    pieces, result = await run_stream(graph(vote, "vote", backends={"m": b}))
    assert pieces == [result.text] and b.streams == 0
    judge = ("  solve: {role: solver, model: m, samples: 2}\n"
             "  pick: {role: judge, model: m, inputs: [solve]}\n")
    pieces, result = await run_stream(graph(judge, "pick", backends={"m": b}))
    assert pieces == [result.text] and b.streams == 0
    many = "  solve: {role: solver, model: m, samples: 2}\n"
    pieces, result = await run_stream(graph(many, "solve", backends={"m": b}))
    assert pieces == [result.text] and b.streams == 0


async def test_a_fuser_output_streams_after_its_inputs_ran() -> None:
    b = Streaming()
    fuse = ("  solve: {role: solver, model: m, samples: 2}\n"
            "  fuse: {role: fuser, model: m, inputs: [solve]}\n")
    pieces, result = await run_stream(graph(fuse, "fuse", backends={"m": b}))
    assert len(pieces) > 1 and "".join(pieces) == result.text
    assert b.generates == 1 and b.streams == 1  # the samples are not streamed, the fuser is


async def test_a_retried_stream_is_seamless(tmp_path: Path) -> None:
    b = Streaming(fail_after=3)
    g = Graph.from_string(
        "version: 1\nname: s\nmodels: {m: {backend: litellm, model: openai/x, max_retries: 2}}"
        "\ndefaults: {max_tokens: 64, seed: 3}\nnodes:\n" + SINGLE + "output: solve\n",
        backends={"m": b})
    pieces, result = await run_stream(g)
    assert result.status == "ok" and b.streams == 2
    assert "".join(pieces) == result.text
    assert result.calls[0].retries == 1


async def test_a_cached_answer_replays_whole_and_identical(tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    b = Streaming()
    live, first = await run_stream(graph(SINGLE, "solve", backends={"m": b}, cache=cache))
    again, second = await run_stream(graph(SINGLE, "solve", backends={"m": b}, cache=cache))
    assert b.streams == 1  # the second run was answered from the cache
    assert again == [first.text] and "".join(live) == second.text == first.text
    assert second.usage.cached_calls == 1
    # and an unstreamed run of the same graph hits the same cache entry
    plain = await graph(SINGLE, "solve", backends={"m": b}, cache=cache).arun("What is 2 + 2?")
    assert plain.text == first.text and b.generates == 0


async def test_an_infrastructure_error_sends_no_answer_text() -> None:
    class Down(Streaming):
        async def stream(self, request: GenerationRequest, on_text: Any) -> list[Completion]:
            on_text("Partial")
            raise TransientBackendError("503", kind="server")

    g = Graph.from_string(
        "version: 1\nname: s\nmodels: {m: {backend: litellm, model: openai/x, max_retries: 1}}"
        "\ndefaults: {max_tokens: 64}\nnodes:\n" + SINGLE + "output: solve\n",
        backends={"m": Down()})
    pieces, result = await run_stream(g)
    assert result.status == "error" and pieces == ["Partial"]


async def test_leaving_the_stream_early_cancels_the_run() -> None:
    gate = asyncio.Event()
    b = Streaming(gate=gate)
    gate.set()
    async with graph(SINGLE, "solve", backends={"m": b}).astream("q") as s:
        async for _ in s:
            break  # the next word waits for the gate, which never opens
    assert b.cancelled == 1 and s.result is None


async def test_arun_with_on_text_and_tracing(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    got: list[str] = []
    g = graph(SINGLE, "solve", backends={"m": Streaming()}, trace=trace)
    result = await g.arun("q", on_text=got.append)
    assert "".join(got) == result.text and len(got) > 1
    assert trace.read_text().count("\n") == 1  # traced like any run


# ----------------------------------------------------------------- llama.cpp: the tap


class FakeLlm:
    """``detokenize`` of token ids that stand for fixed byte strings."""

    def __init__(self, table: dict[int, bytes]) -> None:
        self.table = table

    def detokenize(self, ids: list[int], prev_tokens: list[int] | None = None) -> bytes:
        return b"".join(self.table[i] for i in ids)


def tap_run(table: dict[int, bytes], seq: list[int], stops: list[str]) -> list[str]:
    got: list[str] = []
    prompt = [0]
    tap = _TextTap(FakeLlm({0: b"", **table}), prompt, stops, got.append)
    for k in range(1, len(seq) + 1):
        assert tap(prompt + seq[:k], None) is False  # it never stops generation
    return got


def test_tap_holds_back_a_character_split_across_tokens() -> None:
    euro = "€".encode()  # 3 bytes
    table = {1: b"costs ", 2: euro[:2], 3: euro[2:] + b"5"}
    got = tap_run(table, [1, 2, 3], [])
    assert got == ["costs ", "€5"]
    assert _utf8_complete(b"ab" + euro[:1]) == 2 and _utf8_complete(b"ab" + euro) == 5


def test_tap_holds_back_what_may_be_a_stop_string() -> None:
    table = {1: b"Answer: 8", 2: b"\n", 3: b"Que", 4: b"stion:"}
    got = tap_run(table, [1, 2, 3, 4], ["\nQuestion:"])
    assert got == ["Answer: 8"]  # the stop string's start was never sent
    table = {1: b"a\n", 2: b"b"}
    assert tap_run(table, [1, 2], ["\n\n"]) == ["a", "\nb"]  # a false alarm goes out later


# -------------------------------------------------------------- llama.cpp: real weights


@pytest.mark.model
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
async def test_local_stream_is_the_same_completion_as_generate(model: str) -> None:
    from tts_graph.backends.registry import create_backend
    from tts_graph.spec import ModelSpec

    backend = create_backend(ModelSpec(backend="local", model=model, options={"instances": 1}))
    req = GenerationRequest((Message("user", "Tom has 3 apples and buys 5 more. How many "
                                     "apples does he have? Explain."),),
                            max_tokens=48, temperature=0.9, seed=11)
    pieces: list[str] = []
    streamed = await backend.stream(req, pieces.append)
    await asyncio.sleep(0.05)  # pieces are handed over through the event loop
    plain = await backend.generate(req)
    assert streamed == plain  # text, token counts, finish reason
    assert len(pieces) > 3
    joined = "".join(pieces)
    assert plain[0].text.startswith(joined) and len(joined) >= len(plain[0].text) - 16


@pytest.mark.model
async def test_embedded_graph_streams_and_matches_an_unstreamed_run() -> None:
    g = Graph.from_yaml(ROOT / "graphs" / "single.yaml")
    pieces, result = await run_stream(g, "What is 9 + 6?")
    plain = await g.arun("What is 9 + 6?")
    assert len(pieces) > 3 and "".join(pieces) == result.text == plain.text
    assert result.usage.completion_tokens == plain.usage.completion_tokens > 0
