"""What every request shares: the process-wide parts an `Exchange` calls on (built once, before any request)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.backends.outbound import OutboundClient
from gateway.backends.proxy import UpstreamClient
from gateway.backends.backend import Backend
from gateway.backends.registry import BackendRegistry
from gateway.errors import BackendNotFound
from gateway.handling.tokens import TokenCounter
from gateway.stores.semantic_cache import SemanticCacheService
from policies.context import Response
from policies.counters import Counters
from policies.jwks import SigningKeys
from policies.services import EventLog, MetricsSink, OutgoingRequest, ValueCache
from policies.url_allow_list import UrlAllowList


@dataclass
class GatewayServices:
    backends: BackendRegistry
    upstream: UpstreamClient
    #: Where rate limits and token limits count (shared across instances through leases).
    counters: Counters
    metrics: MetricsSink
    semantic_cache: SemanticCacheService
    signing_keys: SigningKeys
    tokens: TokenCounter
    default_completion_reservation: int
    #: Where `base-url` and `send-request` may send.
    allowed_urls: UrlAllowList
    value_cache: ValueCache
    event_log: EventLog
    outbound: OutboundClient
    token_rate_window_seconds: float = 60.0
    _token_providers: dict[tuple[str, str | None], TokenProvider] = field(default_factory=dict)

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        """A token for `resource` from the Function App's identity; one cached provider per (resource, identity)."""
        key = (resource, client_id)
        provider = self._token_providers.get(key)
        if provider is None:
            scope = resource.rstrip("/") + "/.default"
            provider = self._token_providers[key] = TokenProvider(managed_identity_credential(client_id), scope)
        return await provider.token()

    async def call_backend(self, backend_id: str, path: str, body: bytes, timeout: float) -> Response:
        """POST JSON to a configured backend (an Azure AI service: a key goes in `Ocp-Apim-Subscription-Key`)."""
        target = self.backends.by_id(backend_id)
        if target is None:
            raise BackendNotFound(f"Backend {backend_id[:100]!r} is not configured.")
        backend: Backend = target.select(None, ())
        headers = [("content-type", "application/json")]
        for name, value in await backend.auth_headers():
            headers.append(("Ocp-Apim-Subscription-Key" if name == "api-key" else name, value))
        request = OutgoingRequest("POST", backend.base_url + path, tuple(headers), body)
        return await self.outbound.send(request, timeout)

    async def close(self) -> None:
        await self.outbound.close()
        for provider in self._token_providers.values():
            await provider.close()
