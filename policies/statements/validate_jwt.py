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
from policies.statement import Attr, Loader, register
from policies.statements._jwt import (
    OUTCOME_ATTRIBUTES,
    SOURCE_ATTRIBUTES,
    RequiredClaim,
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


@register
class ValidateJwt(TokenValidation):
    element = "validate-jwt"
    attributes = (
        *SOURCE_ATTRIBUTES,
        *OUTCOME_ATTRIBUTES,
        Attr("require-expiration-time", kind=bool, expressions=False, default=True),
        Attr("require-scheme", expressions=False),
        Attr("require-signed-tokens", kind=bool, expressions=False, default=True),
        Attr("clock-skew", kind=int, expressions=False, minimum=0, default=0),
    )

    def __init__(
        self,
        source: TokenSource,
        values: dict[str, Value | None],
        claims: tuple[RequiredClaim, ...],
        openid_urls: tuple[str, ...],
        keys: tuple[SigningKey, ...],
        audiences: tuple[Value, ...],
        issuers: tuple[Value, ...],
    ) -> None:
        super().__init__(source, values, claims)
        self.require_expiration: bool = values["require-expiration-time"].constant  # type: ignore[union-attr]
        self.clock_skew: int = values["clock-skew"].constant  # type: ignore[union-attr]
        self.openid_urls = openid_urls
        self.keys = keys
        self.audiences = audiences
        self.issuers = issuers

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ValidateJwt:
        values = loader.attributes(element, cls.attributes)
        if not values["require-signed-tokens"].constant:  # type: ignore[union-attr]
            raise loader.fail(element, 'Unsigned tokens are never accepted; remove require-signed-tokens="false".')
        scheme = values["require-scheme"].constant if values["require-scheme"] is not None else None
        source = TokenSource.load(element, loader, values, default_header=None, scheme=scheme)
        openid_urls: list[str] = []
        keys: list[SigningKey] = []
        audiences: tuple[Value, ...] = ()
        issuers: tuple[Value, ...] = ()
        claims: tuple[RequiredClaim, ...] = ()
        for child in loader.children(element, _CHILDREN):
            if child.tag == "openid-config":
                openid_urls.append(_load_openid_url(child, loader))
            elif child.tag == "issuer-signing-keys":
                loader.attributes(child, ())
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
    url: str = loader.attributes(element, (Attr("url", required=True, expressions=False),))["url"].constant  # type: ignore[union-attr]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise loader.fail(element, f"url {url!r} is not an http(s) URL.")
    return url


def _load_key(element: PolicyElement, loader: Loader) -> SigningKey:
    """`<key>base64 secret</key>` or `<key n="…" e="…" />`, with an optional `id` matched against `kid`."""
    specs = (Attr("id", expressions=False), Attr("n", expressions=False), Attr("e", expressions=False))
    values = {name: value.constant if value is not None else None for name, value in loader.attributes(element, specs).items()}
    loader.children(element, ())
    text = loader.text(element)
    if not text.is_constant:
        raise loader.fail(element, "A key must be literal text or a named value, not an expression.")
    secret = str(text.constant)
    try:
        if values["n"] is None and values["e"] is None:
            return SigningKey.symmetric(_base64(secret), values["id"])
        if values["n"] is None or values["e"] is None or secret:
            raise ValueError("an RSA key needs both 'n' and 'e', and no text")
        return SigningKey.from_jwk({"kty": "RSA", "n": values["n"], "e": values["e"], "kid": values["id"]})
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
