"""`<choose>`: the first `<when condition="…">` that holds runs its statements, else `<otherwise>`."""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, as_bool, attr, register, run_all
from policies.xml import PolicyElement


class WhenSettings(Settings):
    condition: Value = attr()


@register
class Choose(Statement):
    element = "choose"

    def __init__(self, branches: list[tuple[Value, list[Statement]]], otherwise: list[Statement]) -> None:
        self.branches = branches
        self.otherwise = otherwise

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Choose:
        branches: list[tuple[Value, list[Statement]]] = []
        otherwise: list[Statement] | None = None
        for child in loader.children(element, ("when", "otherwise")):
            if otherwise is not None:
                raise loader.fail(child, "<otherwise> must be the last branch of <choose>, and appear once.")
            if child.tag == "when":
                condition = loader.settings(child, WhenSettings).condition
                branches.append((condition, loader.body(child)))
            else:
                loader.no_attributes(child)
                otherwise = loader.body(child)
        if not branches:
            raise loader.fail(element, '<choose> needs at least one <when condition="…">.')
        return cls(branches, otherwise or [])

    async def run(self, context: Context) -> None:
        for condition, statements in self.branches:
            if as_bool(condition.evaluate(context), condition.source):
                await run_all(statements, context)
                return
        await run_all(self.otherwise, context)
