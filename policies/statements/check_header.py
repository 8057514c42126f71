"""`<check-header>`: refuse requests that lack a header, or whose header has a value not listed.

    <check-header name="x-client" failed-check-httpcode="401" failed-check-error-message="Unknown client"
                  ignore-case="true">
        <value>portal</value>
        <value>batch</value>
    </check-header>

Without `<value>` elements only presence is checked. With them, every value the header carries must be one
of them (so a repeated header cannot smuggle a second value past the check). The refusal answers with
`failed-check-httpcode` and `failed-check-error-message`; `context.LastError.Reason` is `HeaderNotFound` or
`HeaderValueNotAllowed`. Unlike APIM, the rejected value is not echoed into `LastError.Message`: such
headers often carry secrets, and that message is what on-error policies log.
"""

from __future__ import annotations

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement


class CheckHeaderSettings(Settings):
    name: Value = attr()
    failed_check_httpcode: Value = attr(kind=int, minimum=100, maximum=599)
    failed_check_error_message: Value = attr()
    ignore_case: bool = attr()


@register
class CheckHeader(Statement):
    element = "check-header"
    sections = frozenset({"inbound"})

    def __init__(self, name: Value, status: Value, message: Value, ignore_case: bool, allowed: tuple[Value, ...]) -> None:
        self.name = name
        self.status = status
        self.message = message
        self.ignore_case = ignore_case
        self.allowed = allowed

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> CheckHeader:
        s = loader.settings(element, CheckHeaderSettings)
        allowed = tuple(loader.text(child) for child in loader.children(element, ("value",)))
        return cls(s.name, s.failed_check_httpcode, s.failed_check_error_message, s.ignore_case, allowed)

    async def run(self, context: Context) -> None:
        name = str(self.name.evaluate(context))
        present = context.Request.Headers.get_all(name)
        if not present:
            raise self._refusal(context, "HeaderNotFound", f"Header {name} was not found in the request. Access denied.")
        if not self.allowed:
            return
        allowed = {self._fold(value.evaluate(context)) for value in self.allowed}
        if any(self._fold(value) not in allowed for value in present):
            raise self._refusal(context, "HeaderValueNotAllowed", f"Header {name} has a value that is not allowed. Access denied.")

    def _fold(self, value: object) -> str:
        text = "" if value is None else str(value)
        return text.casefold() if self.ignore_case else text

    def _refusal(self, context: Context, reason: str, detail: str) -> PolicyError:
        status = int(self.status.evaluate(context))
        message = str(self.message.evaluate(context))
        return PolicyError(self.element, reason, detail, PolicyResponse.error(status, message))
