"""`<wait for="all | any">`: run the statements inside at the same time, and go on when all (or the first)
of them finished.

APIM allows `send-request`, `cache-lookup-value` and `choose` inside; each of those that this gateway
supports may be used (a `choose` may hold anything its section allows). With `for="any"`, the others are
cancelled once the first one finished. A failure of any of them fails `<wait>` (the others are cancelled),
so `on-error` runs as it would for the same statement outside. `for` may be an expression; any value but
`all` or `any` is a run-time error.
"""

from __future__ import annotations

import asyncio

from policies.context import Context
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

ALLOWED_CHILDREN = ("send-request", "cache-lookup-value", "choose")


class WaitSettings(Settings):
    until: Value = attr("for", choices=("all", "any"), default="all")


@register
class Wait(Statement):
    element = "wait"
    sections = frozenset({"inbound", "backend", "outbound"})

    def __init__(self, until: Value, children: list[Statement]) -> None:
        self.until = until
        self.children = children

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Wait:
        settings = loader.settings(element, WaitSettings)
        children = loader.statements(loader.children(element, ALLOWED_CHILDREN))
        if not children:
            raise loader.fail(element, f"<wait> needs statements to run: {', '.join(ALLOWED_CHILDREN)}.")
        return cls(settings.until, children)

    async def run(self, context: Context) -> None:
        until = self.until.evaluate(context)
        if until not in ("all", "any"):
            raise ExpressionRuntimeError(f"<wait for> must be all or any, not {until!r}.")
        tasks = [asyncio.ensure_future(child.run(context)) for child in self.children]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED if until == "any" else asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raises the first failure
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
