"""What every request shares: the process-wide parts an `Exchange` calls on (built once, before any request).

The semantic cache (numpy, its vector index) and the signing keys (PyJWT, cryptography, httpx) are built on
first use: most gateways never load them, and a new instance's first request does not wait for their imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gateway.backends.backend import Backend
from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.backends.outbound import OutboundClient
from gateway.backends.proxy import UpstreamClient
from gateway.backends.registry import BackendRegistry
from gateway.errors import BackendNotFound
from gateway.handling.tokens import TokenCounter
from policies.context import Response
from policies.counters import Counters
from policies.services import EventLog, MetricsSink, OutgoingRequest, ValueCache
from policies.url_allow_list import UrlAllowList

if TYPE_CHECKING:
    from gateway.stores.semantic_cache import SemanticCacheService
    from policies.jwks import SigningKeys


@dataclass
class GatewayServices:
    backends: BackendRegistry
    upstream: UpstreamClient
    #: Where rate limits and token limits count (shared across instances through leases).
    counters: Counters
    metrics: MetricsSink
    #: Builds the semantic cache the first time a policy uses it.
    semantic_cache_factory: Callable[[], SemanticCacheService]
    #: `GATEWAY_OPENID_KEYS`: JWKS overrides by OpenID configuration URL or tenant id.
    openid_keys: Mapping[str, Mapping[str, Any]]
    tokens: TokenCounter
    default_completion_reservation: int
    #: Where `base-url` and `send-request` may send.
    allowed_urls: UrlAllowList
    value_cache: ValueCache
    event_log: EventLog
    outbound: OutboundClient
    token_rate_window_seconds: float = 60.0
    _token_providers: dict[tuple[str, str | None], TokenProvider] = field(default_factory=dict)

    @cached_property
    def semantic_cache(self) -> SemanticCacheService:
        return self.semantic_cache_factory()

    @cached_property
    def signing_keys(self) -> SigningKeys:
        from gateway.backends.openid_keys import OpenIdKeyCache

        return OpenIdKeyCache(self.openid_keys)

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
        """Close what was built: outbound requests, token providers, and the semantic cache (it finishes its writes)."""
        if "semantic_cache" in self.__dict__:
            await self.semantic_cache.close()
        await self.outbound.close()
        for provider in self._token_providers.values():
            await provider.close()
