"""Each role's behaviour on the scripted backend: what its prompts hold, what it outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tts_graph import Executor, GraphErrors, QueryResult, custom_roles, loads_graph
from tts_graph.backends.base import GenerationRequest
from tts_graph.backends.scripted import ScriptedBackend
from tts_graph.errors import BackendError, TTSGraphError
from tts_graph.roles import registry
from tts_graph.roles.base import Call, Role, StepContext, StepPlan
from tts_graph.roles.ranker import parse_ranking
from tts_graph.roles.registry import register_role
from tts_graph.types import Candidate, Completion, StepOutput

Responder = Callable[[GenerationRequest, int], str]
QUESTION = "What is 2+2?"


def prompt(req: GenerationRequest) -> str:
    return "\n".join(m.content for m in req.messages)


def user(req: GenerationRequest) -> str:
    return req.messages[-1].content


def run(nodes: str, responders: dict[str, Responder | ScriptedBackend], *, output: str,
        question: str = QUESTION) -> tuple[QueryResult, dict[str, ScriptedBackend]]:
    """Run a graph whose models are the keys of ``responders`` (each its own backend)."""
    decl = ", ".join(f"{m}: {{backend: scripted, model: {m}}}" for m in responders)
    doc = loads_graph(f"version: 1\nname: t\nmodels: {{{decl}}}\nnodes:\n{nodes}\n"
                      f"output: {output}\n")
    backends = {m: r if isinstance(r, ScriptedBackend) else ScriptedBackend(r)
                for m, r in responders.items()}
    return Executor(doc, backends=backends).run(question), backends


def listed(*texts: str) -> Responder:
    """Sample i of the step gets ``texts[i]``."""
    return lambda req, i: texts[req.sample_offset + i]


# ------------------------------------------------------------------------------ planner


def test_planner_context_reaches_the_solver_prompt() -> None:
    res, b = run(
        """
  plan: {role: planner, model: p}
  solve: {role: solver, model: s, inputs: [plan]}
""",
        {"p": lambda req, i: "1. Add the numbers.\n2. Report the sum.",
         "s": lambda req, i: "2 and 2 make 4.\nAnswer: 4"},
        output="solve",
    )
    (preq,) = b["p"].requests
    assert QUESTION in user(preq)
    assert "plan" in preq.messages[0].content.lower()
    assert res.steps["plan"].kind == "plan"
    assert res.steps["plan"].candidates[0].text == "1. Add the numbers.\n2. Report the sum."
    (sreq,) = b["s"].requests
    assert user(sreq) == f"Plan:\n1. Add the numbers.\n2. Report the sum.\n\n{QUESTION}"
    assert res.answer == "4"


# ------------------------------------------------------------------------------- critic


def test_critic_feedback_reaches_the_next_solver() -> None:
    res, b = run(
        """
  first: {role: solver, model: s, samples: 3}
  crit: {role: critic, model: c, inputs: [first], limit: 2}
  second: {role: solver, model: s2, inputs: [crit]}
""",
        {"s": listed("Guess.\nAnswer: 5", "Sum.\nAnswer: 4", "Other.\nAnswer: 22"),
         "c": lambda req, i: ("No errors." if "Answer: 4" in user(req)
                              else "The sum is wrong."),
         "s2": lambda req, i: "Answer: 4"},
        output="second",
    )
    # one critique per candidate, up to the limit
    assert len(b["c"].requests) == 2
    assert [("Answer: 5" in user(r), "Answer: 4" in user(r)) for r in b["c"].requests] == [
        (True, False), (False, True)]
    crit = res.steps["crit"]
    assert crit.kind == "critique"
    assert [c.text for c in crit.candidates] == ["The sum is wrong.", "No errors."]
    assert [c.meta["target"] for c in crit.candidates] == ["Guess.\nAnswer: 5", "Sum.\nAnswer: 4"]
    (sreq,) = b["s2"].requests
    assert user(sreq) == (
        "Feedback on earlier attempts:\n- The sum is wrong.\n- No errors.\n\n" + QUESTION
    )
    assert res.answer == "4"


# ------------------------------------------------------------------------------ refiner


def test_refiner_rounds_critique_then_revise() -> None:
    revised: list[str] = []

    def revise(req: GenerationRequest, i: int) -> str:
        text = f"Revision {len(revised) + 1}.\nAnswer: {40 + len(revised)}"
        revised.append(text)
        return text

    res, b = run(
        """
  solve: {role: solver, model: s}
  refine: {role: refiner, model: r, critic_model: c, rounds: 2, inputs: [solve]}
""",
        {"s": lambda req, i: "First try.\nAnswer: 3",
         "c": lambda req, i: f"Critique number {len(revised) + 1}.",
         "r": revise},
        output="refine",
    )
    assert set(res.steps) == {"solve", "refine@r1.critique", "refine@r1.revise",
                              "refine@r2.critique", "refine"}
    c1, c2 = b["c"].requests
    r1, r2 = b["r"].requests
    # round 1 critiques the solver's answer, round 2 the first revision
    assert "First try.\nAnswer: 3" in user(c1)
    assert "reviewer" in c1.messages[0].content
    assert "Revision 1.\nAnswer: 40" in user(c2) and "First try" not in user(c2)
    # each revision sees the solution it revises and the critique of it
    assert "Previous solution:\nFirst try.\nAnswer: 3" in user(r1)
    assert "Critique:\nCritique number 1." in user(r1)
    assert "Previous solution:\nRevision 1.\nAnswer: 40" in user(r2)
    assert "Critique:\nCritique number 2." in user(r2)
    assert res.steps["refine@r1.critique"].kind == "critique"
    assert res.steps["refine@r1.revise"].candidates[0].answer == "40"
    assert res.text == "Revision 2.\nAnswer: 41"
    assert res.answer == "41"
    assert res.steps["refine"].meta["round"] == 2
    assert {c.model for c in res.calls} == {"s", "c", "r"}


def test_refiner_prompt_override_applies_to_revise_only() -> None:
    _, b = run(
        """
  solve: {role: solver, model: s}
  refine:
    role: refiner
    model: r
    inputs: [solve]
    prompts: {user: "FIX {candidate} USING {critique}"}
""",
        {"s": lambda req, i: "Answer: 3", "r": lambda req, i: "Answer: 4"},
        output="refine",
    )
    crit_req, rev_req = b["r"].requests  # no critic_model: the model critiques itself
    assert "Critique:" in user(crit_req) and "FIX" not in user(crit_req)
    assert user(rev_req) == "FIX Answer: 3 USING Answer: 4"


# -------------------------------------------------------------------------------- judge

SOLUTIONS = ("So it is 5.\nAnswer: 5", "So it is 4.\nAnswer: 4", "So it is 22.\nAnswer: 22")
JUDGE_GRAPH = """
  solve: {role: solver, model: s, samples: 3}
  judge: {role: judge, model: j, inputs: [solve]}
"""


def test_judge_select_picks_the_named_candidate() -> None:
    res, b = run(JUDGE_GRAPH, {"s": listed(*SOLUTIONS), "j": lambda req, i: "Best: 2"},
                 output="judge")
    (jreq,) = b["j"].requests
    for k, text in enumerate(SOLUTIONS, start=1):
        assert f"[Solution {k}]\n{text}" in user(jreq)
    assert "(1 to 3)" in user(jreq)
    out = res.steps["judge"]
    assert [c.answer for c in out.candidates] == ["4", "5", "22"]
    assert out.candidates[0].score == 1.0
    assert out.meta["judged"] is True and out.meta["pick"] == 2
    assert res.answer == "4"


@pytest.mark.parametrize("reply", ["I cannot decide.", "Best: 7", "Best: 1.5"])
def test_judge_select_unparseable_reply_keeps_order(reply: str) -> None:
    res, _ = run(JUDGE_GRAPH, {"s": listed(*SOLUTIONS), "j": lambda req, i: reply},
                 output="judge")
    out = res.steps["judge"]
    assert [c.text for c in out.candidates] == list(SOLUTIONS)
    assert out.meta["judged"] is False
    assert res.answer == "5"


def test_judge_with_one_candidate_makes_no_call() -> None:
    res, b = run("""
  solve: {role: solver, model: s}
  judge: {role: judge, model: j, inputs: [solve]}
""", {"s": lambda req, i: "Answer: 4", "j": lambda req, i: "Best: 1"}, output="judge")
    assert b["j"].requests == []
    assert res.answer == "4"


def test_judge_score_mode_orders_by_score() -> None:
    scores = {"5": "Score: 3", "4": "Score: 9", "22": "I'd give it 0, no: Score: 1"}

    def judge(req: GenerationRequest, i: int) -> str:
        return next(v for k, v in scores.items() if f"Answer: {k}\n" in user(req) + "\n")

    res, b = run("""
  solve: {role: solver, model: s, samples: 3}
  judge: {role: judge, model: j, mode: score, inputs: [solve]}
""", {"s": listed(*SOLUTIONS), "j": judge}, output="judge")
    assert len(b["j"].requests) == 3  # one call per candidate
    assert all("Rate its correctness" in user(r) for r in b["j"].requests)
    out = res.steps["judge"]
    assert [(c.answer, c.score) for c in out.candidates] == [("4", 9.0), ("5", 3.0),
                                                             ("22", 1.0)]
    assert res.answer == "4"


# ----------------------------------------------------------------------------- verifier


def test_verifier_keeps_passing_candidates() -> None:
    def verify(req: GenerationRequest, i: int) -> str:
        return "Verdict: yes" if "Answer: 4" in user(req) else "Verdict: no"

    graph = """
  solve: {role: solver, model: s, samples: 4}
  check: {role: verifier, model: v, inputs: [solve], keep: KEEP}
"""
    texts = ("A.\nAnswer: 5", "B.\nAnswer: 4", "C.\nAnswer: 22", "D, also:\nAnswer: 4")
    res, b = run(graph.replace("KEEP", "passing"), {"s": listed(*texts), "v": verify},
                 output="check")
    assert len(b["v"].requests) == 4
    out = res.steps["check"]
    assert [c.text for c in out.candidates] == [texts[1], texts[3]]
    assert all(c.meta["verdict"] is True and c.score == 1.0 for c in out.candidates)
    assert out.meta["passed"] == 2

    res, _ = run(graph.replace("KEEP", "all"), {"s": listed(*texts), "v": verify},
                 output="check")
    assert [c.text for c in res.steps["check"].candidates] == [texts[1], texts[3], texts[0],
                                                               texts[2]]


def test_verifier_first_k_keeps_the_first_passing() -> None:
    def verify(req: GenerationRequest, i: int) -> str:
        return "Verdict: yes" if "Answer: 4" in user(req) else "Verdict: no"

    texts = ("A.\nAnswer: 5", "B.\nAnswer: 4", "C.\nAnswer: 4", "D.\nAnswer: 4")
    res, _ = run("""
  solve: {role: solver, model: s, samples: 4}
  check: {role: verifier, model: v, inputs: [solve], first_k: 2}
""", {"s": listed(*texts), "v": verify}, output="check")
    out = res.steps["check"]
    assert [c.text for c in out.candidates] == [texts[1], texts[2]]
    assert out.meta["passed"] == 3


def test_verifier_keeps_everything_when_nothing_passes() -> None:
    def verify(req: GenerationRequest, i: int) -> str:
        return "Verdict: no" if "Answer: 5" in user(req) else "hmm"

    texts = ("A.\nAnswer: 5", "B.\nAnswer: 4")
    res, _ = run("""
  solve: {role: solver, model: s, samples: 2}
  check: {role: verifier, model: v, inputs: [solve]}
""", {"s": listed(*texts), "v": verify}, output="check")
    out = res.steps["check"]
    # unsure (0.5) before rejected (0.0)
    assert [(c.text, c.meta["verdict"]) for c in out.candidates] == [(texts[1], None),
                                                                     (texts[0], False)]


# ------------------------------------------------------------------------------- ranker


def test_parse_ranking() -> None:
    assert parse_ranking("Ranking: 3 > 1 > 2", 3) == [2, 0, 1]
    assert parse_ranking("2 > 2 > 9 > 1", 3) == [1, 0, 2]
    assert parse_ranking("no idea", 3) == [0, 1, 2]


def test_ranker_keeps_the_top_k_in_ranked_order() -> None:
    texts = ("A.\nAnswer: 1", "B.\nAnswer: 2", "C.\nAnswer: 3", "D.\nAnswer: 4")
    res, b = run("""
  solve: {role: solver, model: s, samples: 4}
  rank: {role: ranker, model: r, top_k: 2, inputs: [solve]}
""", {"s": listed(*texts), "r": lambda req, i: "Ranking: 3 > 1 > 4 > 2"}, output="rank")
    (rreq,) = b["r"].requests
    assert "Rank the 4 solutions" in user(rreq)
    assert all(f"[Solution {k}]\n{t}" in user(rreq) for k, t in enumerate(texts, start=1))
    out = res.steps["rank"]
    assert [c.text for c in out.candidates] == [texts[2], texts[0]]
    assert out.meta["ranked"] is True
    assert res.answer == "3"


# -------------------------------------------------------------------------------- fuser


def test_fuser_sees_every_candidate_and_writes_its_own_answer() -> None:
    res, b = run("""
  a: {role: solver, model: s, samples: 2}
  b: {role: solver, model: t}
  fuse: {role: fuser, model: f, samples: 2, inputs: [a, b]}
""", {"s": listed("S1.\nAnswer: 5", "S2.\nAnswer: 4"), "t": lambda req, i: "T.\nAnswer: 4",
      "f": lambda req, i: f"Combining them, fused {i}.\nAnswer: 4"}, output="fuse")
    (freq,) = b["f"].requests
    assert freq.n == 2
    for k, text in enumerate(("S1.\nAnswer: 5", "S2.\nAnswer: 4", "T.\nAnswer: 4"), start=1):
        assert f"[Solution {k}]\n{text}" in user(freq)
    out = res.steps["fuse"]
    assert [c.text for c in out.candidates] == ["Combining them, fused 0.\nAnswer: 4",
                                                "Combining them, fused 1.\nAnswer: 4"]
    assert all(c.model == "f" for c in out.candidates)
    assert res.answer == "4"


# --------------------------------------------------------------------------------- vote


def test_vote_majority_ties_go_to_the_first_seen() -> None:
    texts = ("a\nAnswer: 5", "b\nAnswer: 4", "c\nAnswer: 4", "d\nAnswer: 5", "e\nAnswer: 6")
    res, _ = run("""
  solve: {role: solver, model: s, samples: 5}
  vote: {role: vote, inputs: [solve]}
""", {"s": listed(*texts)}, output="vote")
    out = res.steps["vote"]
    assert [c.answer for c in out.candidates] == ["5", "4", "6"]
    assert out.meta["votes"] == {"5": 2.0, "4": 2.0, "6": 1.0}
    assert out.meta["voters"] == 5
    assert out.candidates[0].text == "a\nAnswer: 5"  # the first candidate with the answer
    assert out.candidates[0].score == pytest.approx(2 / 5)
    assert res.answer == "5"


def test_vote_majority_winner() -> None:
    texts = ("a\nAnswer: 5", "b\nAnswer: 4", "c\nAnswer: 4", "d\nI do not know")
    res, _ = run("""
  solve: {role: solver, model: s, samples: 4}
  vote: {role: vote, inputs: [solve], extract: number}
""", {"s": listed(*texts)}, output="vote")
    assert res.answer == "4"
    assert res.steps["vote"].meta["votes"] == {"4": 2.0, "5": 1.0}


WEIGHTED = """
  solve: {role: solver, model: s, samples: 3}
  judge: {role: judge, model: j, mode: score, inputs: [solve]}
  vote: {role: vote, method: METHOD, inputs: [judge]}
"""


def scored(table: dict[str, int]) -> Responder:
    def judge(req: GenerationRequest, i: int) -> str:
        return next(f"Score: {v}" for k, v in table.items() if k in user(req))

    return judge


def test_vote_weighted_uses_scores() -> None:
    texts = ("x\nAnswer: 4", "y\nAnswer: 5", "z\nAnswer: 5")
    table = {"x\n": 9, "y\n": 2, "z\n": 3}
    res, _ = run(WEIGHTED.replace("METHOD", "majority"),
                 {"s": listed(*texts), "j": scored(table)}, output="vote")
    assert res.answer == "5"  # two votes against one
    res, _ = run(WEIGHTED.replace("METHOD", "weighted"),
                 {"s": listed(*texts), "j": scored(table)}, output="vote")
    assert res.answer == "4"  # 9 against 2 + 3
    assert res.steps["vote"].meta["votes"] == {"4": 9.0, "5": 5.0}
    assert res.steps["vote"].candidates[0].score == pytest.approx(9 / 14)


def test_vote_weighted_ties_go_to_the_first_seen() -> None:
    texts = ("x\nAnswer: 4", "y\nAnswer: 5", "z\nAnswer: 5")
    # 4 gets x's 7; 5 gets y's 6 + z's 1: a tie, which the first candidate seen decides
    table = {"x\n": 7, "y\n": 6, "z\n": 1}
    res, _ = run(WEIGHTED.replace("METHOD", "weighted"),
                 {"s": listed(*texts), "j": scored(table)}, output="vote")
    out = res.steps["vote"]
    assert out.meta["votes"] == {"4": 7.0, "5": 7.0}
    assert res.answer == "4"  # x comes first: the judge ranked it highest
    assert [c.answer for c in out.candidates] == ["4", "5"]
    table = {"x\n": 6, "y\n": 7, "z\n": 1}
    res, _ = run(WEIGHTED.replace("METHOD", "weighted"),
                 {"s": listed(*texts), "j": scored(table)}, output="vote")
    assert res.steps["vote"].meta["votes"] == {"5": 8.0, "4": 6.0}
    table = {"x\n": 6, "y\n": 7, "z\n": 0}  # z unscored (out of range): weight 1
    res, _ = run(WEIGHTED.replace("METHOD", "weighted"),
                 {"s": listed(*texts), "j": scored(table)}, output="vote")
    assert res.steps["vote"].meta["votes"] == {"5": 8.0, "4": 6.0}


# ------------------------------------------------------------------------------- debate


def agent_reply(req: GenerationRequest, i: int) -> str:
    """Agent a (seed offset 1000 × a) answers 10 + a in round 1 and keeps it after."""
    agent = req.seed // 1000
    return f"Agent {agent} thinks so.\nAnswer: {10 + agent}"


def test_debate_agents_cycle_over_models_and_see_each_other() -> None:
    res, b = run("""
  d: {role: debate, models: [m1, m2], agents: 3, rounds: 2}
""", {"m1": agent_reply, "m2": agent_reply}, output="d")
    assert set(res.steps) == {"d@r1", "d"}
    # round 1: agents 0 and 2 on m1, agent 1 on m2; the same again in round 2
    assert sorted(r.seed // 1000 for r in b["m1"].requests) == [0, 0, 2, 2]
    assert sorted(r.seed // 1000 for r in b["m2"].requests) == [1, 1]
    r1 = [r for r in b["m1"].requests + b["m2"].requests if "Other agents" not in user(r)]
    r2 = [r for r in b["m1"].requests + b["m2"].requests if "Other agents" in user(r)]
    assert len(r1) == 3 and len(r2) == 3
    assert all(user(r) == QUESTION for r in r1)
    for req in r2:
        agent = req.seed // 1000
        own = f"Agent {agent} thinks so.\nAnswer: {10 + agent}"
        assert f"Your previous solution:\n{own}\n" in user(req)
        others = user(req).split("Other agents' solutions:")[1]
        for other in {0, 1, 2} - {agent}:
            assert f"[Agent {other + 1}]\nAgent {other} thinks so.\nAnswer: {10 + other}" in others
        assert own not in others
    out = res.steps["d"]
    assert [c.model for c in out.meta["agents"]] == ["m1", "m2", "m1"]
    assert out.meta["consensus"] is False
    assert res.answer == "10"  # all differ: the first agent's answer leads


def test_debate_majority_answer_comes_first() -> None:
    def reply(req: GenerationRequest, i: int) -> str:
        return "Answer: 7" if req.seed // 1000 else "Answer: 3"

    res, _ = run("  d: {role: debate, model: m, agents: 3, rounds: 1}", {"m": reply},
                 output="d")
    assert [c.answer for c in res.steps["d"].candidates] == ["7", "7", "3"]
    assert res.answer == "7"


def test_debate_consensus_skips_later_rounds() -> None:
    res, b = run("""
  d: {role: debate, models: [m1, m2], agents: 3, rounds: 3, stop: consensus}
""", {"m1": lambda req, i: f"agent {req.seed}\nAnswer: 4",
      "m2": lambda req, i: f"agent {req.seed}\nAnswer: 4"}, output="d")
    assert len(b["m1"].requests) + len(b["m2"].requests) == 3  # round 1 only
    assert set(res.steps) == {"d@r1", "d@r2", "d"}
    assert res.steps["d@r1"].meta["consensus"] is True
    assert res.steps["d@r2"].meta["stopped_early"] is True
    assert res.steps["d"].meta["stopped_early"] is True
    assert len(res.steps["d"].candidates) == 3
    assert res.answer == "4"
    assert res.usage.calls == 3


def test_debate_without_consensus_stop_runs_every_round() -> None:
    _, b = run("  d: {role: debate, model: m, agents: 2, rounds: 3}",
               {"m": lambda req, i: "Answer: 4"}, output="d")
    assert len(b["m"].requests) == 6


class FailsForAgent(ScriptedBackend):
    """Raises a BackendError for one agent's first-round call."""

    def __init__(self, agent: int, respond: Responder) -> None:
        super().__init__(respond)
        self.agent = agent

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        if request.seed // 1000 == self.agent and "Other agents" not in user(request):
            self.requests.append(request)
            await asyncio.sleep(0)
            raise BackendError("agent down")
        return await super().generate(request)


def test_debate_goes_on_without_an_agent_whose_call_failed() -> None:
    res, b = run("  d: {role: debate, models: [m1, m2], agents: 3, rounds: 2}",
                 {"m1": agent_reply, "m2": FailsForAgent(1, agent_reply)}, output="d")
    assert res.status == "error"
    assert res.infra_errors == ["d@r1: agent down"]
    round2 = [r for r in b["m1"].requests if "Other agents" in user(r)]
    assert sorted(r.seed // 1000 for r in round2) == [0, 2]  # agents keep their models
    assert all(r.seed // 1000 != 1 or "Other agents" not in user(r) for r in b["m2"].requests)
    for req in round2:
        other = 2 if req.seed // 1000 == 0 else 0
        assert f"[Agent {other + 1}]\nAgent {other} thinks so." in user(req)
        assert "[Agent 2]" not in user(req)
    assert [c.model for c in res.steps["d"].meta["agents"]] == ["m1", "m1"]
    assert res.answer == "10"


# ---------------------------------------------------------------------------- custom role


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str
    times: int = Field(default=1, ge=1)


class Echo(Role):
    """A custom role: asks ``prefix + question``, repeats each reply ``times`` times."""

    name = "echo_test"
    params_model = EchoParams
    system_prompt: ClassVar[dict[str, str]] = {}
    user_prompt: ClassVar[dict[str, str]] = {"main": "{question}"}

    def calls(self, ctx: StepContext) -> list[Call]:
        params = ctx.params
        assert isinstance(params, EchoParams)
        msgs = self.messages(ctx, {"question": f"{params.prefix} {ctx.question}"})
        return [Call(ctx.model, msgs, n=getattr(ctx.node, "samples", 1))]

    def finish(self, ctx: StepContext, results: list[list[Completion]]) -> StepOutput:
        params = ctx.params
        assert isinstance(params, EchoParams)
        cands = [Candidate(text=" ".join([c.text] * params.times), answer=c.text,
                           model=ctx.model) for c in results[0]]
        return self.output(ctx, cands, echoed=params.times)


@pytest.fixture
def echo_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers ``echo_test`` for one test only (other tests list the known roles)."""
    monkeypatch.setattr(custom_roles, "REGISTERED", dict(custom_roles.REGISTERED))
    register_role("echo_test", Echo)


def echo_graph(params: str) -> Any:
    return loads_graph(
        "version: 1\nname: t\nmodels: {m: {backend: scripted, model: m}}\nnodes:\n"
        f"  e: {{role: echo_test, model: m, samples: 2, params: {params}}}\n"
        "  v: {role: vote, inputs: [e]}\noutput: v\n"
    )


@pytest.mark.usefixtures("echo_role")
def test_custom_role_runs_with_validated_params() -> None:
    backend = ScriptedBackend(lambda req, i: f"echo{i}")
    res = Executor(echo_graph("{prefix: Please, times: 2}"), backends={"m": backend}).run("hi")
    (req,) = backend.requests
    assert user(req) == "Please hi"
    assert req.n == 2
    out = res.steps["e"]
    assert [c.text for c in out.candidates] == ["echo0 echo0", "echo1 echo1"]
    assert out.meta["echoed"] == 2
    assert res.answer == "echo0"


@pytest.mark.parametrize(
    ("params", "where"),
    [("{prefix: P, times: 0}", "nodes.e.params.times"),
     ("{times: 2}", "nodes.e.params.prefix"),
     ("{prefix: P, colour: red}", "nodes.e.params.colour")],
)
@pytest.mark.usefixtures("echo_role")
def test_custom_role_params_are_checked(params: str, where: str) -> None:
    with pytest.raises(GraphErrors) as info:
        Executor(echo_graph(params), backends={"m": ScriptedBackend()})
    assert any(e.path == where for e in info.value.errors)
    assert f": {where}: " in "\n".join(info.value.lines())


class Twice(Echo):
    """A custom role whose unroll names its own step (suffix '') first: nodes that read it,
    and the executor's output step, would get its first step, not its last."""

    name = "twice_test"

    def unroll(self, node: Any) -> list[StepPlan]:
        return [StepPlan(""), StepPlan("@again", with_inputs=True)]


def test_a_custom_role_must_unroll_its_own_step_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(custom_roles, "REGISTERED", dict(custom_roles.REGISTERED))
    register_role("twice_test", Twice)
    text = ("version: 1\nname: t\nmodels: {m: {backend: scripted, model: m}}\nnodes:\n"
            "  e: {role: twice_test, model: m, params: {prefix: P}}\noutput: e\n")
    with pytest.raises(GraphErrors) as info:
        Executor(loads_graph(text), backends={"m": ScriptedBackend()})
    (line,) = info.value.lines()
    assert ": nodes.e: role 'twice_test' unrolls the node into steps ['', '@again']: the " \
        "step with suffix '' (the node's own) must come last, once" in line


def test_spec_lists_the_roles_the_registry_serves(echo_role: None) -> None:
    # spec names the roles (in errors) without importing the registry: both lists must agree
    from tts_graph.spec import _role_names

    assert _role_names() == registry.all_role_names()
    assert "echo_test" in _role_names()


def test_builtin_roles_cannot_be_replaced() -> None:
    with pytest.raises(TTSGraphError):
        register_role("solver", Echo)


def test_unregistered_custom_role_is_a_graph_error() -> None:
    with pytest.raises(GraphErrors) as info:
        echo_graph("{prefix: P}")
    assert "unknown role 'echo_test'" in str(info.value)


# ------------------------------------------------------------------- prompt fast paths


def test_a_system_prompt_with_a_placeholder_is_rendered_per_question() -> None:
    # a fixed system prompt is made once and shared; one that names {question} is not
    for q in ("What is 1+1?", "What is 2+5?"):
        _, b = run(
            """
  solve:
    role: solver
    model: s
    prompts: {system: "Q was {question}. Answer last.", user: "{question}"}
""",
            {"s": lambda req, i: "Answer: 2"},
            output="solve", question=q,
        )
        (req,) = b["s"].requests
        assert req.messages[0].content == f"Q was {q}. Answer last."


def test_fixed_system_messages_are_shared() -> None:
    from tts_graph.roles.base import _fixed_message

    assert _fixed_message("system", "Be brief.") is _fixed_message("system", "Be brief.")
    assert _fixed_message("system", "Be {tone}.") is None  # needs a value: rendered each time
    assert _fixed_message("system", "Literal {{braces}}.").content == "Literal {braces}."
