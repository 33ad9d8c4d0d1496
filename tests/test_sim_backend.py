"""The SIMULATED backend (``backend: sim``): identity, task, determinism, calibration to the
published reference points, and the stated role rules. Every graph here runs through the real
executor."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tts_graph import Executor, QueryResult, loads_graph
from tts_graph import sim as simmod
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.registry import backend_names, create_backend
from tts_graph.cache import ResponseCache
from tts_graph.errors import BackendError
from tts_graph.evaluate.tasks import TaskError, load_task
from tts_graph.sim import (
    PROFILES,
    SimBackend,
    SimQuestion,
    profile_from_options,
    read_prompt,
    sim_task,
)
from tts_graph.spec import ModelSpec
from tts_graph.types import Message

MODELS = """version: 1
name: {name}
models:
  s1: {{backend: sim, model: llama-1b}}
  s3: {{backend: sim, model: llama-3b}}
  s8: {{backend: sim, model: llama-8b}}
  s70: {{backend: sim, model: llama-70b}}
{extra}defaults: {{max_tokens: {max_tokens}, temperature: 0.7}}
nodes:
"""


def graph(body: str, *, name: str = "g", extra: str = "", max_tokens: int = 2048) -> str:
    return MODELS.format(name=name, extra=extra, max_tokens=max_tokens) + body + "\n"


def run(text: str, questions: list[str], concurrency: int = 32,
        cache: ResponseCache | None = None) -> list:
    ex = Executor(loads_graph(text), cache=cache)

    async def go() -> list:
        try:
            return await ex.arun_many(questions, concurrency=concurrency)
        finally:
            await ex.aclose()

    return asyncio.run(go())


def accuracy(text: str, n: int) -> float:
    task = sim_task(n)
    res = run(text, [it.question for it in task.items])
    return sum(task.scorer.score(it, r.answer, r.text).correct
               for it, r in zip(task.items, res, strict=True)) / n


# ---------------------------------------------------------------------------- identity, task


def test_identity_docs_and_output_say_sim() -> None:
    assert "sim" in backend_names()
    backend = create_backend(ModelSpec(backend="sim", model="llama-8b"))
    assert isinstance(backend, SimBackend)
    info = backend.info
    assert info.identity.startswith("sim:llama-8b#")
    assert info.extra["simulated"] is True
    assert info.params == 8e9 and info.price == PROFILES["llama-8b"].price
    assert simmod.__doc__ is not None and simmod.__doc__.startswith("SIMULATED backend")
    assert "SIMULATED" in (SimBackend.__doc__ or "")
    task = sim_task(3)
    assert "SIMULATED" in task.description and all(it.meta["simulated"] for it in task.items)
    res = run(graph("  a: {role: solver, model: s8}\noutput: a"), [task.items[0].question])
    assert res[0].text.startswith("Simulated solution")


def test_profiles_are_the_four_llama_sizes() -> None:
    assert list(PROFILES) == ["llama-1b", "llama-3b", "llama-8b", "llama-70b"]
    assert [p.params for p in PROFILES.values()] == [1e9, 3e9, 8e9, 70e9]
    skills = [p.skill for p in PROFILES.values()]
    prices = [p.price[1] for p in PROFILES.values()]
    assert skills == sorted(skills) and prices == sorted(prices)


def test_options_override_and_errors() -> None:
    p = profile_from_options("my-8b", {"base": "llama-8b", "skill": 0.0})
    assert p.name == "my-8b" and p.skill == 0.0 and p.params == 8e9
    with pytest.raises(BackendError, match="unknown simulated model"):
        profile_from_options("gpt-9", {})
    with pytest.raises(BackendError, match="unknown options"):
        profile_from_options("llama-1b", {"skil": 1})
    b = SimBackend.from_spec(ModelSpec(backend="sim", model="llama-1b",
                                       options={"latency_scale": 0.5}))
    assert b.latency_scale == 0.5
    # a changed profile is a different model for the cache
    assert SimBackend(p).info.identity != SimBackend(PROFILES["llama-8b"]).info.identity


def test_sim_task_and_task_names() -> None:
    task = load_task("sim:50")
    assert len(task) == 50 and task.scorer.name == "numeric" and task.name == "sim:50"
    assert len(load_task("sim")) == 2000
    again = sim_task(50)
    assert [(it.id, it.question, it.answer, it.meta) for it in task.items] == \
        [(it.id, it.question, it.answer, it.meta) for it in again.items]
    assert task.items[7].question == "[sim:000007] Compute the value of problem 7."
    seeded = load_task("sim:50:3")
    assert seeded.items[7].question.startswith("[sim:s3:000007]")
    # gold answers depend on the id only; difficulty on id and task seed
    assert [it.answer for it in seeded.items] == [it.answer for it in task.items]
    assert [it.meta["difficulty"] for it in seeded.items] != \
        [it.meta["difficulty"] for it in task.items]
    levels = Counter(it.meta["level"] for it in sim_task(2000).items)
    assert set(levels) == {1, 2, 3, 4, 5} and levels[5] > levels[1]
    assert all(0 <= it.meta["difficulty"] < 1 for it in task.items)
    for bad in ("sim:x", "sim:0", "sim:5:-1", "sim:1:2:3"):
        with pytest.raises(TaskError, match="simulated task"):
            load_task(bad)


def test_untagged_question_is_a_clear_error() -> None:
    res = run(graph("  a: {role: solver, model: s8}\noutput: a"), ["What is 2 + 2?"])
    assert res[0].status == "error" and "[sim:ID]" in (res[0].error or "")


# ------------------------------------------------------------------------------ determinism

ALL_ROLES = """  plan: {role: planner, model: s70}
  solve: {role: solver, model: s3, inputs: [plan], samples: 5}
  crit: {role: critic, model: s8, inputs: [solve], limit: 2}
  resolve: {role: solver, model: s3, inputs: [crit], samples: 2, seed: 11}
  ver: {role: verifier, model: s8, inputs: [solve]}
  sc: {role: judge, mode: score, model: s8, inputs: [solve]}
  rk: {role: ranker, model: s8, inputs: [solve], top_k: 3}
  deb: {role: debate, models: [s1, s8], agents: 3, rounds: 3}
  fuse: {role: fuser, model: s8, inputs: [rk, deb, resolve]}
  ref: {role: refiner, model: s8, inputs: [fuse], rounds: 2, critic_model: s70}
  vote: {role: vote, inputs: [sc, ver, ref]}
  judge: {role: judge, model: s70, inputs: [vote]}
output: judge"""


def _fingerprint(res: QueryResult) -> tuple:
    return (res.answer, res.text, tuple(
        (sid, tuple((c.text, c.answer, c.score) for c in out.candidates))
        for sid, out in sorted(res.steps.items())),
        sorted((c.step, c.prompt_tokens, c.completion_tokens) for c in res.calls))


def test_deterministic_across_runs_concurrency_and_order() -> None:
    # (first_finish is left out: which samples finish first is timing, see the next tests)
    questions = [it.question for it in sim_task(40).items]
    text = graph(ALL_ROLES)
    first = {r.question: _fingerprint(r) for r in run(text, questions, concurrency=1)}
    second = {r.question: _fingerprint(r)
              for r in run(text, list(reversed(questions)), concurrency=16)}
    assert first == second
    assert len({f[0] for f in first.values()}) > 5  # not a constant answer


def test_sample_depends_on_seed_plus_index_only() -> None:
    backend = SimBackend(PROFILES["llama-3b"])
    msgs = (Message("system", "Solve the problem. Reason briefly, step by step."),
            Message("user", SimQuestion(12).text))

    def gen(seed: int, n: int) -> list:
        req = GenerationRequest(messages=msgs, max_tokens=2048, seed=seed, n=n)
        return asyncio.run(backend.generate(req))

    many = gen(5, 6)
    assert many == [gen(5 + i, 1)[0] for i in range(6)]
    assert gen(5, 3) == many[:3]  # sample i does not depend on how many are drawn
    assert len({c.text for c in many}) == 6


def test_temperature_zero_is_greedy() -> None:
    res = run(graph("  a: {role: solver, model: s1, samples: 4, temperature: 0}\noutput: a"),
              [it.question for it in sim_task(20).items])
    for r in res:
        assert len({c.answer for c in r.steps["a"].candidates}) == 1


def test_cache_replays_exactly(tmp_path: Path) -> None:
    questions = [it.question for it in sim_task(15).items]
    text = graph(ALL_ROLES)
    live = run(text, questions, cache=ResponseCache(tmp_path / "c.sqlite"))
    replay = run(text, questions, cache=ResponseCache(tmp_path / "c.sqlite"))
    assert [_fingerprint(r)[:3] for r in live] == [_fingerprint(r)[:3] for r in replay]
    assert all(c.cached for r in replay for c in r.calls)


# ------------------------------------------------------------------------------ calibration

CALIBRATION = [
    ("  a: {role: solver, model: s1}\noutput: a", 0.31),
    ("  a: {role: solver, model: s3}\noutput: a", 0.40),
    ("  a: {role: solver, model: s8}\noutput: a", 0.49),
    ("  a: {role: solver, model: s70}\noutput: a", 0.68),
    ("  a: {role: solver, model: s1, samples: 9}\n  v: {role: vote, inputs: [a]}\noutput: v",
     0.39),
    ("  a: {role: solver, model: s3, samples: 3}\n  f: {role: fuser, model: s3, inputs: [a]}\n"
     "output: f", 0.54),
]


def test_calibration_points_within_two_points() -> None:
    task = sim_task(2000)
    questions = [it.question for it in task.items]
    got = []
    for body, published in CALIBRATION:
        res = run(graph(body), questions, concurrency=64)
        acc = sum(task.scorer.score(it, r.answer, r.text).correct
                  for it, r in zip(task.items, res, strict=True)) / len(res)
        got.append((body.split("\n")[0], round(acc, 3), published))
    assert all(abs(acc - pub) <= 0.02 for _, acc, pub in got), got


# ------------------------------------------------------------------------------- role rules


def test_strong_judge_picks_the_correct_candidate_more_often() -> None:
    task = sim_task(400)
    rates = {}
    for judge in ("s1", "s70"):
        text = graph("  a: {role: solver, model: s8, samples: 4}\n"
                     f"  j: {{role: judge, model: {judge}, inputs: [a]}}\noutput: j")
        res = run(text, [it.question for it in task.items])
        present = [(it, r) for it, r in zip(task.items, res, strict=True)
                   if it.answer in {c.answer for c in r.steps["a"].candidates}
                   and len({c.answer for c in r.steps["a"].candidates}) > 1]
        rates[judge] = sum(r.answer == it.answer for it, r in present) / len(present)
    assert rates["s70"] > rates["s1"] + 0.2, rates


def test_voting_helps_less_when_errors_are_correlated() -> None:
    extra = "  indep: {backend: sim, model: llama-1b, options: {confusion_mean: 0.02}}\n"
    gains = {}
    for model in ("s1", "indep"):
        one = accuracy(graph(f"  a: {{role: solver, model: {model}}}\noutput: a", extra=extra),
                       600)
        vote = accuracy(graph(f"  a: {{role: solver, model: {model}, samples: 9}}\n"
                              "  v: {role: vote, inputs: [a]}\noutput: v", extra=extra), 600)
        gains[model] = vote - one
    assert gains["indep"] > gains["s1"] + 0.05, gains
    # the default model's wrong samples agree on one wrong answer often
    task = sim_task(300)
    res = run(graph("  a: {role: solver, model: s1, samples: 9}\noutput: a"),
              [it.question for it in task.items])
    agree = pairs = 0
    for it, r in zip(task.items, res, strict=True):
        wrong = [c.answer for c in r.steps["a"].candidates if c.answer != it.answer]
        for i in range(len(wrong)):
            for j in range(i + 1, len(wrong)):
                pairs += 1
                agree += wrong[i] == wrong[j]
    assert agree / pairs > 0.25


def test_fuser_planner_debate_refiner_and_checkers_follow_their_rules() -> None:
    n = 400
    task = sim_task(n)
    qs = [it.question for it in task.items]
    gold = {it.question: it.answer for it in task.items}
    single = accuracy(graph("  a: {role: solver, model: s8}\noutput: a"), n)
    # a planner adds a small bonus: never worse on a question, better on some
    planned = accuracy(graph("  p: {role: planner, model: s70}\n"
                             "  a: {role: solver, model: s8, inputs: [p]}\noutput: a"), n)
    assert single < planned < single + 0.15
    # the fuser gains when a correct candidate is shown
    res = run(graph("  a: {role: solver, model: s3, samples: 3}\n"
                    "  f: {role: fuser, model: s3, inputs: [a]}\noutput: f"), qs)
    with_gold = [r for r in res if gold[r.question] in {c.answer for c in
                                                        r.steps["a"].candidates}]
    assert sum(r.answer == gold[r.question] for r in with_gold) / len(with_gold) > 0.75
    # debate: later rounds move toward the plurality, and some agents adopt the gold answer
    res = run(graph("  d: {role: debate, model: s3, agents: 3, rounds: 2}\noutput: d"), qs)
    moved_to_plurality = fixed = 0
    for r in res:
        before = [c.answer for c in r.steps["d@r1"].meta["agents"]]
        after = [c.answer for c in r.steps["d"].meta["agents"]]
        lead = Counter(before).most_common(2)
        if len(lead) == 2 and lead[0][1] > lead[1][1]:
            moved_to_plurality += sum(b != lead[0][0] and a == lead[0][0]
                                      for b, a in zip(before, after, strict=True))
        fixed += sum(b != gold[r.question] and a == gold[r.question]
                     for b, a in zip(before, after, strict=True))
    assert moved_to_plurality > 20 and fixed > 20
    # the refiner fixes a few wrong answers and rarely breaks right ones
    res = run(graph("  a: {role: solver, model: s8}\n"
                    "  r: {role: refiner, model: s8, inputs: [a]}\noutput: r"), qs)
    fixes = sum(r.steps["a"].best.answer != gold[r.question] and r.answer == gold[r.question]
                for r in res)
    breaks = sum(r.steps["a"].best.answer == gold[r.question] and r.answer != gold[r.question]
                 for r in res)
    assert 0 < breaks < fixes < n * 0.2
    # verifier verdicts, judge scores and critiques are informative
    res = run(graph("  a: {role: solver, model: s8, samples: 3}\n"
                    "  v: {role: verifier, model: s8, keep: all, inputs: [a]}\n"
                    "  s: {role: judge, mode: score, model: s8, inputs: [a]}\n"
                    "  c: {role: critic, model: s8, limit: 3, inputs: [a]}\n"
                    "  b: {role: solver, model: s8, inputs: [c], seed: 9}\n"
                    "  o: {role: vote, inputs: [v, s, b]}\noutput: o"), qs)
    yes = {True: [], False: []}
    score = {True: [], False: []}
    flagged = {True: [], False: []}
    for r in res:
        g = gold[r.question]
        for c in r.steps["v"].candidates:
            yes[c.answer == g].append(c.meta["verdict"])
        for c in r.steps["s"].candidates:
            score[c.answer == g].append(c.score)
        for c in r.steps["c"].candidates:
            flagged[g not in c.meta["target"]].append("looks wrong" in c.text)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(yes[True]) > mean(yes[False]) + 0.3
    assert mean(score[True]) > mean(score[False]) + 2
    assert mean(flagged[True]) > mean(flagged[False]) + 0.3
    # the ranker puts the gold answer first more often than its share
    res = run(graph("  a: {role: solver, model: s8, samples: 4}\n"
                    "  k: {role: ranker, model: s70, top_k: 1, inputs: [a]}\noutput: k"), qs)
    share = mean([mean([c.answer == gold[r.question] for c in r.steps["a"].candidates])
                  for r in res])
    assert mean([r.answer == gold[r.question] for r in res]) > share + 0.1


def test_roles_are_read_from_the_prompts() -> None:
    q = SimQuestion(3)
    sol = f"[Solution 1]\nSimulated solution.\nAnswer: 5\n\n[Solution 2]\nx\nAnswer: {q.gold}"
    cases = {
        "select": f"Problem: {q.text}\n\n{sol}\n\nWhich solution is correct? Reply with its "
                  "number (1 to 2) as 'Best: <number>'.",
        "rank": f"Problem: {q.text}\n\n{sol}\n\nRank the 2 solutions, best first, as "
                "'Ranking: 2 > 1 > 3'.",
        "fuse": f"Problem: {q.text}\n\n{sol}\n\nYour solution:",
    }
    for kind, user in cases.items():
        sit = read_prompt((Message("user", user),))
        assert sit.kind == kind and sit.shown == ("5", q.gold) and sit.q == q


def test_truncation_and_latency() -> None:
    qs = [it.question for it in sim_task(30).items]
    res = run(graph("  a: {role: solver, model: s8, samples: 2}\noutput: a", max_tokens=40),
              qs)
    assert all(c.answer is None or "cut off" in c.text
               for r in res for c in r.steps["a"].candidates)
    assert all(r.usage.completion_tokens <= 80 for r in res)
    # latency_scale > 0 sleeps a fraction of the simulated latency; 0 does not sleep
    extra = "  slow: {backend: sim, model: llama-70b, options: {latency_scale: 0.01}}\n"
    t0 = time.perf_counter()
    res = run(graph("  a: {role: solver, model: slow}\noutput: a", extra=extra), qs[:4])
    slow = time.perf_counter() - t0
    lat = simmod.simulated_latency_s
    expected = [lat(PROFILES["llama-70b"], c.prompt_tokens, c.completion_tokens) * 0.01
                for r in res for c in r.calls]
    assert all(c.latency_s >= e * 0.9 for c, e in zip([c for r in res for c in r.calls],
                                                       expected, strict=True))
    assert slow >= max(expected)
    fast = run(graph("  a: {role: solver, model: s70}\noutput: a"), qs[:4])
    assert all(c.latency_s < 0.005 for r in fast for c in r.calls)


def test_first_finish_keeps_the_fastest_simulated_samples() -> None:
    extra = "  timed: {backend: sim, model: llama-8b, options: {latency_scale: 0.01}}\n"
    task = sim_task(8)
    res = run(graph("  f: {role: first_finish, model: timed, samples: 4, k: 1}\noutput: f",
                    extra=extra), [it.question for it in task.items])
    backend = SimBackend(PROFILES["llama-8b"])
    hits = 0
    for r in res:
        call = r.calls[0]
        req = GenerationRequest(messages=tuple(
            Message(m["role"], m["content"]) for m in _ff_messages(r.question)),
            max_tokens=2048, seed=0, n=4)
        drawn = [backend.sample(req, i)[0] for i in range(4)]
        fastest = min(drawn, key=lambda c: c.completion_tokens)
        hits += r.text == fastest.text
        assert call.latency_s > 0
    assert hits >= 6  # timing on a busy machine may swap near-equal samples


def _ff_messages(question: str) -> list[dict[str, str]]:
    from tts_graph.roles.first_finish import FirstFinish

    return [{"role": "system", "content": FirstFinish.system_prompt["main"]},
            {"role": "user", "content": question}]
