"""`<forward-request timeout="120" />`: send the request to the selected backend (backend section only).

The request body is always buffered once by the gateway, so `buffer-request-body` is accepted and needs no
work, and a `<retry>` around this statement resends the same bytes.
"""

from __future__ import annotations

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.statement import Attr, Loader, Statement, register
from policies.xml import PolicyElement


@register
class ForwardRequest(Statement):
    element = "forward-request"
    sections = frozenset({"backend"})
    attributes = (
        Attr("timeout", expressions=False, kind=int, minimum=1, maximum=3600),
        Attr("buffer-request-body", expressions=False, kind=bool),
        Attr("buffer-response", expressions=False, kind=bool),
        Attr("fail-on-error-status-code", expressions=False, kind=bool, default=False),
        Attr("follow-redirects", expressions=False, kind=bool, default=False),
        Attr("http-version", expressions=False, choices=("1", "2or1", "2")),
    )

    def __init__(self, timeout: float | None, fail_on_error_status: bool) -> None:
        self.timeout = timeout
        self.fail_on_error_status = fail_on_error_status

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ForwardRequest:
        loader.children(element, ())
        v = loader.attributes(element, cls.attributes)
        if v["follow-redirects"].constant:  # type: ignore[union-attr]
            raise loader.fail(element, "follow-redirects=\"true\" is not supported: Azure OpenAI does not redirect.")
        timeout = float(v["timeout"].constant) if v["timeout"] is not None else None
        return cls(timeout, bool(v["fail-on-error-status-code"].constant))  # type: ignore[union-attr]

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
