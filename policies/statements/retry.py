"""`<retry condition="…" count="2" interval="0" first-fast-retry="true">…</retry>`: run the body again while
the condition holds, with APIM's fixed, linear or exponential waits.

Waits (APIM): `interval` alone is fixed; with `delta` it grows linearly, `interval + (n - 1) * delta`; with
`delta` and `max-interval` exponentially, `interval + (2^(n - 1) - 1) * random(0.8, 1.2) * delta`; always
capped at `max-interval`. (APIM writes the exponent as `count`; counting it from the first retry, as here, makes
the first wait `interval` in all three modes.) A backend that cannot be reached or times out is retried like a failing condition.

Before the backend has answered, `context.Response` inside the body is not null, as in APIM, where failover
documents pick their backend in the first pass with `<choose><when condition="@(context.Response.StatusCode
== 429)">…`: it reads as an empty `200 OK` (no headers, no body), so such a condition is false until a
backend answered. That stand-in never reaches the client: if the body did not forward the request, it is
removed again when the retry ends.
"""

from __future__ import annotations

import asyncio
import random

from policies.context import Body, Context, Headers, Response
from policies.errors import PolicyError
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, as_bool, attr, register, run_all
from policies.xml import PolicyElement

#: Failures of the backend call itself (its credential included), retried whatever the condition says.
TRANSPORT_FAILURES = frozenset({"BackendConnectionFailure", "BackendCredentialFailure", "Timeout"})


class RetrySettings(Settings):
    condition: Value = attr()
    count: Value = attr(kind=int, minimum=0, maximum=50)
    interval: Value = attr(kind=float, minimum=0, maximum=3600)
    max_interval: Value | None = attr(kind=float, minimum=0, maximum=3600)
    delta: Value | None = attr(kind=float, minimum=0, maximum=3600)
    first_fast_retry: Value = attr(kind=bool, default=False)


@register
class Retry(Statement):
    element = "retry"

    def __init__(self, settings: RetrySettings, body: list[Statement]) -> None:
        self.condition = settings.condition
        self.count = settings.count
        self.interval = settings.interval
        self.max_interval = settings.max_interval
        self.delta = settings.delta
        self.first_fast_retry = settings.first_fast_retry
        self.body = body

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Retry:
        settings = loader.settings(element, RetrySettings)
        body = loader.body(element)
        if not body:
            raise loader.fail(element, "<retry> needs statements to retry, e.g. <forward-request />.")
        return cls(settings, body)

    async def run(self, context: Context) -> None:
        stand_in = None
        if context.Response is None:
            stand_in = context.Response = Response(200, "OK", Headers(), Body(b""))
        try:
            await self._attempts(context)
        finally:
            if context.Response is stand_in:
                context.Response = None

    async def _attempts(self, context: Context) -> None:
        count = int(self.count.evaluate(context))
        for retry_number in range(count + 1):
            try:
                await run_all(self.body, context)
            except PolicyError as error:
                if error.reason not in TRANSPORT_FAILURES or retry_number == count:
                    raise
            else:
                if retry_number == count or not as_bool(self.condition.evaluate(context), self.condition.source):
                    return
            await asyncio.sleep(self._wait(context, retry_number + 1))

    def _wait(self, context: Context, retry_number: int) -> float:
        if retry_number == 1 and self.first_fast_retry.evaluate(context):
            return 0.0
        interval = float(self.interval.evaluate(context))
        delta = float(self.delta.evaluate(context)) if self.delta is not None else None
        cap = float(self.max_interval.evaluate(context)) if self.max_interval is not None else None
        if delta is None:
            wait = interval
        elif cap is None:
            wait = interval + (retry_number - 1) * delta
        else:
            wait = interval + (2 ** (retry_number - 1) - 1) * random.uniform(0.8, 1.2) * delta
        return min(wait, cap) if cap is not None else wait
