"""`<find-and-replace from="gpt-35-turbo" to="gpt-4o-mini" />`: replace every occurrence of a text in the
request body (inbound, backend) or the response body (outbound, on-error).

The body is read as UTF-8 text. An empty `from` changes nothing (a literal one is refused at load). A
streamed answer is not changed (see `policies.statements._message`).
"""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.statements._message import message_of
from policies.xml import PolicyElement


class FindAndReplaceSettings(Settings):
    find: Value = attr("from")
    replacement: Value = attr("to")


@register
class FindAndReplace(Statement):
    element = "find-and-replace"

    def __init__(self, find: Value, replacement: Value) -> None:
        self.find = find
        self.replacement = replacement

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> FindAndReplace:
        loader.children(element, ())
        settings = loader.settings(element, FindAndReplaceSettings)
        if settings.find.is_constant and settings.find.constant == "":
            raise loader.fail(element, "Attribute 'from' must not be empty.")
        return cls(settings.find, settings.replacement)

    async def run(self, context: Context) -> None:
        message = message_of(context, self.section, self.element)
        find = _text(self.find.evaluate(context))
        if message is None or not find:
            return
        text = message.body.content.decode("utf-8", "replace")
        if find in text:
            message.body.replace(text.replace(find, _text(self.replacement.evaluate(context))).encode())


def _text(value: object) -> str:
    return "" if value is None else str(value)
