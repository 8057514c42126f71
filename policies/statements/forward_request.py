"""`<forward-request timeout="120" />`: send the request to the selected backend (backend section only).

The request body is always buffered once by the gateway, so `buffer-request-body` is accepted and needs no
work, and a `<retry>` around this statement resends the same bytes.
"""

from __future__ import annotations

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.statement import Loader, Settings, Statement, attr, register
from policies.xml import PolicyElement


class ForwardRequestSettings(Settings):
    timeout: int | None = attr(minimum=1, maximum=3600)
    buffer_request_body: bool | None = attr()
    buffer_response: bool | None = attr()
    fail_on_error_status_code: bool = attr(default=False)
    follow_redirects: bool = attr(default=False)
    http_version: str | None = attr(choices=("1", "2or1", "2"))


@register
class ForwardRequest(Statement):
    element = "forward-request"
    sections = frozenset({"backend"})

    def __init__(self, timeout: float | None, fail_on_error_status: bool) -> None:
        self.timeout = timeout
        self.fail_on_error_status = fail_on_error_status

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ForwardRequest:
        loader.children(element, ())
        settings = loader.settings(element, ForwardRequestSettings)
        if settings.follow_redirects:
            raise loader.fail(element, 'follow-redirects="true" is not supported: Azure OpenAI does not redirect.')
        timeout = float(settings.timeout) if settings.timeout is not None else None
        return cls(timeout, settings.fail_on_error_status_code)

    async def run(self, context: Context) -> None:
        await context.services.forward(context, self.timeout)
        response = context.Response
        if self.fail_on_error_status and response is not None and response.StatusCode >= 400:
            raise PolicyError(
                self.element,
                "BackendErrorStatus",
                f"The backend answered {response.StatusCode}.",
                PolicyResponse.error(response.StatusCode, f"The backend answered {response.StatusCode}."),
            )
