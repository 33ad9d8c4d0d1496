"""The agent-reinforce searcher: θ, feedback updates, the numeric REINFORCE fallback, Optuna
records, determinism, and a search end to end on a toy space where model ``b`` is right and
model ``a`` is not."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import TTSGraphError
from tts_graph.search.agent_reinforce import AgentReinforceSearcher, Record, parse_feedback
from tts_graph.search.base import distribution, make_study
from tts_graph.search.driver import SearchSession
from tts_graph.search.space import Space
from tts_graph.search.spec import SearchSpec
from tts_graph.search.trial import TrialResult

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "a": {"backend": "scripted", "model": "a", "params": "1B",
          "options": {"answers": ["Answer: 0"]}},
    "b": {"backend": "scripted", "model": "b", "params": "3B",
          "options": {"answers": ["Answer: 7"]}},
}
BASE = {
    "version": 1, "name": "toy", "models": MODELS,
    "nodes": {"solve": {"role": "solver", "model": "a", "samples": 1},
              "vote": {"role": "vote", "inputs": ["solve"]}},
    "output": "vote",
}
CHOICES = [{"node": "solve", "field": "model", "values": ["a", "b"]},
           {"node": "solve", "field": "samples", "int": [1, 9]}]


def toy(tmp_path: Path, *, searcher: dict, trials: int = 16, base: dict | None = None,
        pruning: bool = False, questions: int = 16, objectives: list[str] | None = None
        ) -> Path:
    """A search file over the toy base graph and a JSONL task (every answer is 7)."""
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": i, "question": f"q{i}: 3 + 4?", "answer": "7"})
                            + "\n" for i in range(questions)))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base or BASE, sort_keys=False))
    search = {"version": 1, "name": "toy-search", "base": "base.yaml",
              "task": {"name": str(task)}, "choices": CHOICES,
              "objectives": objectives or ["accuracy"],
              "budget": {"trials": trials}, "searcher": searcher,
              "pruning": {"enabled": pruning, "min_questions": 4}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def session_of(path: Path, *, out_dir: Path, storage=None) -> SearchSession:
    """A search session on an in-memory Optuna storage (SQLite commits are slow on a busy
    disk; the CLI tests below use the default SQLite storage)."""
    return SearchSession(path, out_dir=out_dir,
                         storage=storage or optuna.storages.InMemoryStorage())  # type: ignore[arg-type]


def searcher_for(*, seed: int = 0, batch: int = 4, options: dict | None = None,
                 feedback_model: str | None = None, models: dict | None = None,
                 choices: list | None = None, base: dict | None = None,
                 objectives: list[str] | None = None) -> AgentReinforceSearcher:
    """A searcher over an in-memory study (no evaluation: tests tell it results)."""
    objectives = objectives or ["accuracy"]
    spec = SearchSpec.model_validate({
        "name": "t", "base": "base.yaml", "task": {"name": "x.jsonl"},
        "choices": choices or CHOICES, "objectives": objectives, "budget": {"trials": 10},
        "searcher": {"name": "agent-reinforce"}})
    space = Space(spec, base or BASE)
    study = make_study("t", None, objectives)
    return AgentReinforceSearcher(space, study, objectives, seed=seed, options=options,
                                  batch=batch, feedback_model=feedback_model,
                                  base_models=models if models is not None else MODELS,
                                  base_dir=None)


def scripted_critic(reply: str) -> dict:
    return {**MODELS, "critic": {"backend": "scripted", "model": "critic",
                                 "options": {"answers": [reply]}}}


def level_prob(s: AgentReinforceSearcher, name: str, value) -> float:
    return float(s.probs(name)[s.levels[name].index(value)])


def tell_batch(s: AgentReinforceSearcher, acc_of=lambda c: 0.5) -> list[dict]:
    return tell_batch_n(s, s.batch, acc_of)


def tell_batch_n(s: AgentReinforceSearcher, n: int, acc_of=lambda c: 0.5) -> list[dict]:
    configs = []
    for _ in range(n):
        p = s.ask()
        configs.append(p.config)
        s.tell(p, TrialResult("complete", values={"accuracy": acc_of(p.config)}, questions=8))
    return configs


# ------------------------------------------------------------------------------ π


def test_prior_prefers_the_bigger_model_and_wider_sampling_mildly():
    s = searcher_for()
    assert s.levels["solve.samples"] == [1, 3, 5, 7, 9]
    pol = s.policy
    pred = dict(zip((json.dumps(c, sort_keys=True) for c in pol.configs),
                    pol.predicted_rewards(), strict=True))

    def at(model: str, samples: int) -> float:
        return pred[json.dumps({"solve.model": model, "solve.samples": samples},
                               sort_keys=True)]

    # b declares 3B parameters, a 1B: the prior expects b to answer better, and more samples
    # to help a little, more so for the bigger model
    assert at("b", 1) - at("a", 1) == pytest.approx(0.10, abs=1e-9)
    assert 0 < at("a", 9) - at("a", 1) < at("b", 9) - at("b", 1) < 0.1
    for name in ("solve.model", "solve.samples"):
        assert sum(s.probs(name)) == pytest.approx(1.0)
    assert s.probs("solve.model")[1] > 0.5  # b more likely, a still drawn
    assert s.probs("solve.model")[0] > 0.05


def test_flat_prior_when_asked_or_when_nothing_is_declared():
    flat = searcher_for(options={"prior": False}).policy
    undeclared = searcher_for(models={k: {kk: vv for kk, vv in v.items() if kk != "params"}
                                      for k, v in MODELS.items()}).policy
    for pol in (flat, undeclared):
        pred = pol.predicted_rewards()
        a1 = pol.index[pol.space.key({"solve.model": "a", "solve.samples": 1})]
        b1 = pol.index[pol.space.key({"solve.model": "b", "solve.samples": 1})]
        assert pred[a1] == pytest.approx(pred[b1])


def test_the_policy_learns_an_interaction_between_a_model_and_its_width():
    # samples help model a a lot and hurt model b: no sum of per-parameter effects fits both
    def acc(c):
        k = c["solve.samples"]
        return 0.3 + 0.06 * k if c["solve.model"] == "a" else 0.8 - 0.05 * k

    s = searcher_for(options={"prior": False})
    for config in s.policy.configs:
        if config["solve.samples"] in (1, 9) or config == {"solve.model": "a",
                                                           "solve.samples": 5}:
            s.history.append(Record(len(s.history), config, "complete",
                                    {"accuracy": acc(config)}, 400))
    s.refresh()
    pred = {json.dumps(c, sort_keys=True): v for c, v in
            zip(s.policy.configs, s.policy.predicted_rewards(), strict=True)}
    # unseen middles: a at 7 beats a at 3; b at 3 beats b at 7
    a7, a3 = (pred[json.dumps({"solve.model": "a", "solve.samples": k}, sort_keys=True)]
              for k in (7, 3))
    b7, b3 = (pred[json.dumps({"solve.model": "b", "solve.samples": k}, sort_keys=True)]
              for k in (7, 3))
    assert a7 > a3 and b3 > b7


def test_a_pruned_trials_partial_score_counts_with_its_weight():
    good = {"solve.model": "a", "solve.samples": 5}

    def predicted_after(questions: int) -> float:
        s = searcher_for(options={"prior": False})
        if questions:
            s.history.append(Record(0, good, "pruned", {"accuracy": 1.0}, questions,
                                    questions, questions))
        s.refresh()
        return float(s.policy.predicted_rewards()[s.policy.index[s.space.key(good)]])

    before, few, many = predicted_after(0), predicted_after(4), predicted_after(400)
    assert before < few < many < 1.0


def test_hypervolume_improvement_is_the_area_a_point_adds():
    from tts_graph.search.policy import hypervolume_improvement

    front = [(0.5, 1.0), (0.8, 3.0)]  # (accuracy, cost); reference cost 4
    acc = np.array([0.9, 0.6, 0.4, 0.9])
    cost = np.array([2.0, 0.5, 2.0, 5.0])
    hvi = hypervolume_improvement(acc, cost, front, 4.0)
    # (0.9, 2): above 0.5 on [2, 3) and above 0.8 on [3, 4): 0.4 + 0.1
    # (0.6, 0.5): 0.6 on [0.5, 1), 0.1 above 0.5 on [1, 3), below 0.8 after: 0.3 + 0.2
    # (0.4, 2) is dominated by (0.5, 1); (0.9, 5) costs more than the reference
    assert hvi == pytest.approx([0.5, 0.5, 0.0, 0.0])


# --------------------------------------------------------------------- feedback update


def test_feedback_moves_the_prior_toward_suggested_values(caplog):
    reply = json.dumps({"analysis": "b is right every time; width helps a little",
                        "updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0},
                                    {"param": "solve.samples", "value": 8,  # snaps to 7
                                     "direction": "increase", "strength": 0.8}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic("```json\n" + reply
                                                                     + "\n```"),
                     options={"initial_feedback": False, "prior": False})

    def predicted(config: dict) -> float:
        s.refresh()
        return float(s.policy.predicted_rewards()[s.policy.index[s.space.key(config)]])

    with caplog.at_level(logging.INFO, logger="tts_graph.search"):
        tell_batch(s)  # every graph scores 50%: the data alone favours nothing
    assert s.feedback_updates == 1 and s.numeric_updates == 0
    assert s.last_feedback_error is None
    b7, a7, b1 = ({"solve.model": m, "solve.samples": k} for m, k in (("b", 7), ("a", 7),
                                                                      ("b", 1)))
    # the prior moved by strength × step 1.5 × 0.05 (0.075 for b, 0.06 for 7 samples),
    # then four trials at 50% pulled every graph back toward 50% a little
    assert predicted(b7) - predicted(a7) > 0.04
    assert predicted(b7) - predicted(b1) > 0.02
    assert s.probs("solve.model")[1] > 0.5
    assert not [r for r in caplog.records if "numeric" in r.getMessage()]
    # the request showed the feedback model the graphs, scores, π, models and insights
    backend = s.feedback_backend
    assert isinstance(backend, ScriptedBackend) and len(backend.requests) == 1
    req = backend.requests[0]
    assert req.n == 1 and req.temperature <= 0.3 and req.max_tokens == 512
    text = req.messages[-1].content
    for needle in ("solve.model", "solve.samples", "accuracy 50.0%", "sweet spot",
                   "3B parameters", '"updates"', "95% CI"):
        assert needle in text, needle
    # the update is in the study's history
    attrs = s.study.user_attrs
    info = attrs["agent_reinforce.s0.update.0001"]
    assert info["kind"] == "feedback" and info["analysis"].startswith("b is right")
    assert info["modes"]["solve.model"] == "b"
    assert attrs["agent_reinforce.s0.state"]["feedback_updates"] == 1


def test_the_feedback_models_prior_comes_before_the_first_trial():
    reply = json.dumps({"analysis": "b is the stronger model",
                        "updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply),
                     options={"prior": False})
    s.ask()
    backend = s.feedback_backend
    assert isinstance(backend, ScriptedBackend) and len(backend.requests) == 1
    assert "No graph has been tried yet" in backend.requests[0].messages[-1].content
    assert s.feedback_updates == 1
    # π before any trial: the model's advice makes b the likelier model, from even odds
    rng = np.random.default_rng(0)
    with_advice = s.policy.marginals(rng, draws=2000)["solve.model"][1]
    plain = searcher_for(options={"prior": False})
    plain.refresh()
    without = plain.policy.marginals(rng, draws=2000)["solve.model"][1]
    assert abs(without - 0.5) < 0.05 and with_advice > without + 0.1


def test_repeated_advice_cannot_outweigh_the_measurements():
    # the feedback keeps pushing model a; every trial shows a wrong and b right
    reply = json.dumps({"updates": [{"param": "solve.model", "value": "a",
                                     "direction": "increase", "strength": 1.0}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply), batch=1)
    models = [c["solve.model"] for c in tell_batch_n(
        s, 8, acc_of=lambda c: 1.0 if c["solve.model"] == "b" else 0.0)]
    assert s.feedback_updates == 9  # the prior call and one per trial
    assert models[-4:].count("b") >= 3 or set(models) == {"a", "b"}
    s.refresh()
    best = s.policy.configs[int(np.argmax(s.policy.predicted_rewards()))]
    assert best["solve.model"] == "b"


@pytest.mark.parametrize("reply, why", [
    ("I think you should use model b.", "no JSON object"),
    ('{"updates": [{"param": "solve.model", "value": "b", ', "invalid JSON"),
    ('{"updates": [{"param": "solve.width", "value": 3, "direction": "increase"}]}',
     "unknown param"),
    ('{"updates": [{"param": "solve.model", "value": "c", "direction": "increase"}]}',
     "unknown value"),
    ('{"updates": [{"param": "solve.samples", "value": 40, "direction": "increase"}]}',
     "unknown value"),
    ('{"updates": [{"param": "solve.model", "value": "b", "direction": "up"}]}',
     "direction"),
    ('{"updates": [{"param": "solve.model", "value": "b", "direction": "increase", '
     '"strenght": 1}]}', "strenght"),
    ('{"analysis": "nothing to change", "updates": []}', "updates"),
])
def test_invalid_feedback_falls_back_to_numeric_update(caplog, reply, why):
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply),
                     options={"initial_feedback": False})
    with caplog.at_level(logging.INFO, logger="tts_graph.search"):
        tell_batch(s, acc_of=lambda c: 1.0 if c["solve.model"] == "b" else 0.0)
    assert s.feedback_updates == 0 and s.numeric_updates == 1
    assert s.last_feedback_error and why in s.last_feedback_error
    msgs = [r.getMessage() for r in caplog.records if r.name == "tts_graph.search"]
    assert any("invalid" in m and "numeric REINFORCE" in m and why in m for m in msgs), msgs
    info = s.study.user_attrs["agent_reinforce.s0.update.0001"]
    assert info["kind"] == "numeric" and why in info["reason"]


def test_feedback_call_error_falls_back(caplog):
    def boom(req, i):
        raise RuntimeError("server down")

    s = searcher_for(models=MODELS, options={"initial_feedback": False})
    s.feedback_backend = ScriptedBackend(boom, name="critic")
    with caplog.at_level(logging.WARNING, logger="tts_graph.search"):
        tell_batch(s)
    assert s.numeric_updates == 1 and "server down" in (s.last_feedback_error or "")
    assert any("server down" in r.getMessage() for r in caplog.records)


def test_feedback_works_inside_a_running_event_loop():
    reply = json.dumps({"updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply))

    async def main() -> None:  # as the driver does: ask() and tell() from inside the loop
        tell_batch(s)
        tell_batch(s)

    asyncio.run(main())
    tell_batch(s)  # and outside one
    assert s.feedback_updates == 4 and s.numeric_updates == 0  # the prior call, 3 batches
    s.close()


def test_parse_feedback_accepts_text_values_and_snaps_ranges():
    s = searcher_for()
    fb = parse_feedback('Here: {"analysis": "", "updates": [{"param": "solve.samples", '
                        '"value": "5", "direction": "decrease"}, {"param": "solve.samples",'
                        ' "value": 1.8, "direction": "increase", "strength": 0.1}]} done',
                        s.params, s.levels)
    assert [u.index for u in fb.updates] == [2, 0]


def test_parse_feedback_reads_numbers_back_as_the_prompt_shows_them():
    # the prompt prints 1.0 as "1": a reply echoing it names that level
    from tts_graph.search.feedback import match_level
    from tts_graph.search.space import Param

    p = Param("solve.temperature", "categorical", (0.3, 0.7, 1.0))
    levels = [0.3, 0.7, 1.0]
    assert [match_level(p, levels, v) for v in ("1", "0.7", 1, "0.30", "2")] == [
        2, 1, 2, 0, None]


def test_options_and_feedback_model_errors_are_clear():
    with pytest.raises(TTSGraphError, match="explore"):
        searcher_for(options={"explore": -1})
    with pytest.raises(TTSGraphError, match="unknwon"):
        searcher_for(options={"unknwon": 1})
    with pytest.raises(TTSGraphError, match="'judge' is not a model"):
        searcher_for(feedback_model="judge")
    s = searcher_for(options={"feedback": {"backend": "scripted", "model": "critic"}})
    assert isinstance(s.feedback_backend, ScriptedBackend)


# ---------------------------------------------------------------------- numeric update


def test_numeric_update_is_the_conjugate_posterior():
    # one observation y of graph x with binomial noise v: the prediction for x moves from the
    # prior mean m0 by s0² / (s0² + v) of the way to y, s0² = φᵀΛφ (the prior's variance of
    # r(x)), exactly as Bayes' rule for a Gaussian prior and likelihood says
    s = searcher_for(options={"prior": False, "misfit": 0.02})
    x = {"solve.model": "a", "solve.samples": 5}
    pol = s.policy
    phi = pol.X[pol.index[s.space.key(x)]]
    m0 = float(phi @ (pol.w0 + pol.offsets))
    s0 = float(phi ** 2 @ pol.prior_var)
    s.history.append(Record(0, x, "complete", {"accuracy": 0.9}, 50, 45, 50))
    s.refresh()
    p = (45 + 1) / (50 + 2)
    v = p * (1 - p) / 50 + 0.02 ** 2
    expected = m0 + s0 / (s0 + v) * (0.9 - m0)
    assert float(pol.predicted_rewards()[pol.index[s.space.key(x)]]) == pytest.approx(expected)
    assert s.numeric_updates == 0  # a numeric update is counted per batch, not per trial
    tell_batch_n(s, 4)
    assert s.numeric_updates == 1


def test_never_proposes_a_graph_over_a_constraint_nor_one_tried(tmp_path):
    base = {**BASE, "models": {
        "a": {**MODELS["a"], "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}},
        "b": {**MODELS["b"], "price": {"input_per_mtok": 200.0, "output_per_mtok": 200.0}}}}
    spec = SearchSpec.model_validate({
        "name": "t", "base": "base.yaml", "task": {"name": "x.jsonl"}, "choices": CHOICES,
        "constraints": {"max_cost_usd_per_query": 0.05, "prompt_tokens_estimate": 100},
        "budget": {"trials": 10}, "searcher": {"name": "agent-reinforce"}})
    space = Space(spec, base)
    s = AgentReinforceSearcher(space, make_study("t", None, ["accuracy"]), ["accuracy"],
                               base_models=base["models"])
    # b costs $400/Mtok: one call (100 + 256 tokens) is $0.0712, over the cap; a fits at
    # any width
    assert sorted(c["solve.samples"] for c in s.policy.configs) == [1, 3, 5, 7, 9]
    assert {c["solve.model"] for c in s.policy.configs} == {"a"}
    assert len(s.policy.excluded) == 5
    seen = [json.dumps(c, sort_keys=True) for c in tell_batch_n(s, 5)]
    assert len(set(seen)) == 5
    again = s.ask()  # all five tried: the best one again (the driver tells it, uncounted)
    assert json.dumps(again.config, sort_keys=True) in seen


def test_a_switched_off_nodes_fields_are_not_proposed():
    base = {**BASE, "nodes": {
        "solve": {"role": "solver", "model": "a", "samples": 1},
        "check": {"role": "judge", "model": "a", "inputs": ["solve"]},
        "vote": {"role": "vote", "inputs": ["check"]}}}
    choices = [*CHOICES, {"node": "check"},
               {"node": "check", "field": "model", "values": ["a", "b"]}]
    s = searcher_for(base=base, choices=choices)
    assert s.space.size() == 10 * 3 == len(s.policy.configs)
    for _ in range(30):
        p = s.ask()
        assert ("check.model" in p.config) == p.config["check.enabled"]
        assert p.trial.params == p.config
        s.tell(p, TrialResult("complete", values={"accuracy": 0.5}, questions=8))
    assert len({s.space.key(t.params) for t in s.study.trials}) == 30


def test_numeric_search_finds_the_good_model_first(tmp_path, caplog):
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 3, "batch": 4,
                                   "options": {"prior": False}},
               trials=10, questions=12)
    session = session_of(path, out_dir=tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="tts_graph.search"):
        ran = asyncio.run(session.run())
    s = session.searcher
    assert isinstance(s, AgentReinforceSearcher) and ran == 10
    assert s.numeric_updates == 2 and s.feedback_updates == 0
    assert any("numeric REINFORCE update (no feedback model set)" in r.getMessage()
               for r in caplog.records)
    # once one a and one b are seen, the other b graphs come before the other a graphs
    models = [t.params["solve.model"] for t in sorted(session.study.trials,
                                                      key=lambda t: t.number)]
    firsts = models.index("a"), models.index("b")
    after = models[max(firsts) + 1:]
    assert after[:after.count("b")] == ["b"] * after.count("b"), models
    assert session.front()[0].config["solve.model"] == "b"


def test_proposals_are_optuna_trials_with_their_params(tmp_path):
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 1, "batch": 3},
               trials=9)
    session = session_of(path, out_dir=tmp_path / "out")
    seen: list[tuple[int, dict]] = []
    asyncio.run(session.run(lambda p, r: seen.append((p.number, dict(p.config)))))
    trials = session.study.get_trials(deepcopy=False)
    assert len(trials) == 9
    dists = {p.name: distribution(p) for p in session.space.params}
    for number, config in seen:
        t = trials[number]
        assert t.params == config and t.state == optuna.trial.TrialState.COMPLETE
        assert t.distributions == dists
        assert config["solve.samples"] in (1, 3, 5, 7, 9)
        assert t.values[0] == (1.0 if config["solve.model"] == "b" else 0.0)
    # 10 configurations in the space: no repeat while unseen ones are likely (the first
    # batch, drawn from the prior), few once θ has concentrated on the good model
    keys = [json.dumps(c, sort_keys=True) for _, c in seen]
    assert len(set(keys[:3])) == 3 and len(set(keys)) >= 7


def test_same_seed_same_search(tmp_path):
    def run(seed: int, where: str) -> list[dict]:
        path = toy(tmp_path / where, searcher={"name": "agent-reinforce", "seed": seed,
                                               "batch": 2}, trials=6)
        session = session_of(path, out_dir=tmp_path / where / "out")
        asyncio.run(session.run())
        return [t.params for t in session.study.trials]

    for d in ("x", "y", "z"):
        (tmp_path / d).mkdir()
    first = run(5, "x")
    assert first == run(5, "y")
    assert first != run(6, "z")


def test_resume_continues_from_stored_theta(tmp_path):
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 2, "batch": 4},
               trials=8)
    storage = optuna.storages.InMemoryStorage()
    s1 = session_of(path, out_dir=tmp_path / "out", storage=storage)
    asyncio.run(s1.run())
    theta = s1.searcher.theta()
    s2 = session_of(path, out_dir=tmp_path / "out", storage=storage)  # same storage
    s = s2.searcher
    assert isinstance(s, AgentReinforceSearcher)
    assert s.theta() == theta and s.numeric_updates == 2 and len(s.history) == 8


# ------------------------------------------------------------------------- end to end


def _cli(path: Path, out: Path) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(out), "--json"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_search_finds_the_good_model(tmp_path):
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 0, "batch": 4},
               trials=8, pruning=True, questions=32)
    report = _cli(path, tmp_path / "out")
    best = report["front"][0]
    assert best["config"]["solve.model"] == "b"
    assert best["search"]["accuracy"] == 1.0 and best["heldout"]["accuracy"] == 1.0
    exported = yaml.safe_load(Path(best["graph_file"]).read_text())
    assert exported["nodes"]["solve"]["model"] == "b"
    study = optuna.load_study(study_name="toy-search",
                              storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    kinds = [v["kind"] for k, v in study.user_attrs.items() if ".update." in k]
    assert kinds == ["numeric"] * 2


def test_search_with_a_feedback_model_from_the_base_graph(tmp_path):
    reply = json.dumps({"analysis": "model b answers correctly",
                        "updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0},
                                    {"param": "solve.samples", "value": 1,
                                     "direction": "increase", "strength": 0.5}]})
    base = {**BASE, "models": scripted_critic(reply)}
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 0, "batch": 2,
                                   "feedback_model": "critic"},
               trials=10, base=base, objectives=["accuracy", "tokens"])
    session = session_of(path, out_dir=tmp_path / "out")
    asyncio.run(session.run())  # tell() runs inside this event loop
    s = session.searcher
    assert isinstance(s, AgentReinforceSearcher)
    # the prior call before the first trial, then one per batch of 2 (10 graphs in the space)
    assert s.feedback_updates == 6 and s.numeric_updates == 0 and s.feedback_tokens > 0
    assert level_prob(s, "solve.model", "b") > 0.95
    assert all(e.config["solve.model"] == "b" for e in session.front())
    updates = [v for k, v in session.study.user_attrs.items() if ".update." in k]
    assert [u["kind"] for u in updates] == ["feedback"] * 6
    assert updates[0]["analysis"] == "model b answers correctly"


def test_a_space_with_no_graph_under_the_constraints_is_one_line_exit_2(tmp_path):
    base = {**BASE, "models": {k: {**v, "price": {"input_per_mtok": 1e6,
                                                   "output_per_mtok": 1e6}}
                               for k, v in MODELS.items()}}
    path = toy(tmp_path, searcher={"name": "agent-reinforce"}, base=base)
    data = yaml.safe_load(path.read_text())
    data["constraints"] = {"max_cost_usd_per_query": 0.01}
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "tts_graph", "search", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no graph of the search space fits the constraints" in lines[0]
