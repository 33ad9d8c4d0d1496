"""The ``options:`` of a ``backend: vllm`` model: this backend's own sampling settings and the
engine's settings (``AsyncEngineArgs``), each checked (type and range) and told apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import TTSGraphError

#: this backend's own settings: name -> (accepted types, description of the value)
BACKEND_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "chat": ((bool,), "true or false"),
    "preamble": ((str,), "a string"),
    "top_k": ((int,), "an integer (0 or -1: off)"),
    "min_p": ((int, float), "a number in [0, 1]"),
    "repetition_penalty": ((int, float), "a number > 0"),
    "presence_penalty": ((int, float), "a number"),
    "frequency_penalty": ((int, float), "a number"),
    "ignore_eos": ((bool,), "true or false"),
}

#: engine settings checked here (type and range) and passed to ``AsyncEngineArgs``; with vllm
#: installed, any other field of ``AsyncEngineArgs`` is passed through as well
ENGINE_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "gpu_memory_utilization": ((int, float), "a fraction in (0, 1]"),
    "max_model_len": ((int,), "an integer >= 1"),
    "tensor_parallel_size": ((int,), "an integer >= 1"),
    "pipeline_parallel_size": ((int,), "an integer >= 1"),
    "dtype": ((str,), "auto, float16, bfloat16 or float32"),
    "enforce_eager": ((bool,), "true or false"),
    "enable_prefix_caching": ((bool,), "true or false"),
    "enable_chunked_prefill": ((bool,), "true or false"),
    "max_num_seqs": ((int,), "an integer >= 1"),
    "max_num_batched_tokens": ((int,), "an integer >= 1"),
    "quantization": ((str,), "a quantization method, e.g. awq, gptq, fp8"),
    "kv_cache_dtype": ((str,), "auto, fp8, ..."),
    "seed": ((int,), "an integer"),
    "trust_remote_code": ((bool,), "true or false"),
    "revision": ((str,), "a model revision"),
    "tokenizer": ((str,), "a tokenizer name or path"),
    "tokenizer_revision": ((str,), "a tokenizer revision"),
    "tokenizer_mode": ((str,), "auto or slow"),
    "download_dir": ((str,), "a directory"),
    "load_format": ((str,), "auto, safetensors, ..."),
    "cpu_offload_gb": ((int, float), "a number >= 0"),
    "swap_space": ((int, float), "a number >= 0"),
    "block_size": ((int,), "an integer"),
    "max_logprobs": ((int,), "an integer"),
}
_POSITIVE_INT = {"max_model_len", "tensor_parallel_size", "pipeline_parallel_size",
                 "max_num_seqs", "max_num_batched_tokens"}
#: engine options that change speed or memory, not what the model answers: left out of the
#: model identity (cache keys)
_RESOURCE_ONLY = {"gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
                  "enforce_eager", "enable_prefix_caching", "enable_chunked_prefill",
                  "max_num_seqs", "max_num_batched_tokens", "download_dir", "cpu_offload_gb",
                  "swap_space", "block_size", "max_logprobs", "load_format"}
#: set by this backend; ``options`` may not override them
_RESERVED = {"model", "n", "max_tokens", "temperature", "top_p", "stop", "output_kind",
             "disable_log_stats"}


def _check_value(model: str, key: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if ok and key == "gpu_memory_utilization":
        ok = 0 < value <= 1
    elif ok and key in _POSITIVE_INT:
        ok = value >= 1
    elif ok and key == "min_p":
        ok = 0 <= value <= 1
    elif ok and key == "repetition_penalty":
        ok = value > 0
    elif ok and key in ("cpu_offload_gb", "swap_space"):
        ok = value >= 0
    if not ok:
        raise TTSGraphError(f"model {model!r}: vllm option {key}: must be {what}, "
                            f"got {value!r}")


def split_options(model: str, options: Mapping[str, Any],
                  engine_fields: Callable[[], set[str] | None] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check ``options`` and split them into (this backend's, the engine's).

    ``engine_fields`` gives every field ``AsyncEngineArgs`` has (None when vllm is not
    installed); options outside both lists and outside those fields are an error.
    """
    own: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in options.items():
        if key in _RESERVED:
            raise TTSGraphError(f"model {model!r}: vllm option {key} is set by tts-graph "
                                "(from the model entry and the node's sampling settings)")
        if key in BACKEND_OPTIONS:
            _check_value(model, key, value, *BACKEND_OPTIONS[key])
            own[key] = value
        elif key in ENGINE_OPTIONS:
            _check_value(model, key, value, *ENGINE_OPTIONS[key])
            engine[key] = value
        else:
            unknown.append(key)
    if unknown:
        fields = engine_fields() if engine_fields is not None else None
        rest = sorted(k for k in unknown if not fields or k not in fields)
        if rest:
            known = sorted({*BACKEND_OPTIONS, *ENGINE_OPTIONS})
            raise TTSGraphError(
                f"model {model!r}: unknown vllm options {rest}; known: {', '.join(known)}"
                + (" (or any field of vllm's AsyncEngineArgs)" if fields else ""))
        engine.update((k, options[k]) for k in unknown)
    return own, engine
