"""`<set-backend-service backend-id="…" />` or `base-url="…"`: where `forward-request` sends the request.

`backend-id` names a configured backend (or pool); `base-url` is an Azure OpenAI endpoint, to which the
request's own `/openai/...` path and query are appended.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.statement import Loader, Settings, Statement, attr, register
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
        if backend_id is not None and backend_id.is_constant and loader.backend_ids is not None:
            if backend_id.constant not in loader.backend_ids:
                known = ", ".join(sorted(loader.backend_ids)) or "none configured"
                raise loader.fail(element, f"Unknown backend-id {backend_id.constant!r}; configured: {known}.")
        if base_url is not None and base_url.is_constant and not _is_http_url(base_url.constant):
            raise loader.fail(element, f"base-url {base_url.constant!r} is not an http(s) URL.")
        return cls(backend_id, base_url)

    async def run(self, context: Context) -> None:
        if self.backend_id is not None:
            context.backend_id = str(self.backend_id.evaluate(context))
            context.base_url = None
            return
        url = str(self.base_url.evaluate(context)) if self.base_url is not None else ""
        if not _is_http_url(url):
            raise PolicyError(self.element, "InvalidBackendUrl", f"base-url {url!r} is not an http(s) URL.", PolicyResponse.error(500, "The policy set an invalid backend URL."))
        context.base_url = url.rstrip("/").removesuffix("/openai")
        context.backend_id = None


def _is_http_url(value: object) -> bool:
    parts = urlsplit(str(value))
    return parts.scheme in ("http", "https") and bool(parts.netloc)
