"""`<set-body>`: replace the request body (inbound, backend) or the response body (outbound, on-error).

    <set-body>@{ var body = context.Request.Body.As<JObject>(preserveContent: true); … return body.ToString(); }</set-body>
    <set-body template="liquid">{"model": "{{body.model}}", "user": "{{context.Variables["user"]}}"}</set-body>

Without `template` the text is a literal or an expression; a JSON value (`JObject`, `JArray`) is written as
JSON, null as an empty body. With `template="liquid"` the text is a Liquid template, parsed at load (see
`policies.statements._liquid` for what it can read, its bounds, and filter names); `{{name}}` is a named
value when one is defined by that name, and Liquid's otherwise. Put XML templates in `<![CDATA[ … ]]>`:
child elements are refused. `xsi-nil` and `parse-date` (XML and date handling of APIM's engine) are
accepted and change nothing here. The content type is left as it is, as in APIM. A streamed answer is not
changed (see `policies.statements._message`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from policies.context import Body, Context, Headers
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.statements._liquid import compile_template, render, substitute_named_values
from policies.statements._message import message_of
from policies.xml import PolicyElement

if TYPE_CHECKING:
    from liquid import BoundTemplate


class SetBodySettings(Settings):
    template: str | None = attr(choices=("liquid", "none"))
    xsi_nil: str | None = attr(choices=("blank", "null"))
    parse_date: bool | None = attr()


@register
class SetBody(Statement):
    element = "set-body"

    def __init__(self, value: Value | None, template: BoundTemplate | None) -> None:
        #: Exactly one of the two is set.
        self.value = value
        self.template = template

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SetBody:
        settings = loader.settings(element, SetBodySettings)
        if len(element):
            raise loader.fail(element, "Child elements are not allowed: put XML text inside <![CDATA[ … ]]>.")
        if settings.template != "liquid":
            return cls(loader.text(element), None)
        try:
            template = compile_template(substitute_named_values(element.text or "", loader.named_values))
        except ValueError as exc:
            raise loader.fail(element, str(exc)) from None
        return cls(None, template)

    async def run(self, context: Context) -> None:
        message = message_of(context, self.section, self.element)
        if message is not None:
            self.apply(message.body, message.headers, context)

    def apply(self, body: Body, headers: Headers, context: Context) -> None:
        """Replace `body` (also what `send-request`'s `<set-body>` does to the request it sends)."""
        if self.template is not None:
            body.replace(render(self.template, body, headers, context).encode())
        elif self.value is not None:
            body.replace(body_bytes(self.value.evaluate(context)))


def body_bytes(value: object) -> bytes:
    """A body from an expression's value: text as UTF-8, JSON values as JSON, null as nothing."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (dict, list)):
        return orjson.dumps(value)
    if isinstance(value, bool):
        return b"True" if value else b"False"
    return str(value).encode()
