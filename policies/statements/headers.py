"""`<set-header>` and `<set-query-parameter>`: change a header or query parameter of the request or response.

    <set-header name="x-team" exists-action="override | skip | append | delete">
        <value>@(context.Subscription.Name)</value>
    </set-header>

In `inbound` and `backend` they change the request sent to the backend; in `outbound` and `on-error` the
response sent to the client. Inside `<return-response>`, the response being returned.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, Self

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

EXISTS_ACTIONS = ("override", "skip", "append", "delete")


class _MultiMap(Protocol):
    def ContainsKey(self, name: str) -> bool: ...
    def set(self, name: str, values: list[str]) -> None: ...
    def append(self, name: str, value: str) -> None: ...
    def remove(self, name: str) -> None: ...


class SetNamedValueSettings(Settings):
    name: Value = attr()
    exists_action: str = attr(choices=EXISTS_ACTIONS, default="override")


class _SetNamedValues(Statement):
    what: ClassVar[str]

    def __init__(self, name: Value, exists_action: str, values: list[Value]) -> None:
        self.name = name
        self.exists_action = exists_action
        self.values = values

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Self:
        settings = loader.settings(element, SetNamedValueSettings)
        values = [loader.text(child) for child in loader.children(element, ("value",))]
        if settings.exists_action != "delete" and not values:
            raise loader.fail(element, f"Add at least one <value> (or use exists-action=\"delete\") to set a {cls.what}.")
        return cls(settings.name, settings.exists_action, values)

    def apply(self, target: _MultiMap, context: Context) -> None:
        name = str(self.name.evaluate(context))
        if self.exists_action == "delete":
            target.remove(name)
            return
        if self.exists_action == "skip" and target.ContainsKey(name):
            return
        values = [_text(value.evaluate(context)) for value in self.values]
        if self.exists_action == "append":
            for value in values:
                target.append(name, value)
        else:
            target.set(name, values)


@register
class SetHeader(_SetNamedValues):
    element = "set-header"
    what = "header"

    async def run(self, context: Context) -> None:
        if self.section in ("inbound", "backend"):
            self.apply(context.Request.Headers, context)
        elif context.Response is not None:
            self.apply(context.Response.Headers, context)


@register
class SetQueryParameter(_SetNamedValues):
    element = "set-query-parameter"
    what = "query parameter"
    sections = frozenset({"inbound", "backend"})

    async def run(self, context: Context) -> None:
        self.apply(context.Request.Url.Query, context)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)
