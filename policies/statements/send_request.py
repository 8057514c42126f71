"""`<send-request>` and `<send-one-way-request>`: the policy sends a request of its own.

    <send-request mode="new" response-variable-name="introspection" timeout="20" ignore-error="true">
        <set-url>https://auth.example.com/introspect</set-url>
        <set-method>POST</set-method>
        <set-header name="Content-Type" exists-action="override"><value>application/x-www-form-urlencoded</value></set-header>
        <set-body>@("token=" + (string)context.Variables["token"])</set-body>
        <authentication-managed-identity resource="api://auth-service" />
    </send-request>
    <choose><when condition='@(((IResponse)context.Variables["introspection"]).Body.As<JObject>()["active"].ToString() != "True")'>…

`mode="new"` starts from nothing (method GET unless `<set-method>`); `mode="copy"` from the client's request:
its method, headers and body (in `outbound` without the body, as in APIM). `<set-header>` (with
`exists-action`), `<set-body>` (literal, expression or Liquid) and `<set-method>` then change it, and
`<authentication-managed-identity>` puts a token for its `resource` on it. `<set-url>` is required in both
modes (APIM's copy without it has no documented destination; here it would call the gateway itself).
`<authentication-certificate>` and `<proxy>` are refused: the gateway has no certificate store or proxy.

The URL must be allowed by the gateway's URL allow-list (the backends' URLs and `GATEWAY_ALLOWED_URLS`;
policies/url_allow_list.py): a constant one is checked at load, a computed one when it runs; a refused URL
fails the request (reason `UrlNotAllowed`, on-error runs) whatever `ignore-error` says. The credential headers
the client sent (its subscription key) never go along unless a policy set them. Redirects are not followed.

`send-request` waits up to `timeout` seconds (default 60, at most 230) and puts the answer in
`response-variable-name` as an `IResponse`: `StatusCode`, `StatusReason`, `Headers`, `Body.As<JObject>()`.
Any status is an answer. The body is read up to 1 MiB; a larger answer, a timeout or an unreachable host is
an error (reasons `ResponseTooLarge`, `BackendTimeout`, `BackendConnectionFailure`), or with
`ignore-error="true"` the variable is set to null and the policy goes on.

`send-one-way-request` does not wait: the request goes out in the background, at most 64 in flight per
instance (more are dropped and logged), and its answer and failures are only logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.context import Body, Context, Headers
from policies.errors import PolicyError, ServiceError
from policies.expressions import ExpressionRuntimeError, Value
from policies.services import OutgoingRequest
from policies.statement import Loader, Settings, Statement, attr, elements_of, register
from policies.statements.authentication_managed_identity import AuthenticationManagedIdentity
from policies.statements.headers import SetHeader
from policies.statements.set_body import SetBody
from policies.statements.set_method import SetMethod
from policies.url_allow_list import require_allowed
from policies.xml import PolicyElement

MODES = ("new", "copy")
#: Seconds; the platform ends a response after 230 s, so no request can wait longer for a policy's call.
MAX_TIMEOUT = 230
_CHILDREN = ("set-url", "set-method", "set-header", "set-body", "authentication-managed-identity")
_REFUSED = {
    "authentication-certificate": "client certificates are not supported (the gateway has no certificate store)",
    "proxy": "<proxy> is not supported: requests go out directly",
}


class SendOneWayRequestSettings(Settings):
    mode: Value = attr(choices=MODES, default="new")
    timeout: Value = attr(kind=int, default=60, minimum=1, maximum=MAX_TIMEOUT)


class SendRequestSettings(SendOneWayRequestSettings):
    response_variable_name: Value = attr()
    ignore_error: bool = attr(default=False)


@dataclass(frozen=True)
class _Template:
    """How to build the request: the children of `<send-request>`, loaded."""

    url: Value
    method: SetMethod | None
    headers: tuple[SetHeader, ...]
    body: SetBody | None
    identity: AuthenticationManagedIdentity | None

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> _Template:
        url: Value | None = None
        method: SetMethod | None = None
        headers: list[SetHeader] = []
        body: SetBody | None = None
        identity: AuthenticationManagedIdentity | None = None
        for child in elements_of(element):
            if child.tag in _REFUSED:
                raise loader.fail(child, f"Not supported inside <{element.tag}>: {_REFUSED[child.tag]}.")
            if child.tag not in _CHILDREN:
                raise loader.fail(child, f"Unexpected element inside <{element.tag}>; allowed: {', '.join(_CHILDREN)}.")
            if child.tag != "set-header" and any(other.tag == child.tag for other in elements_of(element) if other is not child):
                raise loader.fail(child, f"<{child.tag}> may appear once inside <{element.tag}>.")
            if child.tag == "set-url":
                loader.no_attributes(child)
                loader.children(child, ())
                url = loader.text(child)
                loader.check_url(child, url)
            elif child.tag == "set-method":
                method = SetMethod.load(child, loader)
            elif child.tag == "set-header":
                headers.append(SetHeader.load(child, loader))
            elif child.tag == "set-body":
                body = SetBody.load(child, loader)
            else:
                identity = AuthenticationManagedIdentity.load(child, loader)
        if url is None:
            raise loader.fail(element, "Add <set-url> with the URL to send to.")
        return cls(url, method, tuple(headers), body, identity)

    async def build(self, context: Context, mode: str, section: str, source: str) -> OutgoingRequest:
        copy = mode == "copy"
        headers = Headers(context.Request.Headers.items() if copy else ())
        body = Body(context.Request.Body.content if copy and section != "outbound" else b"")
        method = self.method.method_of(context) if self.method is not None else (context.Request.Method if copy else "GET")
        url = "" if (value := self.url.evaluate(context)) is None else str(value)
        require_allowed(context.services.allowed_urls, url, source)
        for header in self.headers:
            header.apply(headers, context)
        if self.body is not None:
            self.body.apply(body, headers, context)
        if self.identity is not None and (token := await self.identity.token(context)) is not None:
            headers.set("Authorization", ["Bearer " + token])
        return OutgoingRequest(method, url, tuple(headers.items()), body.content)


class _Send(Statement):
    def __init__(self, settings: SendOneWayRequestSettings, template: _Template) -> None:
        self.mode = settings.mode
        self.timeout = settings.timeout
        self.template = template

    async def request(self, context: Context) -> tuple[OutgoingRequest, float]:
        mode = "" if (value := self.mode.evaluate(context)) is None else str(value).lower()
        if mode not in MODES:
            raise ExpressionRuntimeError(f"{self.element}: mode {mode[:40]!r} is neither new nor copy.")
        return await self.template.build(context, mode, self.section, self.element), _seconds(self.timeout.evaluate(context), self.element)


@register
class SendRequest(_Send):
    element = "send-request"

    def __init__(self, settings: SendRequestSettings, template: _Template) -> None:
        super().__init__(settings, template)
        self.variable = settings.response_variable_name
        self.ignore_error = settings.ignore_error

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SendRequest:
        return cls(loader.settings(element, SendRequestSettings), _Template.load(element, loader))

    async def run(self, context: Context) -> None:
        variable = "" if (value := self.variable.evaluate(context)) is None else str(value)
        if not variable:
            raise ExpressionRuntimeError("send-request: response-variable-name is empty.")
        request, timeout = await self.request(context)
        try:
            response = await context.services.send(request, timeout)
        except ServiceError as exc:
            if not self.ignore_error:
                raise PolicyError(self.element, exc.code, exc.message, exc.response()) from exc
            response = None
        context.Variables.set(variable, response)


@register
class SendOneWayRequest(_Send):
    element = "send-one-way-request"

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SendOneWayRequest:
        return cls(loader.settings(element, SendOneWayRequestSettings), _Template.load(element, loader))

    async def run(self, context: Context) -> None:
        request, timeout = await self.request(context)
        context.services.send_one_way(request, timeout)


def _seconds(value: object, source: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ExpressionRuntimeError(f"{source}: timeout {str(value)[:40]!r} is not a number of seconds.") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ExpressionRuntimeError(f"{source}: timeout {seconds!r} must be a positive number of seconds.")
    return min(seconds, MAX_TIMEOUT)
