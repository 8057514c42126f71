"""`<set-method>PATCH</set-method>`: the HTTP method the backend is called with (inbound, on-error as in APIM).

A literal must be an HTTP method token (letters only, at most 16); an expression's value is checked the
same way when it runs, so a client-chosen value can never put anything else on the request line.
"""

from __future__ import annotations

import re

from policies.context import Context
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Statement, register
from policies.xml import PolicyElement

_METHOD = re.compile(r"[A-Za-z]{1,16}")


@register
class SetMethod(Statement):
    element = "set-method"
    sections = frozenset({"inbound", "on-error"})

    def __init__(self, method: Value) -> None:
        self.method = method

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SetMethod:
        loader.no_attributes(element)
        loader.children(element, ())
        method = loader.text(element)
        if method.is_constant and not _METHOD.fullmatch(str(method.constant)):
            raise loader.fail(element, f"{method.constant!r} is not an HTTP method; write e.g. <set-method>POST</set-method>.")
        return cls(method)

    async def run(self, context: Context) -> None:
        context.Request.Method = self.method_of(context)

    def method_of(self, context: Context) -> str:
        """The method, checked (also what `send-request`'s `<set-method>` sends)."""
        method = "" if (value := self.method.evaluate(context)) is None else str(value)
        if not _METHOD.fullmatch(method):
            raise ExpressionRuntimeError(f"set-method: {method[:40]!r} is not an HTTP method.")
        return method.upper()
