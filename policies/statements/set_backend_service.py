"""`<set-backend-service backend-id="…" />` or `base-url="…"`: where `forward-request` sends the request.

`backend-id` names a configured backend (or pool); `base-url` is an Azure OpenAI endpoint, to which the
request's own `/openai/...` path and query are appended. A `base-url` must be allowed by the gateway's URL
allow-list (a configured backend's URL, or `GATEWAY_ALLOWED_URLS`; see policies/url_allow_list.py): checked
at load when constant, when the statement runs when computed. APIM sends anywhere; here a URL built from
request data cannot take the policy-set headers (a managed-identity token included) to the caller's host.
"""

from __future__ import annotations

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
from policies.url_allow_list import require_allowed
from policies.xml import PolicyElement


class SetBackendServiceSettings(Settings):
    backend_id: Value | None = attr()
    base_url: Value | None = attr()


@register
class SetBackendService(Statement):
    element = "set-backend-service"
    sections = frozenset({"inbound", "backend"})

    def __init__(self, backend_id: Value | None, base_url: Value | None) -> None:
        self.backend_id = backend_id
        self.base_url = base_url

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SetBackendService:
        loader.children(element, ())
        settings = loader.settings(element, SetBackendServiceSettings)
        backend_id, base_url = settings.backend_id, settings.base_url
        if (backend_id is None) == (base_url is None):
            raise loader.fail(element, "Set exactly one of 'backend-id' and 'base-url'.")
        if backend_id is not None:
            loader.check_backend_id(element, backend_id)
        if base_url is not None:
            loader.check_url(element, _with_slash(base_url))
        return cls(backend_id, base_url)

    async def run(self, context: Context) -> None:
        if self.backend_id is not None:
            context.backend_id = str(self.backend_id.evaluate(context))
            context.base_url = None
            return
        url = "" if self.base_url is None or (value := self.base_url.evaluate(context)) is None else str(value)
        require_allowed(context.services.allowed_urls, url.rstrip("/") + "/", self.element)
        context.base_url = url.rstrip("/").removesuffix("/openai")
        context.backend_id = None


def _with_slash(url: Value) -> Value:
    """A constant base URL as the prefix of every URL it stands for (`https://h/openai` → `https://h/openai/`)."""
    return Value.of(str(url.constant).rstrip("/") + "/") if url.is_constant else url
