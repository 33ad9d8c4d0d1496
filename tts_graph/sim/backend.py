"""``SimBackend``: the simulated models as an ordinary ``Backend`` (``backend: sim``)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict
from pathlib import Path

from ..backends.base import Backend, GenerationRequest, ModelInfo
from ..spec import ModelSpec
from ..types import Completion
from .draws import letters, uniform
from .profiles import SimProfile, profile_from_options
from .prompts import Situation, answer_of, read_prompt
from .simulator import Simulator
from .world import SIM_VERSION, world_constants

_ANSWER_KINDS = {"solve", "concise", "fuse", "debate", "refine"}


class SimBackend(Backend):
    """A SIMULATED model (``backend: sim``): outcomes by the rules of ``tts_graph.sim``,
    not a language model. Options: ``latency_scale`` (sleep this fraction of the simulated
    latency; default 0), ``base`` (the profile to start from when ``model`` is a new name),
    and any ``SimProfile`` field (``skill``, ``judge_bonus``, ...) to override it."""

    def __init__(self, profile: SimProfile, *, latency_scale: float = 0.0) -> None:
        if latency_scale < 0:
            raise ValueError("latency_scale must be >= 0")
        self.profile = profile
        self.latency_scale = latency_scale
        self.sim = Simulator(profile)
        digest = hashlib.sha256(repr((SIM_VERSION, asdict(profile), world_constants())
                                     ).encode()).hexdigest()[:10]
        self._info = ModelInfo(identity=f"sim:{profile.name}#{digest}", params=profile.params,
                               price=profile.price,
                               extra={"simulated": True, "profile": asdict(profile)})

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SimBackend:
        return cls(profile_from_options(spec.model, spec.options),
                   latency_scale=float(spec.options.get("latency_scale", 0.0)))

    @property
    def info(self) -> ModelInfo:
        return self._info

    def sample(self, request: GenerationRequest, index: int,
               sit: Situation | None = None) -> tuple[Completion, float]:
        """Sample ``index`` of ``request`` and its simulated latency (pure: no sleeping)."""
        sit = sit or read_prompt(request.messages)
        seed: object = "greedy" if request.temperature == 0 else request.seed + index
        out = self.sim.outcome(sit, seed, request.temperature)
        wrong = out.tokens_kind in _ANSWER_KINDS and answer_of(out.text) != sit.q.gold
        tokens = self.sim.completion_tokens(sit, out, seed, wrong)
        text, finish = out.text, "stop"
        if tokens > request.max_tokens:  # cut: the final line (the answer, verdict) is lost
            tokens, finish = request.max_tokens, "length"
            text = (f"Simulated {sit.kind} output (draft {letters(uniform('cut', seed, text))}), "
                    "cut off by max tokens")
        prompt = self.count_tokens(request.messages)
        comp = Completion(text=text, prompt_tokens=prompt, completion_tokens=tokens,
                          finish_reason=finish)
        return comp, self.sim.latency_s(prompt, tokens)

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        sit = read_prompt(request.messages)
        done = [self.sample(request, i, sit) for i in range(request.n)]
        if self.latency_scale > 0:  # samples run in parallel: the slowest one sets the wait
            await asyncio.sleep(max(lat for _, lat in done) * self.latency_scale)
        return [c for c, _ in done]


def create_sim_backend(spec: ModelSpec, base_dir: Path | None = None) -> SimBackend:
    """The factory the backend registry finds under ``sim`` (``base_dir`` is not used)."""
    return SimBackend.from_spec(spec)
