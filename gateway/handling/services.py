"""What every request shares: the process-wide parts an `Exchange` calls on (built once, before any request)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.backends.proxy import UpstreamClient
from gateway.backends.registry import BackendRegistry
from gateway.handling.tokens import TokenCounter
from gateway.stores.semantic_cache import SemanticCacheService
from policies.counters import Counters
from policies.jwks import SigningKeys
from policies.services import MetricsSink


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

    async def close(self) -> None:
        for provider in self._token_providers.values():
            await provider.close()
