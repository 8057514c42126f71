"""Signing keys for token validation: the keys of an OpenID configuration, as validate-jwt and
validate-azure-ad-token use them, and where they come from (`SigningKeys`).

Configured keys (`GATEWAY_OPENID_KEYS`: `{openid-config-url-or-tenant-id: JWKS}`) serve air-gapped deployments
and tests; a JWKS there may carry an `"issuer"` member standing in for the configuration's issuer. Fetching and
caching the others is the gateway's job (gateway/backends/openid_keys.py).

Only signing algorithms the gateway accepts are kept: RS256/RS384/RS512/PS256 for RSA keys of at least
2048 bits, ES256 for P-256 keys, HS256 for symmetric keys of at least 32 bytes (RFC 7518 §3.2); never `none`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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
        from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm  # PyJWT and cryptography: with the first key

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


class SigningKeys(Protocol):
    """Where validate-jwt and validate-azure-ad-token get an OpenID configuration's keys (the gateway caches and
    fetches them: gateway/backends/openid_keys.py; policies never touch the network)."""

    async def get(self, url: str, key_id: str | None = None, *, tenant_id: str | None = None) -> OpenIdKeys:
        """The keys of the configuration at `url` (or configured for `url` or `tenant_id`); raises
        `SigningKeysUnavailable` when there are none."""


class StaticSigningKeys:
    """`SigningKeys` from configuration only (`GATEWAY_OPENID_KEYS`: {openid-config-url-or-tenant-id: JWKS})."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.keys = parse_overrides(overrides or {})

    async def get(self, url: str, key_id: str | None = None, *, tenant_id: str | None = None) -> OpenIdKeys:
        found = self.find(url, tenant_id)
        if found is None:
            raise SigningKeysUnavailable(f"No signing keys are configured for {url}.")
        return found

    def find(self, url: str, tenant_id: str | None) -> OpenIdKeys | None:
        return self.keys.get(url) or (self.keys.get(tenant_id) if tenant_id else None)


def parse_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, OpenIdKeys]:
    """Configured JWKS, parsed now, so a bad GATEWAY_OPENID_KEYS fails at startup rather than on the first token."""
    return {name: _override(name, jwks) for name, jwks in overrides.items()}


def _override(name: str, jwks: Mapping[str, Any]) -> OpenIdKeys:
    issuer = jwks.get("issuer")
    try:
        return OpenIdKeys.from_jwks(jwks, issuer if isinstance(issuer, str) else None)
    except ValueError as exc:
        raise ValueError(f"Signing keys configured for {name!r}: {exc}.") from None
