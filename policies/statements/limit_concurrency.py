"""`<limit-concurrency key="@(context.Subscription.Id)" max-count="3">…</limit-concurrency>`: at most
`max-count` requests with the same key run the statements inside at a time; the next one is refused at once
with 429, `context.LastError.Reason` `ConcurrencyLimitExceeded`.

As in APIM the count is kept per gateway instance (APIM: per unit), never shared: N instances admit up to
N x max-count. Statements with the same key share one count, whatever their `max-count`. A place is taken
while the statements inside run: around `<forward-request>` that is until the backend's answer has arrived,
which for a streamed answer is when its headers arrived, not when the stream ends. Memory is bounded by the
requests in flight (a key's count is dropped when it falls to zero); keys longer than 256 characters are
kept as their SHA-256.
"""

from __future__ import annotations

import hashlib

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register, run_all
from policies.xml import PolicyElement

MESSAGE = "Too many concurrent requests. Try again later."


class LimitConcurrencySettings(Settings):
    key: Value = attr()
    max_count: int = attr(minimum=1)


class InFlight:
    """How many requests hold a place, per key, in this process."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def enter(self, key: str, limit: int) -> bool:
        count = self._counts.get(key, 0)
        if count >= limit:
            return False
        self._counts[key] = count + 1
        return True

    def leave(self, key: str) -> None:
        count = self._counts.pop(key) - 1
        if count > 0:
            self._counts[key] = count

    def __len__(self) -> int:
        return len(self._counts)


IN_FLIGHT = InFlight()


@register
class LimitConcurrency(Statement):
    element = "limit-concurrency"

    def __init__(self, key: Value, max_count: int, body: list[Statement]) -> None:
        self.key = key
        self.max_count = max_count
        self.body = body

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> LimitConcurrency:
        settings = loader.settings(element, LimitConcurrencySettings)
        body = loader.body(element)
        if not body:
            raise loader.fail(element, "<limit-concurrency> needs statements to limit, e.g. <forward-request />.")
        return cls(settings.key, settings.max_count, body)

    async def run(self, context: Context) -> None:
        key = "" if (value := self.key.evaluate(context)) is None else str(value)
        if len(key) > 256:
            key = hashlib.sha256(key.encode()).hexdigest()
        if not IN_FLIGHT.enter(key, self.max_count):
            raise PolicyError(self.element, "ConcurrencyLimitExceeded", MESSAGE, PolicyResponse.error(429, MESSAGE))
        try:
            await run_all(self.body, context)
        finally:
            IN_FLIGHT.leave(key)
