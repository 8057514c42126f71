"""`<retry condition="…" count="2" interval="0" first-fast-retry="true">…</retry>`: run the body again while
the condition holds, with APIM's fixed, linear or exponential waits.

Waits (APIM): `interval` alone is fixed; with `delta` it grows linearly, `interval + (n - 1) * delta`; with
`delta` and `max-interval` exponentially, `interval + (2^(n - 1) - 1) * random(0.8, 1.2) * delta`; always
capped at `max-interval`. (APIM writes the exponent as `count`; counting it from the first retry, as here, makes
the first wait `interval` in all three modes.) A backend that cannot be reached or times out is retried like a failing condition.
"""

from __future__ import annotations

import asyncio
import random

from policies.context import Context
from policies.errors import PolicyError
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, as_bool, register, run_all
from policies.xml import PolicyElement

#: Failures of the backend call itself, retried whatever the condition says.
TRANSPORT_FAILURES = frozenset({"BackendConnectionFailure", "Timeout"})


@register
class Retry(Statement):
    element = "retry"
    attributes = (
        Attr("condition", required=True),
        Attr("count", required=True, kind=int, minimum=0, maximum=50),
        Attr("interval", required=True, kind=float, minimum=0, maximum=3600),
        Attr("max-interval", kind=float, minimum=0, maximum=3600),
        Attr("delta", kind=float, minimum=0, maximum=3600),
        Attr("first-fast-retry", kind=bool, default=False),
    )

    def __init__(self, values: dict[str, Value | None], body: list[Statement]) -> None:
        self.condition = values["condition"]
        self.count = values["count"]
        self.interval = values["interval"]
        self.max_interval = values["max-interval"]
        self.delta = values["delta"]
        self.first_fast_retry = values["first-fast-retry"]
        self.body = body

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Retry:
        values = loader.attributes(element, cls.attributes)
        body = loader.statements(element)
        if not body:
            raise loader.fail(element, "<retry> needs statements to retry, e.g. <forward-request />.")
        return cls(values, body)

    async def run(self, context: Context) -> None:
        assert self.condition is not None and self.count is not None
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
        if retry_number == 1 and self.first_fast_retry is not None and self.first_fast_retry.evaluate(context):
            return 0.0
        assert self.interval is not None
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
