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
    n: int = 1


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

    def _per_sample(self, prompt_tokens: int, n: int, costing: Costing) -> float:
        """Completion tokens each of ``n`` samples may use without any cap being overrun."""
        b = self.budget
        allowed = float("inf")
        if b.max_tokens_per_query is not None:
            room = b.max_tokens_per_query - self.used_tokens - self._held_tokens
            allowed = min(allowed, room // n - prompt_tokens)
        if b.max_cost_usd_per_query is not None and (costing.price_in > 0
                                                     or costing.price_out > 0):
            room_c = b.max_cost_usd_per_query - self.used_cost - self._held_cost
            left = room_c / n - prompt_tokens * costing.price_in  # USD left per sample
            if costing.price_out > 0:
                allowed = min(allowed, int(left / costing.price_out))
            elif left < 0:  # priced input only: the prompt alone does not fit
                allowed = 0
        if b.max_flops_per_query is not None and costing.params:
            room_f = b.max_flops_per_query - self.used_flops - self._held_flops
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
        return res

    def settle(self, res: Reservation, tokens: int, cost: float, flops: float) -> None:
        self._held_tokens -= res.tokens
        self._held_cost -= res.cost
        self._held_flops -= res.flops
        self.used_tokens += tokens
        self.used_cost += cost
        self.used_flops += flops
