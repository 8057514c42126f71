"""`<return-response>`: end the pipeline and answer with a response built here.

    <return-response>
        <set-status code="400" reason="Bad Request" />
        <set-header name="content-type" exists-action="override"><value>application/json</value></set-header>
        <set-body>{"error": "Invalid model"}</set-body>
    </return-response>

With `response-variable-name`, the answer starts as the response `send-request` stored in that variable (its
status, reason, headers and body), and the children change it. A variable that is not set starts a blank
answer, as APIM evidently does (a public sample deployed with the docs' placeholder name, "existing context
variable"); one that holds anything but a response is an error.
"""

from __future__ import annotations

from http import HTTPStatus

from policies.context import Context, Headers, Response
from policies.errors import PolicyResponse, ReturnResponse
from policies.expressions import ExpressionRuntimeError, Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.statements.headers import SetHeader
from policies.xml import PolicyElement


class ReturnResponseSettings(Settings):
    response_variable_name: str | None = attr()


class ReturnBodySettings(Settings):
    """`<set-body>` inside `<return-response>` builds a new response, so there is no body for a template to read."""

    template: str | None = attr(choices=("none",))


class SetStatusSettings(Settings):
    code: Value = attr(kind=int, minimum=100, maximum=599)
    reason: Value | None = attr()


@register
class ReturnResponseStatement(Statement):
    element = "return-response"

    def __init__(self, status: Value | None, reason: Value | None, headers: list[SetHeader], body: Value | None, variable: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        #: `response-variable-name`: the variable holding the `send-request` response to start from.
        self.variable = variable

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ReturnResponseStatement:
        variable = loader.settings(element, ReturnResponseSettings).response_variable_name
        status: Value | None = None
        reason: Value | None = None
        body: Value | None = None
        headers: list[SetHeader] = []
        for child in loader.children(element, ("set-status", "set-header", "set-body")):
            if child.tag == "set-status":
                set_status = loader.settings(child, SetStatusSettings)
                status, reason = set_status.code, set_status.reason
            elif child.tag == "set-header":
                headers.append(SetHeader.load(child, loader))
            else:
                loader.settings(child, ReturnBodySettings)
                body = loader.text(child)
        return cls(status, reason, headers, body, variable)

    async def run(self, context: Context) -> None:
        base = self._stored(context)
        status = int(self.status.evaluate(context)) if self.status else (base.StatusCode if base else 200)
        if self.reason:
            reason = str(self.reason.evaluate(context))
        else:
            reason = base.StatusReason if base and not self.status and base.StatusReason else HTTPStatus(status).phrase
        headers = Headers(base.Headers.items() if base else ())
        for header in self.headers:
            header.apply(headers, context)
        body = self.body.evaluate(context) if self.body else (base.Body.content if base else "")
        content = body if isinstance(body, bytes) else str(body if body is not None else "").encode()
        raise ReturnResponse(PolicyResponse(status, content, headers.items(), reason))

    def _stored(self, context: Context) -> Response | None:
        if self.variable is None:
            return None
        if not context.Variables.ContainsKey(self.variable):
            return None
        stored = context.Variables.get(self.variable)
        if not isinstance(stored, Response):
            raise ExpressionRuntimeError(f"return-response: variable {self.variable!r} holds no response (set it with send-request).")
        return stored
