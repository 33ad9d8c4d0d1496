"""Per-query budget: every call reserves its worst case before it is sent, so concurrent
calls can never overrun a cap together. A call that does not fit is sent with fewer
``max_tokens``, or not at all (``BudgetExhausted``)."""

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


@dataclass
class Reservation:
    tokens: int
    cost: float
    flops: float
    max_tokens: int


class QueryBudget:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.used_tokens = 0
        self.used_cost = 0.0
        self.used_flops = 0.0
        self._held_tokens = 0
        self._held_cost = 0.0
        self._held_flops = 0.0
        self.exhausted = False

    def reserve(self, prompt_tokens: int, max_tokens: int, n: int, costing: Costing
                ) -> Reservation:
        """Reserve room for ``n`` samples; returns the (possibly lowered) ``max_tokens``."""
        b = self.budget
        allowed = max_tokens
        if b.max_tokens_per_query is not None:
            room = b.max_tokens_per_query - self.used_tokens - self._held_tokens
            allowed = min(allowed, room // n - prompt_tokens)
        if b.max_cost_usd_per_query is not None and costing.price_out > 0:
            room_c = b.max_cost_usd_per_query - self.used_cost - self._held_cost
            per = (room_c / n - prompt_tokens * costing.price_in) / costing.price_out
            allowed = min(allowed, int(per))
        if b.max_flops_per_query is not None and costing.params:
            room_f = b.max_flops_per_query - self.used_flops - self._held_flops
            allowed = min(allowed, int(room_f / n / (2.0 * costing.params)) - prompt_tokens)
        if allowed < 1:
            self.exhausted = True
            raise BudgetExhausted("the query's budget cannot cover another call")
        res = Reservation(
            tokens=n * (prompt_tokens + allowed),
            cost=n * costing.cost(prompt_tokens, allowed),
            flops=n * costing.flops(prompt_tokens, allowed),
            max_tokens=allowed,
        )
        self._held_tokens += res.tokens
        self._held_cost += res.cost
        self._held_flops += res.flops
        return res

    def settle(self, res: Reservation, tokens: int, cost: float, flops: float) -> None:
        self._held_tokens -= res.tokens
        self._held_cost -= res.cost
        self._held_flops -= res.flops
        self.used_tokens += tokens
        self.used_cost += cost
        self.used_flops += flops
