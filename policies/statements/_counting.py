"""What `rate-limit`, `rate-limit-by-key`, `quota` and `quota-by-key` share: counting an amount against a limit
in a window of the shared counters, and giving it back when an `increment-condition` does not hold."""

from __future__ import annotations

from policies.context import Context
from policies.counters import Admission, Window
from policies.expressions import Value
from policies.statement import as_bool


async def admit(context: Context, key: str, window: Window, amount: int, limit: int, condition: Value | None) -> Admission:
    """Count `amount` against `limit` if it fits. With `condition`, the amount is counted now (so concurrent
    calls can never exceed the limit) and given back once the backend answered if the condition is false."""
    counters = context.services.counters
    admission = await counters.acquire(key, window, amount, limit)
    if admission.allowed and condition is not None:

        async def give_back_unless() -> None:
            if not as_bool(condition.evaluate(context), condition.source):
                await counters.add(key, window, -amount, limit)

        context.after_backend.append(give_back_unless)
    return admission
