"""`<set-header>` and `<set-query-parameter>`: change a header or query parameter of the request or response.

    <set-header name="x-team" exists-action="override | skip | append | delete">
        <value>@(context.Subscription.Name)</value>
    </set-header>

In `inbound` and `backend` they change the request sent to the backend; in `outbound` and `on-error` the
response sent to the client. Inside `<return-response>`, the response being returned.

What can be sent is checked where it is set, never when the message is already on its way: a header name must
be an HTTP token, a header value may hold no control character but tab (no CR, LF, NUL) and only ISO-8859-1
characters (what HTTP/1.1 carries), a query parameter's name and value no control character but tab (anything
else is percent-encoded as UTF-8).
Constants (named values included) are checked when the document loads, so a bad one is a load error naming the
element; computed values when the statement runs, before anything is forwarded: a bad one is a policy error
(reason `InvalidHeaderValue` or `InvalidQueryParameter`, answered 500 in the OpenAI error shape) and
`<on-error>` runs. A bad value set in `<on-error>` itself leaves the error response as it was.
"""

from __future__ import annotations

import re
from typing import ClassVar, Protocol, Self

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement

EXISTS_ACTIONS = ("override", "skip", "append", "delete")
#: RFC 9110 `token`: the characters of a header name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters (all but tab): CR and LF would end the header line, and servers refuse the others.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


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
    #: `context.LastError.Reason` and the error code when a computed name or value cannot be sent.
    reason: ClassVar[str]

    def __init__(self, name: Value, exists_action: str, values: list[Value]) -> None:
        self.name = name
        self.exists_action = exists_action
        self.values = values

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Self:
        settings = loader.settings(element, SetNamedValueSettings)
        children = loader.children(element, ("value",))
        values = [loader.text(child) for child in children]
        if settings.exists_action != "delete" and not values:
            raise loader.fail(element, f'Add at least one <value> (or use exists-action="delete") to set a {cls.what}.')
        if settings.exists_action != "delete":
            name = settings.name
            if name.is_constant and (problem := cls.name_problem(str(name.constant))):
                raise loader.fail(element, f"The {cls.what} name {_shown(str(name.constant))} cannot be sent: {problem}.")
            for child, value in zip(children, values, strict=True):
                if value.is_constant and (problem := cls.value_problem(_text(value.constant))):
                    raise loader.fail(child, f"This {cls.what} value cannot be sent: {problem}.")
        return cls(settings.name, settings.exists_action, values)

    @staticmethod
    def name_problem(name: str) -> str | None:
        """Why `name` cannot be sent, or None."""
        raise NotImplementedError

    @staticmethod
    def value_problem(value: str) -> str | None:
        """Why `value` cannot be sent, or None."""
        raise NotImplementedError

    def apply(self, target: _MultiMap, context: Context) -> None:
        name = str(self.name.evaluate(context))
        if self.exists_action == "delete":
            target.remove(name)
            return
        if self.exists_action == "skip" and target.ContainsKey(name):
            return
        values = [_text(value.evaluate(context)) for value in self.values]
        problem = self.name_problem(name) or next(filter(None, map(self.value_problem, values)), None)
        if problem is not None:
            message = f"The policy set the {self.what} {_shown(name)} to something that cannot be sent: {problem}."
            raise PolicyError(self.element, self.reason, message, PolicyResponse.error(500, message, code=self.reason))
        if self.exists_action == "append":
            for value in values:
                target.append(name, value)
        else:
            target.set(name, values)


@register
class SetHeader(_SetNamedValues):
    element = "set-header"
    what = "header"
    reason = "InvalidHeaderValue"

    @staticmethod
    def name_problem(name: str) -> str | None:
        return None if _TOKEN.fullmatch(name) else "a header name is letters, digits and !#$%&'*+-.^_`|~ only"

    @staticmethod
    def value_problem(value: str) -> str | None:
        if _CONTROL.search(value):
            return "it contains a control character (CR, LF, NUL, …)"
        return None if value.isascii() or _latin_1(value) else "it contains characters outside ISO-8859-1"

    async def run(self, context: Context) -> None:
        if self.section in ("inbound", "backend"):
            self.apply(context.Request.Headers, context)
        elif context.Response is not None:
            self.apply(context.Response.Headers, context)


@register
class SetQueryParameter(_SetNamedValues):
    element = "set-query-parameter"
    what = "query parameter"
    reason = "InvalidQueryParameter"
    sections = frozenset({"inbound", "backend"})

    @staticmethod
    def name_problem(name: str) -> str | None:
        return SetQueryParameter.value_problem(name) or (None if name else "it is empty")

    @staticmethod
    def value_problem(value: str) -> str | None:
        return "it contains a control character (CR, LF, NUL, …)" if _CONTROL.search(value) else None

    async def run(self, context: Context) -> None:
        self.apply(context.Request.Url.Query, context)


def _latin_1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str) -> str:
    """A name for a message: quoted, escaped and short (it may come from request data)."""
    return repr(name[:60] + ("…" if len(name) > 60 else ""))


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)
