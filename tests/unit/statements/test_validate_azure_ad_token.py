"""`validate-azure-ad-token`: Microsoft Entra tokens of one tenant, from allowed client applications."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from jwt.algorithms import RSAAlgorithm

from policies.jwks import StaticSigningKeys
from tests.unit.statements.helpers import (
    AAD,
    BACKEND_APP,
    CLIENT_APP,
    RSA_KEY,
    TENANT,
    bearer,
    context,
    entra,
    jwk,
    line_of,
    load,
    load_error,
    refusal,
    rs256,
)


@pytest.mark.parametrize(
    "payload",
    [
        entra(),
        entra(iss=f"https://sts.windows.net/{TENANT}/", azp=None, appid=CLIENT_APP, aud=f"api://{BACKEND_APP}"),
    ],
    ids=["v2", "v1"],
)
async def test_validate_azure_ad_token_accepts_tenant_token_from_allowed_client(payload: dict[str, Any]) -> None:
    ctx = context(bearer(rs256(payload)))
    await load(AAD).run(ctx)
    assert ctx.Variables["jwt"]["tid"] == TENANT


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (entra(azp="00000000-0000-0000-0000-000000000000"), "TokenClaimValueNotAllowed"),
        (entra(azp=None), "TokenClaimNotFound"),
        (entra(iss="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"), "TokenIssuerNotAllowed"),
        (entra(aud="https://management.azure.com"), "TokenAudienceNotAllowed"),
        (entra(exp=int(time.time()) - 5), "TokenExpired"),
        (entra(roles=["Reader"]), "TokenClaimValueNotAllowed"),
    ],
    ids=["client-app", "no-client-app", "other-tenant", "audience", "expired", "role"],
)
async def test_validate_azure_ad_token_refuses_invalid_token(payload: dict[str, Any], reason: str) -> None:
    error = await refusal(load(AAD), context(bearer(rs256(payload))))
    assert (error.response.status, error.reason, error.source) == (401, reason, "validate-azure-ad-token")
    assert ("WWW-Authenticate", 'Bearer error="invalid_token"') in error.response.headers


async def test_validate_azure_ad_token_refuses_client_app_with_claim_in_message() -> None:
    error = await refusal(load(AAD), context(bearer(rs256(entra(azp="intruder")))))
    assert error.message == "Claim azp value of intruder is not allowed."


async def test_validate_azure_ad_token_refuses_hs256_token_signed_with_public_key_material() -> None:
    public = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    forged = jwt.encode(entra(), base64.urlsafe_b64decode(public["n"] + "=="), algorithm="HS256", headers={"kid": "k1"})
    assert (await refusal(load(AAD), context(bearer(forged)))).reason == "TokenSignatureKeyNotFound"


async def test_validate_azure_ad_token_matches_domain_tenant_through_configuration_issuer() -> None:
    fragment = AAD.replace("{{tenant}}", "contoso.onmicrosoft.com")
    keys = StaticSigningKeys({"contoso.onmicrosoft.com": {"keys": [jwk()], "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0"}})
    await load(fragment).run(context(bearer(rs256(entra())), keys=keys))


AUDIENCE_ONLY = """<validate-azure-ad-token tenant-id="{{tenant}}">
    <audiences><audience>api://gateway</audience></audiences>
</validate-azure-ad-token>"""


async def test_validate_azure_ad_token_with_audiences_only_accepts_any_client_of_the_tenant() -> None:
    statement = load(AUDIENCE_ONLY)
    other_client = entra(aud="api://gateway", azp="33333333-3333-3333-3333-333333333333")
    ctx = context(bearer(rs256(other_client)))
    await statement.run(ctx)
    assert ctx.LastError is None
    error = await refusal(statement, context(bearer(rs256(entra(aud="api://elsewhere")))))
    assert (error.response.status, error.reason) == (401, "TokenAudienceNotAllowed")


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        (
            '<validate-azure-ad-token tenant-id="{{tenant}}">\n<required-claims /></validate-azure-ad-token>',
            "validate-azure-ad-token",
            "client-application-ids",
        ),
        (
            '<validate-azure-ad-token tenant-id="{{tenant}}"><client-application-ids>\n</client-application-ids></validate-azure-ad-token>',
            "client-application-ids",
            "at least one",
        ),
        (
            '<validate-azure-ad-token tenant-id="a/b">\n<client-application-ids><application-id>x</application-id></client-application-ids></validate-azure-ad-token>',
            "validate-azure-ad-token",
            "not a tenant id",
        ),
        (
            '<validate-azure-ad-token tenant-id="organizations">\n<client-application-ids><application-id>x</application-id></client-application-ids></validate-azure-ad-token>',
            "validate-azure-ad-token",
            "multi-tenant",
        ),
        (
            "<validate-azure-ad-token>\n<client-application-ids><application-id>x</application-id></client-application-ids></validate-azure-ad-token>",
            "validate-azure-ad-token",
            "'tenant-id' is required",
        ),
        (
            '<validate-azure-ad-token tenant-id="t" header-name="a" token-value="b">\n<client-application-ids><application-id>x</application-id></client-application-ids></validate-azure-ad-token>',
            "validate-azure-ad-token",
            "only one",
        ),
    ],
)
def test_validate_azure_ad_token_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)
