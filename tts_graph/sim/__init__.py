"""SIMULATED backend (``backend: sim``): simulated models on a simulated task, for measuring
searchers at a scale that real models cannot reach here. Nothing here is a language model;
every identity says ``sim:``, every completion says "simulated".

It is an ordinary ``Backend``, so graphs run through the real executor, bindings, budgets and
response cache. What it simulates is the *outcome* of each call, by the rules below, from
numbers calibrated to published results (see "Calibration").

The simulated task
------------------
``sim_task(n, seed)`` (also ``--task sim`` / ``sim:N`` / ``sim:N:SEED``) holds ``n`` questions
``"[sim:000123] Compute the value of problem 123."`` (``[sim:s7:000123]`` for task seed 7).
The backend reads the tag from the prompt; it answers nothing else (a prompt without a tag
is a ``BackendError``). Per question, all deterministic:

- the gold answer: an integer, a function of the id;
- a MATH-like level 1-5 (shares 9/18/23/24/26%, those of the MATH test set) and a difficulty
  ``d = (level - 1 + u) / 5`` in [0, 1), from (id, task seed);
- wrong answers ``W[0..]``: ``W[0]`` is the common trap (shared by all models), ``W[1..3]``
  model-specific traps, ``W[4..]`` scattered slips.

Simulated models (``SimProfile``, ``PROFILES``)
----------------------------------------------
``llama-1b``, ``llama-3b``, ``llama-8b``, ``llama-70b`` (named after the Llama 3.x sizes the
reference points use). Model ``m`` on question ``q`` has a latent logit

    L(m, q) = skill_m - SLOPE * d_q + SD_Q * z_q + SD_M * z_mq

(``z_q`` a shared per-question hardness, ``z_mq`` a per-(model, question) quirk, both standard
normal from hashes) and a solve probability ``p(m, q) = sigmoid(L)``. Errors are correlated: a
wrong sample gives the model's *trap* answer with probability ``c(m, q)`` (the per-(model,
question) confusion, mean ``confusion_mean``; the trap is the common ``W[0]`` with probability
``TRAP_SHARED``, else a model-specific one), else a scattered slip. So wrong samples of one
question agree often, and majority voting gains less than independent errors would give.

Completion tokens are lognormal per role (median × the model's verbosity; wrong answers are
30% longer); a completion longer than ``max_tokens`` is cut and loses its final line (no
answer). Simulated latency = ``base + prompt_tokens × prefill + completion_tokens × decode``;
the backend sleeps ``latency × latency_scale`` (option, default 0: no sleep, so the executor's
wall-time latency is ~0). Parameters (1e9, 3e9, 8e9, 70e9) give FLOPs; prices are
illustrative per-million-token prices.

Determinism: every draw is a hash of (model name, question id, task seed, sample seed =
request seed + sample index, kind of call, and what the prompt shows besides the question:
the candidates' answers, a plan's bonus, critiques' flags), never of call order, concurrency
or wall time. As with a real model and a fixed seed, the same prompt with the same seed gives
the same sample: two nodes asking one model the same thing with the same ``seed:`` get the
same samples (give them different seeds for independent ones), and sample ``i`` of a node
does not depend on how many samples it draws (common random numbers: configurations that
differ in width share their first samples, so comparing them is low-noise). Temperature 0 is
greedy (every seed gives the same sample); other temperatures scale the logit by
``1 + 0.2 × (0.7 - T)`` (slightly sharper when colder).

Role rules (recognised from the built-in role prompts of ``tts_graph/roles``; a node with
overridden ``prompts:`` is treated as a solver unless its text keeps the role's phrases)
----------------------------------------------------------------------------------------------
``R(m, q) = sigmoid(L(m, q) + judge_bonus_m)`` is model ``m``'s chance to *recognise* the
correct answer of ``q``: a model that cannot solve a question also judges it badly, and
``judge_bonus`` is negative for the small models (poor verifiers), positive for the large.

- solver, first_finish, debate round 1: "... Answer: X", X = gold with probability ``p``,
  else a wrong answer as above. first_finish ("concisely") writes 20% fewer tokens.
  A plan in the context adds the planner's ``plan_bonus`` to the logit; critiques in the
  context ("Feedback on earlier attempts") add ``FEEDBACK_BONUS`` and a wrong sample avoids
  answers a critique flagged as wrong.
- fuser: a solver whose logit gets ``+ FUSE_BONUS + FUSE_SHARE × share`` when the gold answer
  is among the shown candidates (``share`` = its share of them), ``- FUSE_MISLEAD`` when it is
  not; a wrong fuser repeats the most common wrong shown answer with probability
  ``FUSE_FOLLOW``.
- judge (select): with probability ``R(judge, q)`` it recognises the correct answer and,
  when one is shown, picks a candidate holding it; otherwise it picks uniformly at random.
- judge (score), verifier: per candidate, with probability ``R`` the verdict is right; else a
  lenient coin (``LENIENT`` = 60% "correct"). Scores: 7-10 when judged correct, 1-4 when not.
- ranker: as judge select, for the whole order: recognised → candidates holding the gold
  answer first; else a random order.
- debate, later rounds: with probability ``DEBATE_RECOGNISE × R`` an agent adopts the gold
  answer when any agent shows it; else with probability ``sway_m`` it moves to the strict
  plurality of the shown answers (its own included); else it keeps its own answer.
- critic (and the refiner's critique step): judges the candidate as the verifier does;
  "No errors found." or "the final answer X looks wrong".
- refiner revise: a wrong answer is fixed with probability ``p × (REFINE_FIX_FLAGGED if the
  critique flagged it else REFINE_FIX)``; a right answer is broken with probability
  ``(1 - p) × (REFINE_BREAK_FLAGGED if flagged else REFINE_BREAK)``; else it is kept.
- planner: a plan text carrying its ``plan_bonus`` (a small logit bonus for solvers, fusers
  and debaters that get the plan as context).

Calibration
-----------
Published reference points (Agent-REINFORCE, Wang et al. 2025, "Generalizing Test-time
Compute-optimal Scaling as an Optimizable Graph", MATH): single Llama 1B / 3B / 8B / 70B =
31 / 40 / 49 / 68%; 9 × 1B with majority voting = 39%; 3 × 3B = 54%. Plain majority voting
of three samples of a 40% model cannot reach 54% under any error model (per question it is
right with probability at most p + p² - p³, ties broken by the first answer, and the mean of
that over questions with mean p = 0.4 is at most 50%), so "3 × 3B" is read as three 3B solver
samples aggregated by a 3B fuser (one more 3B call): the best aggregation of three samples the
graph allows. Fitted: ``skill`` per model (to the single-sample points, as the expectation over
10,000 questions), ``confusion_mean`` (9 × 1B) and ``FUSE_BONUS`` (3 × 3B). The other constants
are set by hand to plausible values: ``SLOPE``, ``SD_Q`` and ``SD_M`` give a steep spread over
levels (8B: about 80% at level 1, 25% at level 5); the judge, debate, refine, critic and
planner constants are not calibrated against anything published.
``benchmarks/sim_calibration.py`` runs the reference graphs through the executor and prints
simulated vs published accuracy (BENCHMARKS.md, "Simulated backend calibration").

Modules
-------
``draws`` (seeded uniform and normal draws), ``world`` (the constants every model shares),
``profiles`` (the simulated models, with their calibrated numbers), ``questions`` (the
simulated questions), ``latents`` (each model's per-question logit, confusion and trap),
``prompts`` (what a request asks, read from its prompt), ``simulator`` (the role rules: one
sample's outcome, its tokens and latency), ``backend`` (``SimBackend``: ``backend: sim``) and
``task`` (``sim_task``: ``--task sim``). The backend registry and the task loader find this
package by name (``tts_graph.plugins``); nothing below it imports it.
"""

from .backend import SimBackend, create_sim_backend
from .latents import (
    Latent,
    latent,
    latent_of,
    recognise_probability,
    solve_logit,
    solve_probability,
)
from .profiles import PROFILES, SimProfile, profile_from_options
from .prompts import Situation, read_prompt
from .questions import SimQuestion, gold_answer, parse_tag, sim_items
from .simulator import Outcome, Simulator, simulated_latency_s
from .task import DEFAULT_TASK_SIZE, sim_task, sim_task_from_name
from .world import SIM_VERSION, world_constants

__all__ = [
    "DEFAULT_TASK_SIZE", "PROFILES", "SIM_VERSION", "Latent", "Outcome", "SimBackend",
    "SimProfile", "SimQuestion", "Simulator", "Situation", "create_sim_backend", "gold_answer",
    "latent", "latent_of", "parse_tag", "profile_from_options", "read_prompt",
    "recognise_probability", "sim_items", "sim_task", "sim_task_from_name",
    "simulated_latency_s", "solve_logit", "solve_probability", "world_constants",
]
