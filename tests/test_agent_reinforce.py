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
from tts_graph.search.agent_reinforce import AgentReinforceSearcher, parse_feedback
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
    configs = []
    for _ in range(s.batch):
        p = s.ask()
        configs.append(p.config)
        s.tell(p, TrialResult("complete", values={"accuracy": acc_of(p.config)}, questions=8))
    return configs


# ---------------------------------------------------------------------------------- θ


def test_prior_favours_middle_width_and_uniform_models():
    s = searcher_for()
    assert s.levels["solve.samples"] == [1, 3, 5, 7, 9]
    p = s.probs("solve.samples")
    assert p[2] == p.max() and p[0] == pytest.approx(p[4]) and p[0] < p[2] * 0.5
    assert s.probs("solve.model") == pytest.approx([0.5, 0.5])
    assert sum(p) == pytest.approx(1.0)


def test_interaction_prior_rarely_pushes_width_and_depth_to_the_top_together():
    base = {**BASE, "nodes": {
        "solve": {"role": "solver", "model": "a", "samples": 1},
        "refine": {"role": "refiner", "model": "a", "inputs": ["solve"], "rounds": 1}},
        "output": "refine"}
    choices = [{"node": "solve", "field": "samples", "values": [1, 2, 3, 4]},
               {"node": "refine", "field": "rounds", "values": [1, 2, 3, 4]}]
    s = searcher_for(base=base, choices=choices, options={"interaction": 1.0})
    assert s.width == ["solve.samples"] and s.depth == ["refine.rounds"]
    draws = [s._draw() for _ in range(2000)]
    both = sum(d["solve.samples"] == 4 and d["refine.rounds"] == 4 for d in draws)
    alone = sum(d["solve.samples"] == 4 for d in draws)
    assert both == 0 and alone > 150  # top width alone stays possible


# --------------------------------------------------------------------- feedback update


def test_feedback_moves_theta_toward_suggested_value(caplog):
    reply = json.dumps({"analysis": "b is right every time; width helps a little",
                        "updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0},
                                    {"param": "solve.samples", "value": 8,  # snaps to 7
                                     "direction": "increase", "strength": 0.8}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic("```json\n" + reply
                                                                     + "\n```"))
    before_b = level_prob(s, "solve.model", "b")
    before_7 = level_prob(s, "solve.samples", 7)
    with caplog.at_level(logging.INFO, logger="tts_graph.search"):
        tell_batch(s)
    assert s.feedback_updates == 1 and s.numeric_updates == 0
    assert s.last_feedback_error is None
    assert level_prob(s, "solve.model", "b") > before_b + 0.3
    assert level_prob(s, "solve.samples", 7) > before_7 + 0.1
    assert not [r for r in caplog.records if "numeric" in r.getMessage()]
    # the request showed the feedback model the graphs, scores, θ, models and insights
    backend = s.feedback_backend
    assert isinstance(backend, ScriptedBackend) and len(backend.requests) == 1
    req = backend.requests[0]
    assert req.n == 1 and req.temperature <= 0.3 and req.max_tokens == 512
    text = req.messages[-1].content
    for needle in ("solve.model", "solve.samples", "accuracy 50.0%", "sweet spot",
                   "3B parameters", '"updates"'):
        assert needle in text, needle
    # the update is in the study's history
    attrs = s.study.user_attrs
    info = attrs["agent_reinforce.s0.update.0001"]
    assert info["kind"] == "feedback" and info["analysis"].startswith("b is right")
    assert info["modes"]["solve.model"] == "b"
    assert attrs["agent_reinforce.s0.state"]["feedback_updates"] == 1


def test_feedback_decrease_and_floor_keep_every_value_possible():
    reply = json.dumps({"updates": [{"param": "solve.model", "value": "a",
                                     "direction": "decrease", "strength": 1.0}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply), batch=1)
    for _ in range(30):
        tell_batch(s)
    assert s.feedback_updates == 30
    p_a = level_prob(s, "solve.model", "a")
    assert 0 < p_a < 0.05 and p_a >= min(s.opts.floor, 0.25) - 1e-12


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
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply))
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

    s = searcher_for(models=MODELS)
    s.feedback_backend = ScriptedBackend(boom, name="critic")
    with caplog.at_level(logging.WARNING, logger="tts_graph.search"):
        tell_batch(s)
    assert s.numeric_updates == 1 and "server down" in (s.last_feedback_error or "")
    assert any("server down" in r.getMessage() for r in caplog.records)


def test_feedback_works_inside_a_running_event_loop():
    reply = json.dumps({"updates": [{"param": "solve.model", "value": "b",
                                     "direction": "increase", "strength": 1.0}]})
    s = searcher_for(feedback_model="critic", models=scripted_critic(reply))

    async def main() -> None:  # as the driver does: tell() from inside the loop
        tell_batch(s)
        tell_batch(s)

    asyncio.run(main())
    tell_batch(s)  # and outside one
    assert s.feedback_updates == 3 and s.numeric_updates == 0
    s.close()


def test_parse_feedback_accepts_text_values_and_snaps_ranges():
    s = searcher_for()
    fb = parse_feedback('Here: {"analysis": "", "updates": [{"param": "solve.samples", '
                        '"value": "5", "direction": "decrease"}, {"param": "solve.samples",'
                        ' "value": 1.8, "direction": "increase", "strength": 0.1}]} done',
                        s.params, s.levels)
    assert [u.index for u in fb.updates] == [2, 0]


def test_options_and_feedback_model_errors_are_clear():
    with pytest.raises(TTSGraphError, match="lr"):
        searcher_for(options={"lr": -1})
    with pytest.raises(TTSGraphError, match="unknwon"):
        searcher_for(options={"unknwon": 1})
    with pytest.raises(TTSGraphError, match="'judge' is not a model"):
        searcher_for(feedback_model="judge")
    s = searcher_for(options={"feedback": {"backend": "scripted", "model": "critic"}})
    assert isinstance(s.feedback_backend, ScriptedBackend)


# ---------------------------------------------------------------------- numeric update


def test_numeric_update_is_reinforce_with_baseline():
    s = searcher_for(batch=2, options={"lr": 1.0})
    s.baseline = 0.5
    from tts_graph.search.agent_reinforce import Record

    pi = s.probs("solve.model").copy()
    z = s.logits["solve.model"].copy()
    batch = [Record(0, {"solve.model": "b", "solve.samples": 5}, "complete", {"accuracy": 1.0}),
             Record(1, {"solve.model": "b", "solve.samples": 5}, "complete", {"accuracy": 1.0})]
    s.history += batch
    s.update(batch)
    scale = 0.05  # every reward seen is 1.0: the std is 0, floored at 0.05
    expected = z + 1.0 * ((1.0 - 0.5) / scale) * (np.array([0.0, 1.0]) - pi)
    expected = np.clip(np.clip(expected - z, -3, 3) + z, -6, 6)
    expected -= expected.mean()
    assert s.logits["solve.model"] == pytest.approx(np.clip(expected, -6, 6))
    assert s.numeric_updates == 1 and s.baseline == pytest.approx(0.7 * 0.5 + 0.3 * 1.0)


def test_reward_trades_accuracy_against_normalised_cost():
    from tts_graph.search.agent_reinforce import Record

    s = searcher_for(objectives=["accuracy", "tokens"], options={"cost_weight": 0.5})
    recs = [Record(0, {}, "complete", {"accuracy": 0.8, "tokens": 100.0}),
            Record(1, {}, "complete", {"accuracy": 0.9, "tokens": 1000.0}),
            Record(2, {}, "infeasible", {}), Record(3, {}, "failed", {})]
    s.history += recs
    assert s.rewards(recs) == pytest.approx([0.8 - 0.05, 0.9 - 0.5, -0.5, None])


def test_numeric_search_concentrates_on_the_good_model(tmp_path, caplog):
    path = toy(tmp_path, searcher={"name": "agent-reinforce", "seed": 3, "batch": 4},
               trials=24, questions=12)
    session = session_of(path, out_dir=tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="tts_graph.search"):
        ran = asyncio.run(session.run())
    s = session.searcher
    assert isinstance(s, AgentReinforceSearcher) and ran == 24
    assert s.numeric_updates == 6 and s.feedback_updates == 0
    assert level_prob(s, "solve.model", "b") > 0.9
    assert any("numeric REINFORCE update (no feedback model set)" in r.getMessage()
               for r in caplog.records)
    # the later proposals follow θ: mostly b
    last = [t.params["solve.model"] for t in session.study.trials[-8:]]
    assert last.count("b") >= 6
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
               trials=12, pruning=True, questions=32)
    report = _cli(path, tmp_path / "out")
    best = report["front"][0]
    assert best["config"]["solve.model"] == "b"
    assert best["search"]["accuracy"] == 1.0 and best["heldout"]["accuracy"] == 1.0
    exported = yaml.safe_load(Path(best["graph_file"]).read_text())
    assert exported["nodes"]["solve"]["model"] == "b"
    study = optuna.load_study(study_name="toy-search",
                              storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    kinds = [v["kind"] for k, v in study.user_attrs.items() if ".update." in k]
    assert kinds == ["numeric"] * 3


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
    assert s.feedback_updates == 5 and s.numeric_updates == 0 and s.feedback_tokens > 0
    assert level_prob(s, "solve.model", "b") > 0.95
    assert all(e.config["solve.model"] == "b" for e in session.front())
    updates = [v for k, v in session.study.user_attrs.items() if ".update." in k]
    assert [u["kind"] for u in updates] == ["feedback"] * 5
    assert updates[0]["analysis"] == "model b answers correctly"
