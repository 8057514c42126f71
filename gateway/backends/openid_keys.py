"""OpenID signing keys fetched from identity providers: the network side of `policies.jwks.SigningKeys`.

`validate-jwt` and `validate-azure-ad-token` ask for the keys of a configuration URL on every request, so this is
a cache in front of the identity provider:

* Configured keys win (`GATEWAY_OPENID_KEYS`); they are never refreshed.
* Otherwise the configuration and its `jwks_uri` are fetched (the cold path) and kept for an hour. A token
  naming a `kid` the cached set lacks triggers one early refresh, for key rollover, but at most every five
  minutes, so tokens with made-up `kid`s cannot make the gateway hammer the provider. Only one fetch per URL
  runs at a time; a failed fetch keeps the previous keys and is retried after thirty seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies.jwks import OpenIdKeys, SigningKeysUnavailable, StaticSigningKeys

if TYPE_CHECKING:  # httpx loads with the first fetch, not with the gateway
    import httpx

logger = logging.getLogger(__name__)

CACHE_SECONDS = 3600.0
#: The shortest time between two fetches of one URL triggered by an unknown `kid`.
REFRESH_SECONDS = 300.0
#: How long a failed fetch is remembered before the next attempt.
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class _Entry:
    keys: OpenIdKeys | None
    #: Until when the entry answers without fetching.
    expires: float
    #: Before this, an unknown `kid` does not trigger a fetch.
    refresh_after: float

    def answers(self, key_id: str | None, now: float) -> bool:
        if now >= self.expires:
            return False
        return self.keys is None or key_id is None or self.keys.has(key_id) or now < self.refresh_after


class OpenIdKeyCache:
    """`policies.jwks.SigningKeys` for the gateway: configured keys first, then a cached fetch."""

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = StaticSigningKeys(overrides)
        self._transport = transport
        self._timeout = timeout
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str, key_id: str | None = None, *, tenant_id: str | None = None) -> OpenIdKeys:
        """The keys of the configuration at `url` (or the override for `url` or `tenant_id`)."""
        configured = self._configured.find(url, tenant_id)
        if configured is not None:
            return configured
        entry = self._entries.get(url)
        if entry is None or not entry.answers(key_id, self._clock()):
            async with self._locks.setdefault(url, asyncio.Lock()):
                entry = self._entries.get(url)
                if entry is None or not entry.answers(key_id, self._clock()):
                    entry = await self._refresh(url, entry)
        if entry.keys is None:
            raise SigningKeysUnavailable(f"The signing keys of {url} could not be fetched.")
        return entry.keys

    async def _refresh(self, url: str, previous: _Entry | None) -> _Entry:
        import httpx

        now = self._clock()
        try:
            keys = await self._fetch(url)
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("Fetching signing keys from %s failed: %s.", url, exc)
            kept = previous.keys if previous is not None else None
            entry = _Entry(kept, now + RETRY_SECONDS, now + RETRY_SECONDS)
        else:
            entry = _Entry(keys, now + CACHE_SECONDS, now + REFRESH_SECONDS)
        self._entries[url] = entry
        return entry

    async def _fetch(self, url: str) -> OpenIdKeys:
        import httpx

        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout) as client:
            configuration = await _get_json(client, url)
            jwks_uri = configuration.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("the OpenID configuration has no jwks_uri")
            jwks = await _get_json(client, jwks_uri)
        issuer = configuration.get("issuer")
        return OpenIdKeys.from_jwks(jwks, issuer if isinstance(issuer, str) else None)


async def _get_json(client: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return document
