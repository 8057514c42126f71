"""Signing keys for token validation: an OpenID configuration URL resolved to the keys of its JWKS.

`validate-jwt` and `validate-azure-ad-token` ask for the keys of a configuration URL on every request, so
this is a cache in front of the identity provider:

* Configured overrides win (`GATEWAY_OPENID_KEYS`: `{openid-config-url-or-tenant-id: JWKS}`). They serve
  air-gapped deployments and tests, and are never refreshed. A JWKS override may carry an `"issuer"` member
  standing in for the configuration's issuer.
* Otherwise the configuration and its `jwks_uri` are fetched (the cold path) and kept for an hour. A token
  naming a `kid` the cached set lacks triggers one early refresh, for key rollover, but at most every five
  minutes, so tokens with made-up `kid`s cannot make the gateway hammer the provider. Only one fetch per URL
  runs at a time; a failed fetch keeps the previous keys and is retried after thirty seconds.

Only signing algorithms the gateway accepts are kept: RS256/RS384/RS512/PS256 for RSA keys of at least
2048 bits, ES256 for P-256 keys, HS256 for symmetric keys of at least 32 bytes (RFC 7518 §3.2); never `none`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # httpx and PyJWT (with cryptography) load with the first key, not with the gateway
    import httpx

logger = logging.getLogger(__name__)

#: The algorithms each JWK key type may verify.
ALGORITHMS_BY_KEY_TYPE: Mapping[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256"}),
    "EC": frozenset({"ES256"}),
    "oct": frozenset({"HS256"}),
}
SUPPORTED_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())
MIN_RSA_BITS = 2048
MIN_SECRET_BYTES = 32

CACHE_SECONDS = 3600.0
#: The shortest time between two fetches of one URL triggered by an unknown `kid`.
REFRESH_SECONDS = 300.0
#: How long a failed fetch is remembered before the next attempt.
RETRY_SECONDS = 30.0


class SigningKeysUnavailable(Exception):
    """The keys of a configuration URL could not be fetched, and none are cached."""


@dataclass(frozen=True)
class SigningKey:
    """One verification key and the algorithms it may verify."""

    #: A `cryptography` public key, or the bytes of a symmetric secret.
    key: Any
    algorithms: frozenset[str]
    key_id: str | None = None

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        """A key from a JWK; ValueError for key types, sizes or uses the gateway does not verify with."""
        kty = jwk.get("kty")
        allowed = ALGORITHMS_BY_KEY_TYPE.get(str(kty))
        if allowed is None:
            raise ValueError(f"unsupported key type {kty!r}")
        if jwk.get("use", "sig") != "sig":
            raise ValueError(f"key use {jwk.get('use')!r} is not signing")
        if "alg" in jwk:
            allowed = allowed & {jwk["alg"]}
            if not allowed:
                raise ValueError(f"algorithm {jwk['alg']!r} is not accepted for {kty} keys")
        key_id = jwk.get("kid")
        from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

        if kty == "oct":
            return cls.symmetric(_from_jwk(HMACAlgorithm, jwk), key_id)
        key = _from_jwk(RSAAlgorithm if kty == "RSA" else ECAlgorithm, jwk)
        if hasattr(key, "public_key"):  # a JWK that (wrongly) carries the private part still verifies
            key = key.public_key()
        if kty == "RSA" and key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        if kty == "EC" and key.curve.name != "secp256r1":
            raise ValueError(f"EC curve {key.curve.name} is not accepted; use P-256")
        return cls(key, allowed, key_id)

    @classmethod
    def symmetric(cls, secret: bytes, key_id: str | None = None) -> SigningKey:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"symmetric key of {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required")
        return cls(secret, ALGORITHMS_BY_KEY_TYPE["oct"], key_id)

    def accepts(self, algorithm: str, key_id: str | None) -> bool:
        """Whether this key may verify a token with this `alg` and `kid` (keys without an id match any `kid`)."""
        return algorithm in self.algorithms and (key_id is None or self.key_id in (None, key_id))


def _from_jwk(algorithm: Any, jwk: Mapping[str, Any]) -> Any:
    from jwt.exceptions import PyJWTError

    try:
        return algorithm.from_jwk(dict(jwk))
    except (PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid {jwk.get('kty')} key: {exc}") from None


@dataclass(frozen=True)
class OpenIdKeys:
    """The usable keys of one OpenID configuration, and its issuer when known."""

    keys: tuple[SigningKey, ...]
    issuer: str | None = None

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], issuer: str | None = None) -> OpenIdKeys:
        """Keep the keys the gateway can verify with; skip (and log) the others, as providers publish both."""
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            raise ValueError("a JWKS needs a 'keys' list")
        keys: list[SigningKey] = []
        for entry in entries:
            try:
                keys.append(SigningKey.from_jwk(entry))
            except (ValueError, AttributeError) as exc:
                logger.info("Skipping JWKS key %s: %s.", entry.get("kid") if isinstance(entry, dict) else "?", exc)
        return cls(tuple(keys), issuer)

    def has(self, key_id: str) -> bool:
        return any(key.key_id == key_id for key in self.keys)


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


class SigningKeys:
    """Resolve OpenID configuration URLs to signing keys: overrides first, then a cached fetch."""

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Parsed now, so a bad GATEWAY_OPENID_KEYS fails at startup rather than on the first token.
        self._overrides = {name: _override(name, jwks) for name, jwks in (overrides or {}).items()}
        self._transport = transport
        self._timeout = timeout
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str, key_id: str | None = None, *, tenant_id: str | None = None) -> OpenIdKeys:
        """The keys of the configuration at `url` (or the override for `url` or `tenant_id`)."""
        override = self._overrides.get(url) or (self._overrides.get(tenant_id) if tenant_id else None)
        if override is not None:
            return override
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


def _override(name: str, jwks: Mapping[str, Any]) -> OpenIdKeys:
    issuer = jwks.get("issuer")
    try:
        return OpenIdKeys.from_jwks(jwks, issuer if isinstance(issuer, str) else None)
    except ValueError as exc:
        raise ValueError(f"Signing keys configured for {name!r}: {exc}.") from None


async def _get_json(client: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return document
