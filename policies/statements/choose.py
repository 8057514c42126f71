"""`<choose>`: the first `<when condition="…">` that holds runs its statements, else `<otherwise>`."""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Attr, Loader, Statement, as_bool, register, run_all
from policies.xml import PolicyElement


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
                condition = loader.attributes(child, (Attr("condition", required=True),))["condition"]
                branches.append((condition, loader.statements(child)))  # type: ignore[arg-type]
            else:
                loader.attributes(child, ())
                otherwise = loader.statements(child)
        if not branches:
            raise loader.fail(element, "<choose> needs at least one <when condition=\"…\">.")
        return cls(branches, otherwise or [])

    async def run(self, context: Context) -> None:
        for condition, statements in self.branches:
            if as_bool(condition.evaluate(context), condition.source):
                await run_all(statements, context)
                return
        await run_all(self.otherwise, context)
