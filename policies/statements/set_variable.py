"""`<set-variable name="x" value="…" />`: store a value in `context.Variables`."""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, register
from policies.xml import PolicyElement


@register
class SetVariable(Statement):
    element = "set-variable"
    attributes = (Attr("name", required=True, expressions=False), Attr("value", required=True))

    def __init__(self, name: str, value: Value) -> None:
        self.name = name
        self.value = value

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SetVariable:
        loader.children(element, ())
        values = loader.attributes(element, cls.attributes)
        return cls(values["name"].constant, values["value"])  # type: ignore[union-attr,arg-type]

    async def run(self, context: Context) -> None:
        context.Variables.set(self.name, self.value.evaluate(context))
