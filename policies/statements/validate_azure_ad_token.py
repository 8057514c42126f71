"""`<validate-azure-ad-token>`: refuse requests without a valid Microsoft Entra ID token from allowed apps.

    <validate-azure-ad-token tenant-id="{{tenant-id}}" output-token-variable-name="jwt">
        <client-application-ids><application-id>{{client-app-id}}</application-id></client-application-ids>
        <backend-application-ids><application-id>{{gateway-app-id}}</application-id></backend-application-ids>
        <audiences><audience>api://gateway</audience></audiences>
        <required-claims><claim name="roles"><value>OpenAI.User</value></claim></required-claims>
    </validate-azure-ad-token>

The token is read from `Authorization: Bearer …` unless `header-name`, `query-parameter-name` or
`token-value` says otherwise. It must be signed by a key of the tenant's OpenID configuration
(`https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration`, or the
`GATEWAY_OPENID_KEYS` override for that URL or tenant id), be issued by the tenant (v2.0
`https://login.microsoftonline.com/{tenant}/v2.0` or v1.0 `https://sts.windows.net/{tenant}/`; a tenant
given by domain name is matched through the configuration's issuer), carry an expiry, and name one of the
client application ids in `azp` (v2.0) or `appid` (v1.0). When `<audiences>` or `<backend-application-ids>`
are given, `aud` must be one of them (a backend application id also matches as `api://{id}`).
`<client-application-ids>` may be left out when `<audiences>` or `<backend-application-ids>` are given, as
APIM allows: then any client application of the tenant that obtained a token for those audiences passes.
With none of the three the document is refused, since any token the tenant issued would pass.
Multi-tenant authorities (`common`, `organizations`, `consumers`) are refused at load: they name no issuer.
Refusals and their reasons are described in `policies.statements._jwt`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from policies.context import Context
from policies.expressions import Value
from policies.statement import Loader, attr, register
from policies.statements._jwt import (
    RequiredClaim,
    TokenSettings,
    TokenSource,
    TokenValidation,
    claim_not_allowed,
    decode,
    evaluate_all,
    load_claims,
    load_values,
    missing_claims,
    published_keys,
    token_header,
)
from policies.xml import PolicyElement

_CHILDREN = ("client-application-ids", "backend-application-ids", "audiences", "required-claims")
#: A tenant id (GUID) or domain name; anything else cannot be part of the authority URL.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
#: Multi-tenant authorities: their issuer depends on each token's tenant, so there is no issuer to require.
_MULTI_TENANT = ("common", "organizations", "consumers")


class AzureAdTokenSettings(TokenSettings):
    tenant_id: str = attr()


@register
class ValidateAzureAdToken(TokenValidation):
    element = "validate-azure-ad-token"

    def __init__(
        self,
        tenant_id: str,
        source: TokenSource,
        values: AzureAdTokenSettings,
        claims: tuple[RequiredClaim, ...],
        client_ids: tuple[Value, ...],
        backend_ids: tuple[Value, ...],
        audiences: tuple[Value, ...],
    ) -> None:
        super().__init__(source, values, claims)
        self.tenant_id = tenant_id
        self.openid_url = f"https://login.microsoftonline.com/{tenant_id}/v2.0/.well-known/openid-configuration"
        self.client_ids = client_ids
        self.backend_ids = backend_ids
        self.audiences = audiences

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> ValidateAzureAdToken:
        values = loader.settings(element, AzureAdTokenSettings)
        tenant_id = values.tenant_id.strip()
        if not _TENANT.fullmatch(tenant_id):
            raise loader.fail(element, f"tenant-id {tenant_id!r} is not a tenant id or domain name.")
        if tenant_id.lower() in _MULTI_TENANT:
            raise loader.fail(element, f"tenant-id {tenant_id!r} is a multi-tenant authority; name the tenant whose tokens are accepted.")
        source = TokenSource.load(element, loader, values, default_header="Authorization", scheme="Bearer")
        client_ids: tuple[Value, ...] = ()
        backend_ids: tuple[Value, ...] = ()
        audiences: tuple[Value, ...] = ()
        claims: tuple[RequiredClaim, ...] = ()
        for child in loader.children(element, _CHILDREN):
            if child.tag == "client-application-ids":
                client_ids = load_values(child, loader, "application-id")
            elif child.tag == "backend-application-ids":
                backend_ids = load_values(child, loader, "application-id")
            elif child.tag == "audiences":
                audiences = load_values(child, loader, "audience")
            else:
                claims = load_claims(child, loader)
        if not client_ids and not audiences and not backend_ids:
            raise loader.fail(
                element,
                "Add <client-application-ids> with at least one <application-id>, or <audiences> (or "
                "<backend-application-ids>) that the token's aud must name: otherwise any token of the tenant passes.",
            )
        return cls(tenant_id, source, values, claims, client_ids, backend_ids, audiences)

    async def verify(self, token: str, context: Context) -> dict[str, Any]:
        algorithm, key_id = token_header(token)
        published = await published_keys(context, self.openid_url, key_id, self.tenant_id)
        tenants = {self.tenant_id.lower()}
        if published.issuer:
            tenants.add(_tenant_of(published.issuer))
        issuers = [issuer for tenant in sorted(tenants) for issuer in _issuers(tenant)]
        # A backend application is named in `aud` by its id (v2.0 tokens) or its `api://{id}` URI (v1.0 default).
        backends = evaluate_all(self.backend_ids, context)
        audiences = [*evaluate_all(self.audiences, context), *backends, *(f"api://{backend}" for backend in backends)]
        claims = decode(token, algorithm, key_id, published.keys, audiences=audiences, issuers=issuers)
        if not self.client_ids:
            return claims
        claim = "azp" if "azp" in claims else "appid"
        if claims.get(claim) is None:
            raise missing_claims(["azp"])
        if claims[claim] not in evaluate_all(self.client_ids, context):
            raise claim_not_allowed(claim, claims[claim])
        return claims


def _issuers(tenant: str) -> tuple[str, str]:
    return f"https://login.microsoftonline.com/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"


def _tenant_of(issuer: str) -> str:
    """The tenant id in an Entra issuer URL (`https://login.microsoftonline.com/{tid}/v2.0`)."""
    return urlsplit(issuer).path.strip("/").split("/")[0].lower()
