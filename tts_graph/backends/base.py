"""The backend protocol: a batch of samples of one prompt in, completions with token counts out.

Like an httpx transport, a backend does one thing: generate. Limits, budgets, retries, caching
and accounting wrap it once, in the executor's model binding, for every backend.

To add a backend: subclass ``Backend``, implement ``generate`` (and ``aclose`` if it holds
resources), and register a factory with ``tts_graph.backends.registry.register_backend``.
A backend that can hand out text as it decodes also overrides ``stream``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..streaming import TextSink
from ..types import Completion, Message


def client_timeout_s(timeout_s: float) -> float:
    """The timeout a backend gives its own HTTP client when the model entry sets
    ``timeout_s``. The binding owns that timeout (one line, the same for every backend); the
    client's is a backstop a little later, so the two never race to report a hang."""
    return timeout_s + max(1.0, 0.1 * timeout_s)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """``n`` samples of ``messages``. Sample ``i`` uses seed ``seed + i``; ``sample_offset`` is
    the index of sample 0 within its step (it keeps cache keys of split requests apart)."""

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()
    sample_offset: int = 0


@dataclass
class ModelInfo:
    """What the executor needs to know about a served model for accounting."""

    identity: str
    params: float | None = None
    #: USD per million tokens (input, output), when the backend knows it
    price: tuple[float, float] | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Backend(ABC):
    """One served model. ``generate`` must be safe to call concurrently; a backend that cannot
    overlap calls serializes them itself. Cancelling the awaiting task must stop the work."""

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Identity (for caches), parameter count and price."""

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> list[Completion]:
        """Return ``request.n`` completions, in sample order: the first ones only (at least
        one) where the server answered fewer choices than asked (one that ignores or caps
        ``n``). The binding asks for the rest as further requests, each under the model's
        limits and retries; a backend that learns the server ignores ``n`` says so in
        ``splits_samples``."""

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> list[Completion]:
        """``generate`` for one sample (``request.n == 1``), calling ``on_text`` with each new
        piece of its text as it is decoded; the pieces joined are the completion's text. The
        completion must be the one ``generate`` gives for the same request (the response cache
        does not tell them apart). The default sends the whole text once it is ready."""
        comps = await self.generate(request)
        if comps:
            on_text(comps[0].text)
        return comps

    def splits_samples(self) -> bool:
        """True when this backend would serve ``n`` samples as ``n`` separate requests. The
        binding then sends them one by one, so concurrency caps, rate limits and retries apply
        to each request on the wire. Asked before every call: it must not block."""
        return False

    def count_tokens(self, messages: tuple[Message, ...]) -> int:
        """Prompt tokens, for budget checks before a call. Backends with a tokenizer override
        this; the default errs high (about 3 characters a token, plus framing)."""
        return sum(len(m.content) // 3 + 8 for m in messages) + 4

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the backend holds (threads, connections, model memory)."""
