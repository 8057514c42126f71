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
from policies.counters import Window
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.statements._counting import admit
from policies.xml import PolicyElement


class RateLimitSettings(Settings):
    calls: Value = attr(kind=int, minimum=1)
    renewal_period: Value = attr(kind=int, minimum=1, maximum=300 * 24 * 3600)
    retry_after_header_name: str | None = attr()
    retry_after_variable_name: str | None = attr()
    remaining_calls_header_name: str | None = attr()
    remaining_calls_variable_name: str | None = attr()
    total_calls_header_name: str | None = attr()


class RateLimitByKeySettings(RateLimitSettings):
    counter_key: Value = attr()
    increment_condition: Value | None = attr()
    increment_count: Value | None = attr(kind=int, minimum=0)


class _RateLimit(Statement):
    sections = frozenset({"inbound"})

    def __init__(self, settings: RateLimitSettings) -> None:
        self.calls = settings.calls
        self.period = settings.renewal_period
        self.retry_after_header = settings.retry_after_header_name or "Retry-After"
        self.retry_after_variable = settings.retry_after_variable_name
        self.remaining_header = settings.remaining_calls_header_name
        self.remaining_variable = settings.remaining_calls_variable_name
        self.total_header = settings.total_calls_header_name
        self.increment_condition: Value | None = None
        self.increment_count: Value | None = None

    def key(self, context: Context) -> str:
        raise NotImplementedError

    async def run(self, context: Context) -> None:
        limit = int(self.calls.evaluate(context))
        window = Window.fixed(int(self.period.evaluate(context)))
        key = f"{self.element}:{self.key(context)}:{limit}"
        amount = int(self.increment_count.evaluate(context)) if self.increment_count is not None else 1
        admission = await admit(context, key, window, amount, limit, self.increment_condition)
        self._publish(context, admission.remaining, limit)
        if not admission.allowed:
            self._refuse(context, window.seconds_left())

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

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> RateLimit:
        loader.children(element, ())
        return cls(loader.settings(element, RateLimitSettings))

    def key(self, context: Context) -> str:
        return context.Subscription.Id if context.Subscription is not None else "anonymous"


@register
class RateLimitByKey(_RateLimit):
    element = "rate-limit-by-key"

    def __init__(self, settings: RateLimitByKeySettings) -> None:
        super().__init__(settings)
        self.counter_key = settings.counter_key
        self.increment_condition = settings.increment_condition
        self.increment_count = settings.increment_count

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> RateLimitByKey:
        loader.children(element, ())
        return cls(loader.settings(element, RateLimitByKeySettings))

    def key(self, context: Context) -> str:
        return str(self.counter_key.evaluate(context))
