"""A model binding: a backend wrapped, once for every backend, in what a call needs besides
generation: the response cache, the limits declared on the model entry (concurrency cap,
request rate, token rate), a per-call timeout, and bounded retries with backoff."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace

from . import deadlines
from .backends.base import Backend, GenerationRequest
from .budget import Costing
from .cache import ResponseCache, sample_key
from .errors import BackendError, TransientBackendError
from .limits import Permits, RequestRate, TokenRate, share, shared
from .spec import ModelSpec
from .streaming import TextStream
from .types import Completion

DEFAULT_RETRIES = 3
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(slots=True)
class Part:
    """Completions of consecutive samples that came from one place: the cache, or one live
    call (after ``retries`` retries)."""

    start: int
    completions: list[Completion]
    cached: bool
    latency_s: float = 0.0
    retries: int = 0


class _Limits:
    """The model's declared limits for all its calls (``tts_graph.limits``: any loop, any
    thread), or this process's share of them when ``ways`` processes call the model together
    (calls and tokens rounded down, at least one; requests a ``ways``-th of the rate, which
    may be under one a minute). ``of`` gives every binding of the same model and limits in
    the process the same set."""

    __slots__ = ("rpm", "sem", "tpm")

    def __init__(self, spec: ModelSpec, ways: int = 1) -> None:
        cap, rpm, tpm = spec.max_concurrency, spec.rpm, spec.tpm
        self.sem = Permits(max(1, cap // ways)) if cap else None
        # a share of the rate is exact (``RequestRate`` keeps under one a minute too):
        # together the processes never exceed the declared rate
        self.rpm = RequestRate(rpm / ways) if rpm else None
        self.tpm = TokenRate(max(1, tpm // ways)) if tpm else None

    @classmethod
    def of(cls, spec: ModelSpec, ways: int = 1) -> _Limits:
        """The limits of ``spec``'s model in this process: one set for every graph object,
        executor and search trial that calls the same endpoint and model with the same
        declared limits (the provider counts them together), fresh where none is declared
        (nothing to share)."""
        if spec.max_concurrency is None and spec.rpm is None and spec.tpm is None:
            return cls(spec, ways)
        key = (spec.backend, spec.model, spec.api_base, spec.api_key_env,
               spec.max_concurrency, spec.rpm, spec.tpm, ways)
        return shared(key, lambda: cls(spec, ways))


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): the server's Retry-After when it
    gives one, else exponential backoff with full jitter."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, BACKOFF_MAX_S)
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


async def _take(lim: _Limits, est_tokens: int) -> None:
    """Take the limits of one attempt, in order: a concurrency permit (given back by the
    caller when the attempt ends), then the request and token rates (nothing to give
    back). A wait cancelled after the permit was taken gives it back."""
    if lim.sem is not None:
        await lim.sem.acquire()
    try:
        if lim.rpm is not None:
            await lim.rpm.acquire()
        if lim.tpm is not None:
            await lim.tpm.acquire(est_tokens)
    except BaseException:
        if lim.sem is not None:
            lim.sem.release()
        raise


class ModelBinding:
    def __init__(self, name: str, spec: ModelSpec, backend: Backend,
                 cache: ResponseCache | None = None) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend
        self.cache = cache
        self.max_retries = DEFAULT_RETRIES if spec.max_retries is None else spec.max_retries
        info = backend.info
        self.identity = info.identity
        declared = spec.price
        price = (declared.input_per_mtok, declared.output_per_mtok) if declared else info.price
        self.costing = Costing(
            price_in=(price[0] / 1e6) if price else 0.0,
            price_out=(price[1] / 1e6) if price else 0.0,
            params=spec.params or info.params,
        )
        # this process's share where it is one of several calling the model (``set_share``)
        self.limits = _Limits.of(spec, share())
        self.in_flight = 0
        self.peak_in_flight = 0
        self.attempts = 0

    def share_limits(self, ways: int) -> None:
        """This process is one of ``ways`` that call the model at once (``eval --workers``,
        times ``--share-limits``): take a ``ways``-th of each declared limit, so that
        together they keep to it. Call it before the first call."""
        if ways < 1:
            raise ValueError("ways must be >= 1")
        self.limits = _Limits.of(self.spec, ways)

    async def generate(self, request: GenerationRequest, est_tokens: int,
                       stream: TextStream | None = None) -> list[Part]:
        """All ``request.n`` samples, as parts in sample order: cached samples first looked
        up, the missing ones fetched live (consecutive ones in one call each). ``stream``
        (one sample only) gets the text of a live call as it is decoded."""
        if stream is not None and request.n != 1:
            raise ValueError("only a call for one sample can stream")
        if self.cache is None:
            # ``_live`` inline: one coroutine fewer held by every call in flight
            if request.n == 1 or not self.backend.splits_samples():
                part = await self._call(request, est_tokens, 0, stream)
                if len(part.completions) == request.n:
                    return [part]
                return [part, *await self._rest(request, est_tokens, part)]
            return await self._split(request, est_tokens, 0)
        return await self._cached(request, est_tokens, stream)

    async def _cached(self, request: GenerationRequest, est_tokens: int,
                      stream: TextStream | None) -> list[Part]:
        """``generate`` with a cache (apart: its closures would otherwise make cells that
        every call in flight holds, cache or not)."""
        assert self.cache is not None
        keys = [sample_key(self.identity, request, i) for i in range(request.n)]
        hits = self.cache.get_many(keys)
        parts: list[Part] = []
        runs: list[tuple[int, int]] = []  # [start, end) of missing samples
        i = 0
        while i < request.n:
            j = i
            cached = keys[i] in hits
            while j < request.n and (keys[j] in hits) == cached:
                j += 1
            if cached:
                parts.append(Part(i, [hits[k] for k in keys[i:j]], cached=True))
            else:
                runs.append((i, j))
            i = j
        if runs:
            per_sample = est_tokens // max(1, request.n)
            # every run is awaited, even after one fails: a run that was answered (and
            # billed) is cached before the failure is raised, never dropped unseen
            live = await asyncio.gather(*(
                self._live(replace(request, n=b - a, seed=request.seed + a,
                                   sample_offset=request.sample_offset + a),
                           per_sample * (b - a), a, stream)
                for a, b in runs
            ), return_exceptions=True)
            for got in live:
                for part in got if isinstance(got, list) else ():
                    self.cache.put_many(zip(
                        keys[part.start : part.start + len(part.completions)],
                        part.completions, strict=True))
            for got in live:
                if isinstance(got, BaseException):
                    raise got
            parts.extend(p for got in live if isinstance(got, list) for p in got)
        parts.sort(key=lambda p: p.start)
        return parts

    async def _live(self, request: GenerationRequest, est_tokens: int, start: int,
                    stream: TextStream | None = None) -> list[Part]:
        """The live samples of ``request``: one call, or one call per sample when the backend
        would fan them out itself (so each request on the wire is limited and retried); the
        samples a server left out of its answer, as further calls."""
        # asked every call: a backend may learn that a server ignores n
        if not self.backend.splits_samples() or request.n == 1:
            part = await self._call(request, est_tokens, start, stream)
            if len(part.completions) == request.n:
                return [part]
            return [part, *await self._rest(request, est_tokens, part)]
        return await self._split(request, est_tokens, start)

    async def _rest(self, request: GenerationRequest, est_tokens: int, first: Part
                    ) -> list[Part]:
        """The samples of ``request`` after those ``first`` holds: a server that answers
        fewer choices than asked (llama.cpp's ignores ``n``, some cap it) gets the rest as
        further calls, seeds ``seed + i``, each taking the model's limits and retried on its
        own (the samples already answered, and billed, are kept)."""
        got = len(first.completions)
        n = request.n - got
        return await self._live(replace(request, n=n, seed=request.seed + got,
                                        sample_offset=request.sample_offset + got),
                                est_tokens * n // request.n, first.start + got)

    async def _split(self, request: GenerationRequest, est_tokens: int, start: int
                     ) -> list[Part]:
        """``_live`` for a backend that would fan the samples out itself: one call per sample,
        a part each (a record each: its own latency and retries, as it went on the wire)
        (apart: its comprehensions make cells that every call in flight would hold)."""
        per = est_tokens // request.n
        reqs = [replace(request, n=1, seed=request.seed + i,
                        sample_offset=request.sample_offset + i) for i in range(request.n)]
        got = await asyncio.gather(*(self._call(r, per, start + i) for i, r in enumerate(reqs)),
                                   return_exceptions=True)
        singles = [p for p in got if isinstance(p, Part)]
        if len(singles) < len(got):
            # keep the samples that were answered (and billed): a re-run replays them
            if self.cache is not None:
                self.cache.put_many((sample_key(self.identity, r, 0), p.completions[0])
                                    for r, p in zip(reqs, got, strict=True)
                                    if isinstance(p, Part))
            raise next(p for p in got if isinstance(p, BaseException))
        return singles

    async def _call(self, request: GenerationRequest, est_tokens: int, start: int,
                    stream: TextStream | None = None) -> Part:
        """One live call: limits, timeout, bounded retries of transient failures. A retried
        stream starts its text again; ``TextStream`` drops what the consumer already has.

        Each attempt holds the model's limits and runs under the model's timeout (none when
        the model entry sets none: the backend's own client timeout still applies). This
        timeout is the one that reports a hang: backends with a client timeout of their own
        set it a little later (``client_timeout_s``), so which fires first is never a race.
        The attempt runs in this frame, not a coroutine of its own: one frame fewer for every
        call in flight (the collector walks them all)."""
        lim = self.limits
        # no limit declared (the usual case): nothing to take and give back per attempt
        bare = lim.sem is None and lim.rpm is None and lim.tpm is None
        timeout = self.spec.timeout_s
        attempt = 0
        while True:
            attempt += 1
            t0 = time.perf_counter()
            if not bare:
                await _take(lim, est_tokens)
            self.in_flight += 1
            if self.in_flight > self.peak_in_flight:
                self.peak_in_flight = self.in_flight
            self.attempts += 1
            try:
                if stream is None:
                    call = self.backend.generate(request)
                else:
                    stream.begin()
                    call = self.backend.stream(request, stream)
                if timeout is None:
                    comps = await call
                else:
                    with deadlines.for_loop(timeout).entered():
                        comps = await call
            except TimeoutError:
                error: TransientBackendError = TransientBackendError(
                    f"no answer within {timeout:g} s", kind="timeout")
            except TransientBackendError as exc:
                error = exc
            else:
                # fewer than asked (at least one) is a server that ignores or caps n: the
                # caller asks for the rest
                if not 0 < len(comps) <= request.n:
                    raise BackendError(f"{self.name}: backend returned {len(comps)} "
                                       f"completions for n={request.n}")
                return Part(start, comps, cached=False, latency_s=time.perf_counter() - t0,
                            retries=attempt - 1)
            finally:
                self.in_flight -= 1
                if lim.sem is not None:
                    lim.sem.release()
            if attempt > self.max_retries:
                raise BackendError(f"{self.name}: {error.kind}: {error} "
                                   f"(gave up after {attempt} attempts)") from error
            await asyncio.sleep(backoff_delay(attempt, error.retry_after))
