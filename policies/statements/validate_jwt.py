"""`<validate-jwt>`: refuse requests without a valid JSON web token from the configured issuer.

    <validate-jwt header-name="Authorization" require-scheme="Bearer" output-token-variable-name="jwt"
                  failed-validation-httpcode="401" failed-validation-error-message="Unauthorized">
        <openid-config url="https://login.example.com/.well-known/openid-configuration" />
        <issuer-signing-keys>
            <key>{{jwt-signing-key}}</key>                 <!-- base64 secret, HS256 -->
            <key id="2024" n="…modulus…" e="AQAB" />       <!-- RSA public key, base64url -->
        </issuer-signing-keys>
        <audiences><audience>api://gateway</audience></audiences>
        <issuers><issuer>https://login.example.com/</issuer></issuers>
        <required-claims>
            <claim name="roles" match="any"><value>reader</value><value>writer</value></claim>
        </required-claims>
    </validate-jwt>

Exactly one of `header-name`, `query-parameter-name` and `token-value` says where the token is. Keys come
from `<issuer-signing-keys>` and from each `<openid-config>` (through `context.services.signing_keys`).
Without `<issuers>`, the issuer each OpenID configuration declares is required (a multi-tenant template
such as `{tenantid}` checks nothing). On success `output-token-variable-name` receives the claims as a dict.
Refusals and their reasons are described in `policies.statements._jwt`.

Not supported, and refused at load: unsigned tokens (`require-signed-tokens="false"`), `decryption-keys`
(encrypted tokens), keys by `certificate-id`, and expressions in key material, `require-scheme`,
`require-expiration-time` and `clock-skew`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

from policies.context import Context
from policies.expressions import Value
from policies.jwks import SigningKey
from policies.statement import Loader, Settings, attr, register
from policies.statements._jwt import (
    RequiredClaim,
    TokenSettings,
    TokenSource,
    TokenValidation,
    decode,
    evaluate_all,
    load_claims,
    load_values,
    published_keys,
    token_header,
)
from policies.xml import PolicyElement

_CHILDREN = ("openid-config", "issuer-signing-keys", "audiences", "issuers", "required-claims")


class JwtSettings(TokenSettings):
    require_expiration_time: bool = attr(default=True)
    require_scheme: str | None = attr()
    require_signed_tokens: bool = attr(default=True)
    clock_skew: int = attr(minimum=0, default=0)


class OpenIdConfigSettings(Settings):
    url: str = attr()


class KeySettings(Settings):
    id: str | None = attr()
    n: str | None = attr()
    e: str | None = attr()


@register
class ValidateJwt(TokenValidation):
    element = "validate-jwt"

    def __init__(
        self,
        source: TokenSource,
        values: JwtSettings,
        claims: tuple[RequiredClaim, ...],
        openid_urls: tuple[str, ...],
        keys: tuple[SigningKey, ...],
        audiences: tuple[Value, ...],
        issuers: tuple[Value, ...],
    ) -> None:
        super().__init__(source, values, claims)
        self.require_expiration = values.require_expiration_time
        self.clock_skew = values.clock_skew
        self.openid_urls = openid_urls
        self.keys = keys
        self.audiences = audiences
        self.issuers = issuers

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ValidateJwt:
        values = loader.settings(element, JwtSettings)
        if not values.require_signed_tokens:
            raise loader.fail(element, 'Unsigned tokens are never accepted; remove require-signed-tokens="false".')
        source = TokenSource.load(element, loader, values, default_header=None, scheme=values.require_scheme)
        openid_urls: list[str] = []
        keys: list[SigningKey] = []
        audiences: tuple[Value, ...] = ()
        issuers: tuple[Value, ...] = ()
        claims: tuple[RequiredClaim, ...] = ()
        for child in loader.children(element, _CHILDREN):
            if child.tag == "openid-config":
                openid_urls.append(_load_openid_url(child, loader))
            elif child.tag == "issuer-signing-keys":
                loader.no_attributes(child)
                keys.extend(_load_key(key, loader) for key in loader.children(child, ("key",)))
            elif child.tag == "audiences":
                audiences = load_values(child, loader, "audience")
            elif child.tag == "issuers":
                issuers = load_values(child, loader, "issuer")
            else:
                claims = load_claims(child, loader)
        if not openid_urls and not keys:
            raise loader.fail(element, "Add <openid-config> or <issuer-signing-keys>: without keys no token can be validated.")
        return cls(source, values, claims, tuple(openid_urls), tuple(keys), audiences, issuers)

    async def verify(self, token: str, context: Context) -> dict[str, Any]:
        algorithm, key_id = token_header(token)
        keys = list(self.keys)
        issuers = evaluate_all(self.issuers, context)
        for url in self.openid_urls:
            published = await published_keys(context, url, key_id)
            keys.extend(published.keys)
            if not self.issuers and published.issuer and "{" not in published.issuer:
                issuers.append(published.issuer)
        return decode(
            token,
            algorithm,
            key_id,
            keys,
            audiences=evaluate_all(self.audiences, context),
            issuers=issuers,
            leeway=self.clock_skew,
            require_expiration=self.require_expiration,
        )


def _load_openid_url(element: PolicyElement, loader: Loader) -> str:
    loader.children(element, ())
    url = loader.settings(element, OpenIdConfigSettings).url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise loader.fail(element, f"url {url!r} is not an http(s) URL.")
    return url


def _load_key(element: PolicyElement, loader: Loader) -> SigningKey:
    """`<key>base64 secret</key>` or `<key n="…" e="…" />`, with an optional `id` matched against `kid`."""
    key = loader.settings(element, KeySettings)
    loader.children(element, ())
    text = loader.text(element)
    if not text.is_constant:
        raise loader.fail(element, "A key must be literal text or a named value, not an expression.")
    secret = str(text.constant)
    try:
        if key.n is None and key.e is None:
            return SigningKey.symmetric(_base64(secret), key.id)
        if key.n is None or key.e is None or secret:
            raise ValueError("an RSA key needs both 'n' and 'e', and no text")
        return SigningKey.from_jwk({"kty": "RSA", "n": key.n, "e": key.e, "kid": key.id})
    except ValueError as exc:
        raise loader.fail(element, f"Invalid signing key: {exc}.") from None


def _base64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional: both are seen in key material."""
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    if not compact:
        raise ValueError("the key is empty")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        raise ValueError("the key is not base64") from None
