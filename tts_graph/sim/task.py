"""The SIMULATED task (``--task sim``, ``sim:N``, ``sim:N:SEED``): simulated questions as an
evaluation task, which the task loader finds by name."""

from __future__ import annotations

from ..evaluate.scorers import get_scorer
from ..evaluate.tasks import Item, Task, TaskError
from .questions import sim_items

DEFAULT_TASK_SIZE = 2000
#: the most questions ``sim:N`` makes: each is held in memory (100,000 take about 2 s and
#: 120 MB), so a mistyped N must be refused, not swap the machine to death
MAX_TASK_SIZE = 100_000


def sim_task(n: int, seed: int = 0) -> Task:
    """The simulated task: ``n`` questions (ids 0..n-1), numeric scorer. Meta per item:
    ``difficulty``, ``level`` and ``simulated: True``."""
    if n < 1:
        raise ValueError("a simulated task needs at least one question")
    items = [Item(q.item_id, q.text, q.gold,
                  {"difficulty": round(q.difficulty, 4), "level": q.level, "simulated": True})
             for q in sim_items(n, seed)]
    name = f"sim:{n}" if seed == 0 else f"sim:{n}:{seed}"
    return Task(name, items, get_scorer("numeric"),
                f"SIMULATED task for the sim backend: {n} questions, MATH-like levels "
                f"(task seed {seed})")


def sim_task_from_name(spec: str) -> Task:
    """``sim`` (2,000 questions), ``sim:N`` or ``sim:N:SEED``."""
    parts = spec.split(":")
    try:
        if parts[0] != "sim" or len(parts) > 3:
            raise ValueError
        n = int(parts[1]) if len(parts) > 1 else DEFAULT_TASK_SIZE
        seed = int(parts[2]) if len(parts) > 2 else 0
        if not 1 <= n <= MAX_TASK_SIZE or seed < 0:
            raise ValueError
    except ValueError:
        raise TaskError(f"bad simulated task {spec!r}: write sim, sim:N or sim:N:SEED "
                        f"(1 <= N <= {MAX_TASK_SIZE:,} questions, SEED >= 0)") from None
    return sim_task(n, seed)
