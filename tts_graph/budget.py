"""Per-query budget: every call reserves its worst case before it is sent, so concurrent
calls can never overrun a cap together. A call that does not fit is sent with fewer
``max_tokens``, or not at all (``BudgetExhausted``). Beside the calls' reservations the
budget keeps a *plan hold*: what steps not yet reserved may need (see ``budget_plan``), which
no call may take."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BudgetExhausted
from .spec import Budget


@dataclass
class Costing:
    """How a model turns tokens into dollars and FLOPs."""

    price_in: float = 0.0  # USD per token
    price_out: float = 0.0
    params: float | None = None

    def cost(self, prompt: int, completion: int) -> float:
        return prompt * self.price_in + completion * self.price_out

    def flops(self, prompt: int, completion: int) -> float:
        return 2.0 * self.params * (prompt + completion) if self.params else 0.0


@dataclass(slots=True)
class Reservation:
    tokens: int
    cost: float
    flops: float
    max_tokens: int
    n: int = 1


class QueryBudget:
    # no instance dict: one per query, and a tracked object the collector walks fewer
    __slots__ = (
        "_held_cost",
        "_held_flops",
        "_held_tokens",
        "_plan_cost",
        "_plan_flops",
        "_plan_tokens",
        "budget",
        "exhausted",
        "peak_cost",
        "peak_flops",
        "peak_tokens",
        "used_cost",
        "used_flops",
        "used_tokens",
    )

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.used_tokens = 0
        self.used_cost = 0.0
        self.used_flops = 0.0
        self._held_tokens = 0
        self._held_cost = 0.0
        self._held_flops = 0.0
        self._plan_tokens = 0
        self._plan_cost = 0.0
        self._plan_flops = 0.0
        self.exhausted = False
        #: the most ever committed at once: spent, plus held for calls in flight and the plan
        self.peak_tokens = 0
        self.peak_cost = 0.0
        self.peak_flops = 0.0

    @property
    def held_tokens(self) -> int:
        return self._held_tokens + self._plan_tokens

    @property
    def held_cost(self) -> float:
        return self._held_cost + self._plan_cost

    @property
    def held_flops(self) -> float:
        return self._held_flops + self._plan_flops

    @property
    def plan_hold(self) -> tuple[int, float, float]:
        """What ``hold_for_plan`` holds now (tokens, cost, FLOPs)."""
        return self._plan_tokens, self._plan_cost, self._plan_flops

    def hold_for_plan(self, tokens: int, cost: float, flops: float) -> None:
        """Keep this much for the steps not yet reserved (replaces the previous hold)."""
        self._plan_tokens, self._plan_cost, self._plan_flops = tokens, cost, flops

    def note_peak(self) -> None:
        """Record what is committed now (called once a hold or reservation is decided;
        holds tried and dropped while searching for a width are not commitments)."""
        self.peak_tokens = max(self.peak_tokens, self.used_tokens + self.held_tokens)
        self.peak_cost = max(self.peak_cost, self.used_cost + self.held_cost)
        self.peak_flops = max(self.peak_flops, self.used_flops + self.held_flops)

    def covers(self, prompt_tokens: int, max_tokens: int, n: int, costing: Costing) -> bool:
        """Whether ``n`` samples of ``max_tokens`` each fit now (exactly as ``reserve``
        decides, so a draw found to fit is reserved whole)."""
        return n >= 1 and self._per_sample(prompt_tokens, n, costing) >= max_tokens

    def _per_sample(self, prompt_tokens: int, n: int, costing: Costing) -> float:
        """Completion tokens each of ``n`` samples may use without any cap being overrun."""
        b = self.budget
        allowed = float("inf")
        if b.max_tokens_per_query is not None:
            room = b.max_tokens_per_query - self.used_tokens - self.held_tokens
            allowed = min(allowed, room // n - prompt_tokens)
        if b.max_cost_usd_per_query is not None and (costing.price_in > 0
                                                     or costing.price_out > 0):
            room_c = b.max_cost_usd_per_query - self.used_cost - self.held_cost
            left = room_c / n - prompt_tokens * costing.price_in  # USD left per sample
            if costing.price_out > 0:
                allowed = min(allowed, int(left / costing.price_out))
            elif left < 0:  # priced input only: the prompt alone does not fit
                allowed = 0
        if b.max_flops_per_query is not None and costing.params:
            room_f = b.max_flops_per_query - self.used_flops - self.held_flops
            allowed = min(allowed, int(room_f / n / (2.0 * costing.params)) - prompt_tokens)
        return allowed

    def reserve(self, prompt_tokens: int, max_tokens: int, n: int, costing: Costing
                ) -> Reservation:
        """Reserve room for up to ``n`` samples of up to ``max_tokens`` each.

        When all ``n`` do not fit, fewer samples are drawn at full length (a narrower step
        beats ``n`` truncated answers); when not even one fits at full length, one sample
        gets the tokens that are left. Raises ``BudgetExhausted`` when nothing fits.
        """
        take = n
        allowed = min(max_tokens, self._per_sample(prompt_tokens, take, costing))
        while allowed < max_tokens and take > 1:
            take -= 1
            allowed = min(max_tokens, self._per_sample(prompt_tokens, take, costing))
        if allowed < 1:
            self.exhausted = True
            raise BudgetExhausted("the query's budget cannot cover another call")
        if take < n:
            self.exhausted = True  # the step is narrower than the graph asked for
        mt = int(allowed)
        res = Reservation(
            tokens=take * (prompt_tokens + mt),
            cost=take * costing.cost(prompt_tokens, mt),
            flops=take * costing.flops(prompt_tokens, mt),
            max_tokens=mt,
            n=take,
        )
        self._held_tokens += res.tokens
        self._held_cost += res.cost
        self._held_flops += res.flops
        self.note_peak()
        return res

    def settle(self, res: Reservation, tokens: int, cost: float, flops: float) -> None:
        self._held_tokens -= res.tokens
        self._held_cost -= res.cost
        self._held_flops -= res.flops
        self.used_tokens += tokens
        self.used_cost += cost
        self.used_flops += flops
