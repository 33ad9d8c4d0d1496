"""N samples of one prompt in one request vs N cold single-sample requests (embedded llama.cpp).

On the real embedded SmolLM2-135M (backend ``local``, model ``smollm2-135m``): a few-shot
prompt of ~370 tokens, so that processing the prompt (prefill) matters, and ``max_tokens`` 32.

- batched: one request with ``n = N``. The backend splits it into one chunk per instance;
  the prompt is processed once per instance and every further sample reuses its KV cache.
- cold, sequential: N requests with ``n = 1``, one after another, through a backend on the
  same instances with ``prefix_reuse: false`` (and every instance reset before each), so each
  request processes the whole prompt again.
- cold, concurrent (``instances > 1`` only): the same N cold single-sample requests sent at
  once; this separates the gain of prompt reuse from the gain of running instances in
  parallel.

Every measurement starts from reset instances and is repeated ``--repeats`` times; the table
shows medians. The same seeds are used in both modes; completion tokens are printed so the
decode work can be compared.

    .venv/bin/python benchmarks/embedded_samples.py [--n 8] [--layouts 1x2,2x1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

from _common import median, print_header, table

from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.local import LocalBackend, create_local_backend
from tts_graph.spec import ModelSpec
from tts_graph.types import Message

EXAMPLES = [
    ("Lena has 12 pencils. She gives 5 to her brother. How many pencils does she have left?",
     "She starts with 12 pencils and gives away 5, so 12 - 5 = 7.", "7"),
    ("A box holds 6 eggs. How many eggs are in 4 boxes?",
     "Each box holds 6 eggs and there are 4 boxes, so 6 * 4 = 24.", "24"),
    ("Sam read 15 pages on Monday and 18 pages on Tuesday. How many pages did he read?",
     "He read 15 pages and then 18 pages, so 15 + 18 = 33.", "33"),
    ("There are 20 cookies shared equally by 4 friends. How many cookies does each get?",
     "20 cookies split into 4 equal parts gives 20 / 4 = 5.", "5"),
    ("A bus has 30 seats. 17 people are sitting. How many seats are empty?",
     "30 seats minus 17 taken seats leaves 30 - 17 = 13.", "13"),
]
QUESTION = "Ines has 16 marbles and gets 12 more. How many marbles does Ines have now?"


def prompt_messages() -> tuple[Message, ...]:
    shots = "\n\n".join(f"Question: {q}\nReasoning: {r}\nAnswer: {a}" for q, r, a in EXAMPLES)
    system = (
        "You are a careful math tutor. Solve the problem. Reason briefly, step by step, "
        "and end with the final answer on its own line as 'Answer: <number>'. "
        "Here are worked examples:\n\n" + shots)
    return (Message("system", system), Message("user", QUESTION))


def make_backend(instances: int, threads: int, reuse: bool = True) -> LocalBackend:
    """Backends of one layout share one pool of instances, whatever ``reuse`` says."""
    opts: dict[str, Any] = {"instances": instances, "threads": threads}
    if not reuse:
        opts["prefix_reuse"] = False
    spec = ModelSpec(backend="local", model="smollm2-135m", options=opts)
    return create_local_backend(spec)


async def reset_all(backend: LocalBackend) -> None:
    """Reset every instance of the pool (loading any not yet loaded): a barrier keeps each
    reset job on its own instance until all of them hold one."""
    pool = backend.pool
    barrier = threading.Barrier(pool.instances)

    def job(llm: Any) -> None:
        llm.reset()
        if hasattr(llm, "_tts_head"):
            llm._tts_head = None  # a backend that keeps the prompt between calls: forget it
        barrier.wait(timeout=600)

    await asyncio.gather(*(pool.submit(job) for _ in range(pool.instances)))


def request(msgs: tuple[Message, ...], n: int, seed: int, max_tokens: int,
            temperature: float) -> GenerationRequest:
    return GenerationRequest(messages=msgs, max_tokens=max_tokens, temperature=temperature,
                             seed=seed, n=n)


async def batched(b: LocalBackend, args: argparse.Namespace, seed: int) -> tuple[float, int]:
    await reset_all(b)
    t0 = time.perf_counter()
    comps = await b.generate(request(prompt_messages(), args.n, seed, args.max_tokens,
                                     args.temperature))
    dt = time.perf_counter() - t0
    assert len(comps) == args.n
    return dt, sum(c.completion_tokens for c in comps)


async def cold_sequential(b: LocalBackend, args: argparse.Namespace, seed: int
                          ) -> tuple[float, int]:
    total, toks = 0.0, 0
    for i in range(args.n):
        await reset_all(b)  # not timed: the reset itself is instant, the barrier is not
        t0 = time.perf_counter()
        comps = await b.generate(request(prompt_messages(), 1, seed + i, args.max_tokens,
                                         args.temperature))
        total += time.perf_counter() - t0
        toks += comps[0].completion_tokens
    return total, toks


async def cold_concurrent(b: LocalBackend, args: argparse.Namespace, seed: int
                          ) -> tuple[float, int]:
    await reset_all(b)
    reqs = [request(prompt_messages(), 1, seed + i, args.max_tokens, args.temperature)
            for i in range(args.n)]
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(b.generate(r) for r in reqs))
    dt = time.perf_counter() - t0
    return dt, sum(o[0].completion_tokens for o in outs)


async def main_async(args: argparse.Namespace) -> None:
    layouts = [tuple(int(x) for x in s.split("x")) for s in args.layouts.split(",")]
    rows: list[list[str]] = []
    verdicts: list[str] = []
    for instances, threads in layouts:
        b = make_backend(instances, threads)
        cold = make_backend(instances, threads, reuse=False)
        assert cold.pool is b.pool
        n_prompt = b.count_tokens(prompt_messages())
        await reset_all(b)  # loads every instance before timing
        await b.generate(request(prompt_messages(), 1, 999, 4, args.temperature))  # warm-up
        res: dict[str, list[tuple[float, int]]] = {"batched": [], "seq": [], "conc": []}
        for r in range(args.repeats):
            seed = 1000 * (r + 1)
            res["batched"].append(await batched(b, args, seed))
            res["seq"].append(await cold_sequential(cold, args, seed))
            if instances > 1:
                res["conc"].append(await cold_concurrent(cold, args, seed))
        bt = median([t for t, _ in res["batched"]])
        layout = f"{instances} inst x {threads} thr"
        modes = [("batched", f"1 request, n={args.n}"),
                 ("seq", f"{args.n} cold requests, n=1, sequential")]
        if res["conc"]:
            modes.append(("conc", f"{args.n} cold requests, n=1, concurrent"))
        for key, label in modes:
            t = median([x for x, _ in res[key]])
            toks = median([k for _, k in res[key]])
            rows.append([layout, str(n_prompt), label, f"{t:.2f}", f"{toks:.0f}",
                         f"{bt / t:.2f}" if key != "batched" else "-"])
        seq = median([t for t, _ in res["seq"]])
        ratio = bt / seq
        verdicts.append(f"- goal batched <= 0.6x cold ({layout}, vs sequential cold): "
                        f"{ratio:.2f}x -> {'MET' if ratio <= 0.6 else 'NOT MET'}")
        if res["conc"]:
            conc = median([t for t, _ in res["conc"]])
            verdicts.append(f"  (vs concurrent cold on the same instances: {bt / conc:.2f}x)")
        print(f"  measured {layout}", flush=True)
    print(f"\n- model smollm2-135m (embedded llama.cpp), N={args.n}, max_tokens "
          f"{args.max_tokens}, temperature {args.temperature}, {args.repeats} repeats "
          "(medians)\n")
    print(table(["layout", "prompt tokens", "mode", "wall s", "completion tokens",
                 "batched / this"], rows))
    print()
    print("\n".join(verdicts))


def main() -> None:
    ap = argparse.ArgumentParser(description="N samples in one request vs N cold requests")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layouts", default="1x2,2x1",
                    help="comma-separated INSTANCESxTHREADS, e.g. 1x2,2x1,1x1")
    ap.add_argument("--quick", action="store_true",
                    help="small run for the tests: prints every table; figures mean little")
    args = ap.parse_args()
    if args.quick:  # two instances, so the concurrent mode runs too
        args.n, args.max_tokens, args.repeats, args.layouts = 2, 4, 1, "2x1"
    print_header("Embedded samples: one request of N vs N cold requests")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
