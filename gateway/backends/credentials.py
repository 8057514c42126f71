"""Entra ID tokens for backends that use managed identity: the boundary to the identity endpoint.

azure-identity's async credentials cache tokens, but ten concurrent first calls make ten token requests
(no single-flight), and each credential instance keeps its own cache. `TokenProvider` wraps one credential
per identity for the whole process, serves the cached token without awaiting anything, and refreshes it
under a lock well before it expires. Any failure to get a token becomes `BackendCredentialError` (a backend
failure: recorded in the backend's health, retried by `<retry>`, failed over by pools).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from gateway.errors import BackendCredentialError

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
#: Refresh this long before expiry, as azure-identity recommends (DEFAULT_REFRESH_OFFSET).
REFRESH_MARGIN_SECONDS = 300.0


class AccessTokenLike(Protocol):
    token: str
    expires_on: int


class AsyncTokenCredential(Protocol):
    """The part of `azure.core.credentials_async.AsyncTokenCredential` the gateway needs."""

    async def get_token(self, *scopes: str) -> AccessTokenLike: ...

    async def close(self) -> None: ...


class TokenProvider:
    """A cached bearer token for one identity and scope, refreshed before expiry, fetched once at a time."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            now = self._clock()
            if self._token is None or now >= self._refresh_at:
                await self._fetch(now)
        assert self._token is not None
        return self._token

    async def _fetch(self, now: float) -> None:
        try:
            access = await self._credential.get_token(self._scope)
        except Exception as exc:  # the identity endpoint's boundary: whatever azure-identity raises
            # A token that has not expired yet is still good: keep serving it and retry on a later call.
            if self._token is not None and now < self._expires_at:
                self._refresh_at = now + 30.0
                return
            raise BackendCredentialError(f"No token for {self._scope} ({type(exc).__name__}).") from exc
        self._token = access.token
        self._expires_at = float(access.expires_on)
        lifetime = self._expires_at - now
        self._refresh_at = self._expires_at - min(REFRESH_MARGIN_SECONDS, lifetime / 2)

    async def close(self) -> None:
        await self._credential.close()


def managed_identity_credential(client_id: str | None) -> AsyncTokenCredential:
    """The credential for a Function App's identity: user-assigned when a client id is given."""
    from azure.identity.aio import ManagedIdentityCredential  # heavy import, kept off cold start

    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
