"""`<set-variable name="x" value="…" />`: store a value in `context.Variables`."""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement


class SetVariableSettings(Settings):
    name: str = attr()
    value: Value = attr()


@register
class SetVariable(Statement):
    element = "set-variable"

    def __init__(self, name: str, value: Value) -> None:
        self.name = name
        self.value = value

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SetVariable:
        loader.children(element, ())
        settings = loader.settings(element, SetVariableSettings)
        return cls(settings.name, settings.value)

    async def run(self, context: Context) -> None:
        context.Variables.set(self.name, self.value.evaluate(context))
