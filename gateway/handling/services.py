"""What every request shares: the process-wide parts an `Exchange` calls on (built once, before any request).

The semantic cache (numpy, its vector index) and the signing keys (PyJWT, cryptography, httpx) are built on
first use: most gateways never load them, and a new instance's first request does not wait for their imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.backends.proxy import UpstreamClient
from gateway.backends.registry import BackendRegistry
from gateway.handling.tokens import TokenCounter
from policies.counters import Counters
from policies.services import MetricsSink

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
    token_rate_window_seconds: float = 60.0
    _token_providers: dict[tuple[str, str | None], TokenProvider] = field(default_factory=dict)

    @cached_property
    def semantic_cache(self) -> SemanticCacheService:
        return self.semantic_cache_factory()

    @cached_property
    def signing_keys(self) -> SigningKeys:
        from policies.jwks import SigningKeys

        return SigningKeys(self.openid_keys)

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        """A token for `resource` from the Function App's identity; one cached provider per (resource, identity)."""
        key = (resource, client_id)
        provider = self._token_providers.get(key)
        if provider is None:
            scope = resource.rstrip("/") + "/.default"
            provider = self._token_providers[key] = TokenProvider(managed_identity_credential(client_id), scope)
        return await provider.token()

    async def close(self) -> None:
        """Close what was built: token providers, and the semantic cache (it finishes its pending writes)."""
        for provider in self._token_providers.values():
            await provider.close()
        if "semantic_cache" in self.__dict__:
            await self.semantic_cache.close()
