"""`<rate-limit>` (per subscription) and `<rate-limit-by-key>` (per any key): calls per renewal period.

    <rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.IpAddress)"
                       increment-condition="@(context.Response.StatusCode == 200)"
                       retry-after-header-name="Retry-After" remaining-calls-header-name="x-remaining" />

Over the limit: 429 with "Rate limit is exceeded. Try again in N seconds." and `Retry-After`, and
`context.LastError.Reason` `RateLimitExceeded`. Windows are fixed and epoch-aligned (APIM's classic tiers
use a sliding window). A call is counted when admitted; with `increment-condition`, it is given back when
the condition does not hold once the backend answered, so concurrent calls can never exceed the limit.
"""

from __future__ import annotations

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, as_bool, register
from policies.xml import PolicyElement
from policies.counters import Window

_COMMON = (
    Attr("calls", required=True, kind=int, minimum=1),
    Attr("renewal-period", required=True, kind=int, minimum=1, maximum=300 * 24 * 3600),
    Attr("retry-after-header-name", expressions=False),
    Attr("retry-after-variable-name", expressions=False),
    Attr("remaining-calls-header-name", expressions=False),
    Attr("remaining-calls-variable-name", expressions=False),
    Attr("total-calls-header-name", expressions=False),
)


class _RateLimit(Statement):
    sections = frozenset({"inbound"})
    attributes: tuple[Attr, ...] = _COMMON

    def __init__(self, values: dict[str, Value | None]) -> None:
        self.calls = values["calls"]
        self.period = values["renewal-period"]
        self.counter_key = values.get("counter-key")
        self.increment_condition = values.get("increment-condition")
        self.increment_count = values.get("increment-count")
        names = {k: (v.constant if v is not None else None) for k, v in values.items() if k.endswith("-name")}
        self.retry_after_header: str = names["retry-after-header-name"] or "Retry-After"
        self.retry_after_variable = names["retry-after-variable-name"]
        self.remaining_header = names["remaining-calls-header-name"]
        self.remaining_variable = names["remaining-calls-variable-name"]
        self.total_header = names["total-calls-header-name"]

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> _RateLimit:
        loader.children(element, ())
        return cls(loader.attributes(element, cls.attributes))

    def key(self, context: Context) -> str:
        raise NotImplementedError

    async def run(self, context: Context) -> None:
        assert self.calls is not None and self.period is not None
        limit = int(self.calls.evaluate(context))
        window = Window.fixed(int(self.period.evaluate(context)))
        key = f"{self.element}:{self.key(context)}:{limit}"
        amount = int(self.increment_count.evaluate(context)) if self.increment_count is not None else 1
        admission = await context.services.counters.acquire(key, window, amount, limit)
        self._publish(context, admission.remaining, limit)
        if not admission.allowed:
            self._refuse(context, window.seconds_left())
        if self.increment_condition is not None:
            context.after_backend.append(lambda: self._give_back_unless(context, key, window, amount, limit))

    async def _give_back_unless(self, context: Context, key: str, window: Window, amount: int, limit: int) -> None:
        assert self.increment_condition is not None
        if not as_bool(self.increment_condition.evaluate(context), self.increment_condition.source):
            await context.services.counters.add(key, window, -amount, limit)

    def _publish(self, context: Context, remaining: int, limit: int) -> None:
        if self.remaining_header:
            context.response_headers.append((self.remaining_header, str(remaining)))
        if self.remaining_variable:
            context.Variables.set(self.remaining_variable, remaining)
        if self.total_header:
            context.response_headers.append((self.total_header, str(limit)))

    def _refuse(self, context: Context, retry_after: int) -> None:
        if self.retry_after_variable:
            context.Variables.set(self.retry_after_variable, retry_after)
        message = f"Rate limit is exceeded. Try again in {retry_after} seconds."
        response = PolicyResponse.error(429, message, {self.retry_after_header: str(retry_after)})
        raise PolicyError(self.element, "RateLimitExceeded", message, response)


@register
class RateLimit(_RateLimit):
    element = "rate-limit"

    def key(self, context: Context) -> str:
        return context.Subscription.Id if context.Subscription is not None else "anonymous"


@register
class RateLimitByKey(_RateLimit):
    element = "rate-limit-by-key"
    attributes = (
        *_COMMON,
        Attr("counter-key", required=True),
        Attr("increment-condition"),
        Attr("increment-count", kind=int, minimum=0),
    )

    def key(self, context: Context) -> str:
        assert self.counter_key is not None
        return str(self.counter_key.evaluate(context))
