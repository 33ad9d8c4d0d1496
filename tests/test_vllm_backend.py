"""The vLLM backend.

Without a GPU (here and in CI): the missing-extra error, option checks, the request →
``SamplingParams`` mapping, and the backend's own machinery (one engine request per call, the
shared engine on its own thread and loop, concurrency, cancellation → abort, load failures)
driven through a fake engine that stands in for vLLM's ``AsyncLLM``.

With CUDA and vllm (tests marked ``gpu``): a graph on a small Hugging Face model, N distinct
samples from one engine request, seeds that reproduce, cancellation, and throughput against
vLLM's own ``LLM.generate`` on the same requests (goal: >= 0.9). The model is
``TTS_GRAPH_VLLM_MODEL`` (a local directory or a hub id; default SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tts_graph import Executor, Graph, loads_graph
from tts_graph.backends import vllm_backend as vb
from tts_graph.backends import vllm_engine
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.registry import backend_names, create_backend
from tts_graph.errors import BackendError, TTSGraphError
from tts_graph.spec import ModelSpec
from tts_graph.types import Message

ROOT = Path(__file__).resolve().parent.parent
HAS_VLLM = importlib.util.find_spec("vllm") is not None
Q = (Message("user", "What is 2 + 2?"),)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


GPU = HAS_VLLM and _cuda()


# ============================================================================ no GPU needed


def test_vllm_is_a_registered_backend() -> None:
    assert "vllm" in backend_names()


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(TTSGraphError) as info:
        create_backend(ModelSpec(backend="vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert str(info.value) == vb.MISSING_EXTRA
    assert str(info.value) == ("backend 'vllm' needs the vllm extra: pip install "
                               "'tts-graph[vllm]' (CUDA GPU required)")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_cli_without_the_extra_validates_and_fails_to_run_in_one_line(tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    g.write_text("version: 1\nname: v\nmodels: {m: {backend: vllm, model: some/model}}\n"
                 "nodes: {solve: {role: solver, model: m, samples: 4}, "
                 "vote: {role: vote, inputs: [solve]}}\noutput: vote\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tts_graph", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=120, check=False)

    ok = cli("validate", str(g))
    assert ok.returncode == 0, ok.stderr
    proc = cli("run", str(g), "-q", "What is 2 + 2?")
    assert proc.returncode == 2
    assert proc.stderr.strip() == vb.MISSING_EXTRA


# ------------------------------------------------------------------------------- options


def test_options_split_into_backend_and_engine_settings() -> None:
    own, engine = vb.split_options("m", {
        "gpu_memory_utilization": 0.5, "max_model_len": 4096, "tensor_parallel_size": 2,
        "dtype": "bfloat16", "enforce_eager": True, "top_k": 20, "min_p": 0.05, "chat": True,
    })
    assert own == {"top_k": 20, "min_p": 0.05, "chat": True}
    assert engine == {"gpu_memory_utilization": 0.5, "max_model_len": 4096,
                      "tensor_parallel_size": 2, "dtype": "bfloat16", "enforce_eager": True}


def test_unknown_options_are_rejected_by_name() -> None:
    with pytest.raises(TTSGraphError) as info:
        vb.split_options("m", {"gpu_memory_utilisation": 0.5, "max_model_len": 512})
    msg = str(info.value)
    assert msg.startswith("model 'm': unknown vllm options ['gpu_memory_utilisation']; known: ")
    assert "gpu_memory_utilization" in msg and "\n" not in msg


def test_unknown_options_are_checked_before_the_missing_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    spec = ModelSpec(backend="vllm", model="m", options={"gpu_mem": 0.5})
    with pytest.raises(TTSGraphError, match=r"unknown vllm options \['gpu_mem'\]"):
        create_backend(spec)


def test_other_engine_args_fields_pass_through_when_vllm_knows_them() -> None:
    fields = {"gpu_memory_utilization", "speculative_config", "max_loras"}
    own, engine = vb.split_options("m", {"speculative_config": {"x": 1}, "top_k": 5},
                                   lambda: fields)
    assert engine == {"speculative_config": {"x": 1}} and own == {"top_k": 5}
    with pytest.raises(TTSGraphError, match=r"\['nope'\].*or any field of vllm"):
        vb.split_options("m", {"nope": 1}, lambda: fields)


@pytest.mark.parametrize(("key", "value", "expect"), [
    ("gpu_memory_utilization", 1.5, "must be a fraction in (0, 1], got 1.5"),
    ("gpu_memory_utilization", "lots", "must be a fraction in (0, 1], got 'lots'"),
    ("max_model_len", 0, "must be an integer >= 1, got 0"),
    ("max_model_len", 2048.5, "must be an integer >= 1, got 2048.5"),
    ("tensor_parallel_size", True, "must be an integer >= 1, got True"),
    ("enforce_eager", "yes", "must be true or false, got 'yes'"),
    ("dtype", 16, "must be auto, float16, bfloat16 or float32, got 16"),
    ("min_p", 2, "must be a number in [0, 1], got 2"),
    ("chat", "no", "must be true or false, got 'no'"),
])
def test_option_values_are_checked(key: str, value: Any, expect: str) -> None:
    with pytest.raises(TTSGraphError) as info:
        vb.split_options("m", {key: value})
    assert str(info.value) == f"model 'm': vllm option {key}: {expect}"


@pytest.mark.parametrize("key", ["n", "max_tokens", "temperature", "model", "stop"])
def test_settings_that_tts_graph_sets_cannot_be_options(key: str) -> None:
    with pytest.raises(TTSGraphError, match=f"vllm option {key} is set by tts-graph"):
        vb.split_options("m", {key: 1})


# --------------------------------------------------------------- request -> SamplingParams


def test_request_maps_to_one_sampling_params_for_all_samples() -> None:
    req = GenerationRequest(Q, max_tokens=256, temperature=0.6, top_p=0.9, seed=41, n=8,
                            stop=("\n\n",), sample_offset=3)
    kw = vb.sampling_kwargs(req, max_tokens=200)
    assert kw == {"n": 8, "seed": 41, "max_tokens": 200, "temperature": 0.6, "top_p": 0.9,
                  "stop": ["\n\n"]}


def test_sampling_mapping_adds_backend_settings_and_extra_stops() -> None:
    req = GenerationRequest(Q, max_tokens=16)
    kw = vb.sampling_kwargs(req, max_tokens=16, own={"top_k": 20, "min_p": 0.1, "chat": False,
                                                     "ignore_eos": True},
                            extra_stop=("\nQuestion:",))
    assert kw["top_k"] == 20 and kw["min_p"] == 0.1 and kw["ignore_eos"] is True
    assert "chat" not in kw
    assert kw["stop"] == ["\nQuestion:"]
    assert kw["max_tokens"] == 16 and kw["n"] == 1 and kw["seed"] == 0


def test_max_tokens_is_clamped_to_the_context() -> None:
    assert vb.fit_max_tokens("m", 256, 100, 2048) == 256
    assert vb.fit_max_tokens("m", 256, 2000, 2048) == 48
    with pytest.raises(BackendError, match="prompt of 2048 tokens does not fit the context "
                                           "of 2048"):
        vb.fit_max_tokens("m", 16, 2048, 2048)


def test_outputs_map_to_completions_in_sample_order() -> None:
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3, 4], outputs=[
        SimpleNamespace(index=1, text="b", token_ids=[7, 8], finish_reason="length"),
        SimpleNamespace(index=0, text="a", token_ids=[5], finish_reason=None),
    ])
    comps = vb.completions(out, 2)
    assert [c.text for c in comps] == ["a", "b"]
    assert [c.prompt_tokens for c in comps] == [4, 4]
    assert [c.completion_tokens for c in comps] == [1, 2]
    assert [c.finish_reason for c in comps] == ["stop", "length"]
    with pytest.raises(BackendError, match="returned 2 samples for n=3"):
        vb.completions(out, 3)


# ------------------------------------------------------- the machinery, on a fake engine


class FakeParams:
    """Stands in for ``SamplingParams``."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeEngine:
    """Stands in for ``AsyncLLM``: ``generate`` yields one final output after ``latency``."""

    def __init__(self, latency: float = 0.02, max_model_len: int = 4096) -> None:
        self.latency = latency
        self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.requests: list[tuple[str, Any, Any]] = []
        self.aborted: list[str] = []
        self.active = 0
        self.peak = 0
        self.loops: set[int] = set()
        self.stopped = False

    async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
        self.loops.add(id(asyncio.get_running_loop()))
        self.requests.append((request_id, prompt, params))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.latency)
            outs = [SimpleNamespace(index=i, text=f"seed {params.seed + i}. Answer: "
                                                  f"{4 if i % 4 else 5}",
                                    token_ids=list(range(3 + i)), finish_reason="stop")
                    for i in reversed(range(params.n))]
            yield SimpleNamespace(prompt_token_ids=list(prompt["prompt_token_ids"]),
                                  outputs=outs, finished=True)
        finally:
            self.active -= 1

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.stopped = True


class FakeTokenizer:
    chat_template = "{% for m in messages %}...{% endfor %}"

    def apply_chat_template(self, messages: list[dict[str, str]], *, tokenize: bool,
                            add_generation_prompt: bool) -> str:
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return ([1] if add_special_tokens else []) + [ord(c) % 97 for c in text]


class FakeApi(vb.VllmApi):
    def __init__(self, engine: FakeEngine | None = None, *, fail: str | None = None,
                 tokenizer: Any = None) -> None:
        self.key = f"fake-{uuid.uuid4().hex}"
        self.engine = engine or FakeEngine()
        self.fail = fail
        self.builds = 0
        self.tok = tokenizer or FakeTokenizer()
        self.build_threads: set[str] = set()

    def available(self) -> bool:
        return True

    def engine_fields(self) -> set[str] | None:
        return None

    def load_tokenizer(self, model: str, engine: Any) -> Any:
        return self.tok

    def build_engine(self, model: str, engine: Any) -> Any:
        import threading

        self.builds += 1
        self.build_threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError(self.fail)
        return self.engine

    def sampling_params(self, kwargs: Any) -> Any:
        return FakeParams(**kwargs)


@pytest.fixture
def fake_hosts() -> Iterator[None]:
    """Stop the engine threads that a test's fake engines started."""
    before = set(vllm_engine._HOSTS)
    yield
    with vllm_engine._HOSTS_LOCK:
        new = [k for k in vllm_engine._HOSTS if k not in before]
        hosts = [vllm_engine._HOSTS.pop(k) for k in new]
    for h in hosts:
        h.shutdown(timeout=5)


pytestmark_fake = pytest.mark.usefixtures("fake_hosts")


@pytestmark_fake
async def test_one_engine_request_yields_n_samples() -> None:
    api = FakeApi()
    b = vb.VllmBackend("org/model", api=api)
    req = GenerationRequest(Q, max_tokens=64, seed=100, n=8, temperature=0.7, top_p=0.95)
    comps = await b.generate(req)
    assert len(api.engine.requests) == 1
    _, prompt, params = api.engine.requests[0]
    assert (params.n, params.seed, params.max_tokens, params.temperature, params.top_p) == (
        8, 100, 64, 0.7, 0.95)
    assert [c.text.split(".")[0] for c in comps] == [f"seed {100 + i}" for i in range(8)]
    assert [c.completion_tokens for c in comps] == [3 + i for i in range(8)]
    ids = prompt["prompt_token_ids"]
    assert all(c.prompt_tokens == len(ids) == b.count_tokens(Q) for c in comps)
    assert ids == FakeTokenizer().encode("<user>What is 2 + 2?<assistant>", False)
    assert api.build_threads == {b.host.thread.name}  # loaded on the engine's own thread


@pytestmark_fake
def test_graph_solver_8_then_vote_uses_one_request() -> None:
    api = FakeApi()
    doc = loads_graph("version: 1\nname: sc\nmodels: {m: {backend: vllm, model: org/model}}\n"
                      "defaults: {max_tokens: 32, seed: 5}\n"
                      "nodes: {solve: {role: solver, model: m, samples: 8}, "
                      "vote: {role: vote, inputs: [solve]}}\noutput: vote\n")
    ex = Executor(doc, backends={"m": vb.VllmBackend("org/model", api=api)})
    result = ex.run("What is 2 + 2?")
    assert result.status == "ok", result.error
    assert len(api.engine.requests) == 1 and api.engine.requests[0][2].n == 8
    assert len(result.steps["solve"].candidates) == 8
    assert result.answer == "4"  # 6 of the 8 fake samples say 4
    assert result.usage.samples == 8 and result.usage.calls == 1


@pytestmark_fake
def test_one_engine_shared_by_every_node_and_executor_bound_to_it() -> None:
    api = FakeApi()
    a = vb.VllmBackend("org/model", options={"max_model_len": 2048}, api=api)
    b = vb.VllmBackend("org/model", options={"max_model_len": 2048, "top_k": 5}, api=api)
    c = vb.VllmBackend("org/model", options={"max_model_len": 1024}, api=api)
    assert a.host is b.host and a.host is not c.host
    assert a.info.identity != b.info.identity  # sampling settings change answers
    d = vb.VllmBackend("org/model", options={"max_model_len": 2048,
                                             "gpu_memory_utilization": 0.5}, api=api)
    assert d.info.identity == a.info.identity  # memory settings do not
    # executors run on event loops of their own; the engine stays on its thread
    doc = loads_graph("version: 1\nname: one\nmodels: {m: {backend: vllm, model: org/model}}\n"
                      "nodes: {solve: {role: solver, model: m, samples: 2}}\noutput: solve\n")
    for _ in range(2):
        assert Executor(doc, backends={"m": a}).run("What is 2 + 2?").status == "ok"
    assert Executor(doc, backends={"m": b}).run("What is 3 + 1?").status == "ok"
    time.sleep(0.05)
    assert len(api.engine.loops) == 1 and len(api.engine.requests) == 3
    assert api.builds == 3  # (2048), (1024) and (2048, memory 0.5)


@pytestmark_fake
async def test_concurrent_calls_reach_the_engine_together() -> None:
    api = FakeApi(FakeEngine(latency=0.3))
    b = vb.VllmBackend("org/model", api=api)
    reqs = [GenerationRequest((Message("user", f"q{i}"),), max_tokens=8, seed=i, n=2)
            for i in range(6)]
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(b.generate(r) for r in reqs))
    assert time.perf_counter() - t0 < 1.5  # not 6 x 0.3 s one after another
    assert api.engine.peak == 6 and b.host.peak_in_flight == 6
    assert [len(o) for o in outs] == [2] * 6


@pytestmark_fake
async def test_cancelling_the_caller_aborts_the_request_in_the_engine() -> None:
    api = FakeApi(FakeEngine(latency=30.0))
    b = vb.VllmBackend("org/model", api=api)
    task = asyncio.create_task(b.generate(GenerationRequest(Q, max_tokens=8, n=4)))
    while not api.engine.requests:
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - t0 < 1.0
    deadline = time.monotonic() + 2
    while (api.engine.active or not api.engine.aborted) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    rid = api.engine.requests[0][0]
    assert api.engine.aborted == [rid]
    assert api.engine.active == 0 and b.host.aborts == 1 and b.host.in_flight == 0
    # the engine serves the next call as usual
    api.engine.latency = 0.01
    assert len(await b.generate(GenerationRequest(Q, max_tokens=8, n=2))) == 2


@pytestmark_fake
async def test_a_cancelled_wait_for_the_load_does_not_cancel_the_load() -> None:
    import threading

    gate = threading.Event()

    class SlowApi(FakeApi):
        def build_engine(self, model: str, engine: Any) -> Any:
            gate.wait(5)
            return super().build_engine(model, engine)

    api = SlowApi()
    b = vb.VllmBackend("org/model", api=api)
    task = asyncio.create_task(b.generate(GenerationRequest(Q, max_tokens=8)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    assert len(await b.generate(GenerationRequest(Q, max_tokens=8))) == 1


@pytestmark_fake
async def test_a_failed_load_is_a_one_line_backend_error_and_is_retried_later() -> None:
    api = FakeApi(fail="CUDA out of memory.\nTried to allocate 2.00 GiB")
    b = vb.VllmBackend("org/model", api=api)
    with pytest.raises(BackendError) as info:
        await b.generate(GenerationRequest(Q, max_tokens=8))
    assert str(info.value) == ("vllm: cannot load org/model: RuntimeError: CUDA out of "
                               "memory. Tried to allocate 2.00 GiB")
    api.fail = None
    again = vb.VllmBackend("org/model", api=api)  # a new binding loads afresh
    assert again.host is not b.host
    assert len(await again.generate(GenerationRequest(Q, max_tokens=8))) == 1


@pytestmark_fake
def test_a_failed_load_is_an_infrastructure_error_of_the_node() -> None:
    api = FakeApi(fail="no GPU")
    doc = loads_graph("version: 1\nname: one\nmodels: {m: {backend: vllm, model: org/model}}\n"
                      "nodes: {solve: {role: solver, model: m}}\noutput: solve\n")
    result = Executor(doc, backends={"m": vb.VllmBackend("org/model", api=api)}).run("hi")
    assert result.status == "error"
    assert result.infra_errors == ["solve: vllm: cannot load org/model: RuntimeError: no GPU"]


@pytestmark_fake
async def test_prompt_longer_than_the_context_is_a_backend_error() -> None:
    api = FakeApi(FakeEngine(max_model_len=32))
    b = vb.VllmBackend("org/model", api=api)
    with pytest.raises(BackendError, match="does not fit the context of 32"):
        await b.generate(GenerationRequest((Message("user", "x" * 40),), max_tokens=8))
    ok = await b.generate(GenerationRequest((Message("user", "hi"),), max_tokens=100))
    assert api.engine.requests[-1][2].max_tokens == 32 - b.count_tokens(
        (Message("user", "hi"),))
    assert len(ok) == 1


@pytestmark_fake
async def test_completion_mode_for_base_models() -> None:
    from tts_graph.backends.local import COMPLETION_PREAMBLE, COMPLETION_STOP

    api = FakeApi()
    b = vb.VllmBackend("org/base", options={"chat": False}, api=api)
    req = GenerationRequest((Message("user", "What is 1 + 1?"),), max_tokens=8,
                            stop=("END",))
    await b.generate(req)
    _, prompt, params = api.engine.requests[0]
    text = COMPLETION_PREAMBLE + "Question: What is 1 + 1?\nResponse:"
    assert prompt["prompt_token_ids"] == FakeTokenizer().encode(text, True)
    assert params.stop == [*COMPLETION_STOP, "END"]


@pytestmark_fake
async def test_a_tokenizer_without_chat_template_says_what_to_do() -> None:
    tok = FakeTokenizer()
    tok.chat_template = None  # type: ignore[assignment]
    b = vb.VllmBackend("org/base", api=FakeApi(tokenizer=tok))
    with pytest.raises(BackendError, match=r"no chat template; set options: \{chat: false\}"):
        await b.generate(GenerationRequest(Q, max_tokens=8))


@pytestmark_fake
async def test_engine_errors_become_backend_errors() -> None:
    class Broken(FakeEngine):
        async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
            raise ValueError("temperature must be non-negative")
            yield  # an async generator

    b = vb.VllmBackend("org/model", api=FakeApi(Broken()))
    with pytest.raises(BackendError, match="org/model: vLLM failed: ValueError: temperature"):
        await b.generate(GenerationRequest(Q, max_tokens=8))


@pytestmark_fake
def test_shutdown_stops_the_engine_and_its_thread() -> None:
    api = FakeApi()
    b = vb.VllmBackend("org/model", api=api)
    asyncio.run(b.generate(GenerationRequest(Q, max_tokens=8)))
    b.host.shutdown(timeout=5)
    assert api.engine.stopped and not b.host.thread.is_alive()


# ==================================================================== on a GPU, with vllm

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not GPU, reason="needs CUDA and vllm")
GPU_OPTIONS: dict[str, Any] = {"gpu_memory_utilization": 0.3, "max_model_len": 4096}


@pytest.fixture(scope="module")
def vllm_model() -> str:
    """A small chat model vLLM can load: TTS_GRAPH_VLLM_MODEL, or SmolLM2-135M-Instruct from
    the Hugging Face cache (or the hub, where it can be reached)."""
    name = os.environ.get("TTS_GRAPH_VLLM_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    try:
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(name, local_files_only=True)
        except Exception:
            return snapshot_download(name)
    except Exception as exc:
        pytest.skip(f"model {name} is not available ({type(exc).__name__}); set "
                    "TTS_GRAPH_VLLM_MODEL to a local Hugging Face model directory")


@pytest.fixture(scope="module")
def gpu_backend(vllm_model: str) -> Iterator[vb.VllmBackend]:
    b = vb.VllmBackend(vllm_model, options=GPU_OPTIONS, params=135e6)
    asyncio.run(b.host.ready())
    yield b
    vllm_engine.shutdown_engines()


def _graph(model: str) -> str:
    opts = ", ".join(f"{k}: {v}" for k, v in GPU_OPTIONS.items())
    return (f"version: 1\nname: gpu-sc\nmodels: {{m: {{backend: vllm, model: '{model}', "
            f"options: {{{opts}}}}}}}\n"
            "defaults: {max_tokens: 96, temperature: 1.0, seed: 11}\n"
            "nodes: {solve: {role: solver, model: m, samples: 8}, "
            "vote: {role: vote, inputs: [solve]}}\noutput: vote\n")


@gpu
@needs_gpu
def test_gpu_graph_draws_8_distinct_samples_in_one_request(
        vllm_model: str, gpu_backend: vb.VllmBackend) -> None:
    doc = loads_graph(_graph(vllm_model))
    ex = Executor(doc)  # through the registry: the same engine as gpu_backend
    binding = ex.bindings()["m"]
    assert binding.backend.host is gpu_backend.host  # type: ignore[attr-defined]
    before = gpu_backend.host.requests
    result = ex.run("What is 17 + 25? End with 'Answer: <number>'.")
    assert result.status == "ok", result.error
    texts = [c.text for c in result.steps["solve"].candidates]
    print(f"\nanswer {result.answer}; {len(set(texts))} distinct of {len(texts)}; "
          f"usage {result.usage.to_dict()}")
    assert gpu_backend.host.requests - before == 1
    assert len(texts) == 8 and len(set(texts)) == 8
    assert result.usage.samples == 8 and result.usage.completion_tokens > 0


@gpu
@needs_gpu
async def test_gpu_seeds_reproduce(gpu_backend: vb.VllmBackend) -> None:
    req = GenerationRequest((Message("user", "Name three colours."),), max_tokens=48,
                            temperature=0.9, seed=1234, n=4)
    first = await gpu_backend.generate(req)
    second = await gpu_backend.generate(req)
    assert [c.text for c in first] == [c.text for c in second]
    assert len({c.text for c in first}) > 1
    other = await gpu_backend.generate(GenerationRequest(req.messages, max_tokens=48,
                                                         temperature=0.9, seed=99, n=4))
    assert [c.text for c in other] != [c.text for c in first]
    # sample i of a split request is drawn with seed + i as well (printed, not asserted:
    # batch composition may change the floating-point results)
    tail = await gpu_backend.generate(GenerationRequest(req.messages, max_tokens=48,
                                                        temperature=0.9, seed=1236, n=2))
    print(f"\nsplit request reproduces samples 2-3: "
          f"{[c.text for c in tail] == [c.text for c in first[2:]]}")


@gpu
@needs_gpu
async def test_gpu_cancellation_aborts_the_request(vllm_model: str,
                                                   gpu_backend: vb.VllmBackend) -> None:
    long = vb.VllmBackend(vllm_model, options={**GPU_OPTIONS, "ignore_eos": True})
    assert long.host is gpu_backend.host
    host = long.host
    aborts = host.aborts
    task = asyncio.create_task(long.generate(GenerationRequest(
        (Message("user", "Tell a very long story."),), max_tokens=3500, n=4)))
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - t0 < 1.0
    deadline = time.monotonic() + 5
    while host.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert host.aborts == aborts + 1 and host.in_flight == 0
    processor = getattr(host.engine, "output_processor", None)
    if processor is not None and hasattr(processor, "get_num_unfinished_requests"):
        assert processor.get_num_unfinished_requests() == 0
    ok = await gpu_backend.generate(GenerationRequest(Q, max_tokens=8))
    assert len(ok) == 1


@gpu
@needs_gpu
def test_gpu_throughput_matches_vllm_generate(vllm_model: str,
                                              gpu_backend: vb.VllmBackend) -> None:
    """The same 64 requests (8 samples of 128 tokens each, EOS ignored so both sides do the
    same work) through this backend, all at once, and through ``LLM.generate``."""
    import gc

    from vllm import LLM, SamplingParams

    b = vb.VllmBackend(vllm_model, options={**GPU_OPTIONS, "ignore_eos": True})
    reqs = [GenerationRequest((Message("user", f"Write a short poem about the number {i}."),),
                              max_tokens=128, temperature=0.8, top_p=0.95, seed=1000 * i, n=8)
            for i in range(64)]

    async def ours() -> tuple[float, int]:
        await b.generate(reqs[0])  # warm-up
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(b.generate(r) for r in reqs))
        wall = time.perf_counter() - t0
        return wall, sum(c.completion_tokens for o in outs for c in o)

    wall_ours, tok_ours = asyncio.run(ours())
    prompts = [{"prompt_token_ids": b.prompt_ids(r.messages)} for r in reqs]
    params = [SamplingParams(**vb.sampling_kwargs(r, max_tokens=r.max_tokens,
                                                  own={"ignore_eos": True})) for r in reqs]
    vllm_engine.shutdown_engines()  # give the GPU memory back before the reference engine loads
    gc.collect()

    llm = LLM(model=vllm_model, enable_prefix_caching=True, **GPU_OPTIONS)
    llm.generate(prompts[:1], params[:1], use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall_ref = time.perf_counter() - t0
    tok_ref = sum(len(o.token_ids) for r in outs for o in r.outputs)
    del llm
    gc.collect()

    ratio = (tok_ours / wall_ours) / (tok_ref / wall_ref)
    print(f"\nbackend: {tok_ours} tokens in {wall_ours:.2f} s = {tok_ours / wall_ours:,.0f} tok/s"
          f"\nLLM.generate: {tok_ref} tokens in {wall_ref:.2f} s = {tok_ref / wall_ref:,.0f} "
          f"tok/s\nratio {ratio:.3f} (goal >= 0.9)")
    assert tok_ours == tok_ref == 64 * 8 * 128
    assert ratio >= 0.9


class SteppingEngine(FakeEngine):
    """Yields sample 0's text growing word by word (vLLM's cumulative outputs)."""

    async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
        self.requests.append((request_id, prompt, params))
        words = ["Two", " and", " two", " make", " four.", "\nAnswer:", " 4"]
        for k in range(1, len(words) + 1):
            await asyncio.sleep(0.005)
            out = SimpleNamespace(index=0, text="".join(words[:k]),
                                  token_ids=list(range(k)), finish_reason="stop")
            yield SimpleNamespace(prompt_token_ids=list(prompt["prompt_token_ids"]),
                                  outputs=[out], finished=k == len(words))


@pytestmark_fake
async def test_stream_hands_on_the_growing_text_in_order() -> None:
    api = FakeApi(SteppingEngine())
    b = vb.VllmBackend("org/model", api=api)
    req = GenerationRequest(Q, max_tokens=16, seed=1)
    pieces: list[str] = []
    comps = await b.stream(req, pieces.append)
    assert pieces == ["Two", " and", " two", " make", " four.", "\nAnswer:", " 4"]
    assert "".join(pieces) == comps[0].text and comps[0].completion_tokens == 7
    assert len(api.engine.requests) == 1
    assert comps == await b.generate(req)  # the same completion unstreamed


@pytestmark_fake
async def test_graph_on_vllm_streams_its_answer() -> None:
    api = FakeApi(SteppingEngine())
    g = Graph.from_string("version: 1\nname: v\nmodels: {m: {backend: vllm, model: org/m}}\n"
                          "nodes: {solve: {role: solver, model: m}}\noutput: solve\n",
                          backends={"m": vb.VllmBackend("org/m", api=api)})
    pieces: list[str] = []
    result = await g.arun("What is 2 + 2?", on_text=pieces.append)
    assert len(pieces) == 7 and "".join(pieces) == result.text and result.answer == "4"
