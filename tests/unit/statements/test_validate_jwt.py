"""`validate-jwt`: tokens checked against configured or published keys, audiences, issuers and claims."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from policies.jwks import StaticSigningKeys
from tests.unit.statements.helpers import (
    AUDIENCE,
    ISSUER,
    OPENID_URL,
    OTHER_RSA_KEY,
    RSA_KEY,
    SECRET,
    bearer,
    body_message,
    claims,
    context,
    jwk,
    line_of,
    load,
    load_error,
    refusal,
    rs256,
)


def hs256(payload: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


HS_JWT = """<validate-jwt header-name="Authorization" require-scheme="Bearer" output-token-variable-name="jwt">
    <issuer-signing-keys><key>{{jwt-secret}}</key></issuer-signing-keys>
    <audiences><audience>api://gateway</audience></audiences>
    <issuers><issuer>https://issuer.example/</issuer></issuers>
</validate-jwt>"""


OPENID_JWT = """<validate-jwt header-name="Authorization" output-token-variable-name="jwt">
    <openid-config url="https://issuer.example/.well-known/openid-configuration" />
    <audiences><audience>api://gateway</audience></audiences>
    <issuers><issuer>https://issuer.example/</issuer></issuers>
    <required-claims>
        <claim name="roles" match="any"><value>writer</value><value>admin</value></claim>
        <claim name="scp" match="all" separator=" "><value>chat</value><value>embed</value></claim>
    </required-claims>
</validate-jwt>"""


def rsa_key_element(key: rsa.RSAPrivateKey = RSA_KEY) -> str:
    numbers = jwk(key)
    return f'<key id="k1" n="{numbers["n"]}" e="{numbers["e"]}" />'


async def test_validate_jwt_accepts_hs256_token_and_publishes_claims() -> None:
    ctx = context(bearer(hs256(claims())))
    await load(HS_JWT).run(ctx)
    assert ctx.Variables["jwt"]["sub"] == "alice"


async def test_validate_jwt_accepts_rs256_token_with_modulus_and_exponent_key() -> None:
    statement = load(HS_JWT.replace("<key>{{jwt-secret}}</key>", rsa_key_element()))
    ctx = context(bearer(rs256(claims())))
    await statement.run(ctx)
    assert ctx.Variables["jwt"]["aud"] == AUDIENCE


async def test_validate_jwt_accepts_token_signed_by_published_key_with_required_claims() -> None:
    ctx = context(bearer(rs256(claims(scp="embed chat read"))))
    await load(OPENID_JWT).run(ctx)
    assert ctx.Variables["jwt"]["scp"] == "embed chat read"


async def test_validate_jwt_accepts_es256_token_from_published_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    published = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "ec1"}
    ctx = context(
        bearer(jwt.encode(claims(scp="chat embed"), key, algorithm="ES256", headers={"kid": "ec1"})),
        keys=StaticSigningKeys({OPENID_URL: {"keys": [published]}}),
    )
    await load(OPENID_JWT).run(ctx)
    assert ctx.Variables["jwt"]["sub"] == "alice"


def _unsigned(payload: dict[str, Any]) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    return f"{header}.{body}."


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hs256(claims(exp=int(time.time()) - 60)), "TokenExpired"),
        (hs256(claims(aud="api://someone-else")), "TokenAudienceNotAllowed"),
        (hs256(claims(iss="https://evil.example/")), "TokenIssuerNotAllowed"),
        (hs256(claims(), secret=secrets.token_bytes(32)), "TokenSignatureInvalid"),
        (hs256(claims(exp=None)), "TokenClaimNotFound"),
        (hs256(claims(nbf=int(time.time()) + 86400)), "JwtInvalid"),
        (_unsigned(claims()), "JwtInvalid"),
        (jwt.encode(claims(), SECRET, algorithm="HS512"), "JwtInvalid"),
        (rs256(claims()), "TokenSignatureKeyNotFound"),
        ("not.a.jwt", "JwtInvalid"),
    ],
    ids=["expired", "audience", "issuer", "signature", "no-exp", "not-yet-valid", "alg-none", "hs512", "rsa-token-hs-key", "malformed"],
)
async def test_validate_jwt_refuses_invalid_token_with_401_challenge(token: str, reason: str) -> None:
    error = await refusal(load(HS_JWT), context(bearer(token)))
    assert (error.response.status, error.reason, error.source) == (401, reason, "validate-jwt")
    assert ("WWW-Authenticate", 'Bearer error="invalid_token"') in error.response.headers
    assert body_message(error) == error.message


@pytest.mark.parametrize(
    ("payload", "reason", "message"),
    [
        (claims(roles=["reader"], scp="chat embed"), "TokenClaimValueNotAllowed", "Claim roles value of reader is not allowed."),
        (claims(scp="chat"), "TokenClaimValueNotAllowed", "Claim scp value of chat is not allowed."),
        (claims(roles=None, scp=None), "TokenClaimNotFound", "JWT is missing the following claims: roles, scp."),
    ],
)
async def test_validate_jwt_refuses_required_claim_mismatch(payload: dict[str, Any], reason: str, message: str) -> None:
    error = await refusal(load(OPENID_JWT), context(bearer(rs256(payload))))
    assert (error.reason, error.message) == (reason, message)


async def test_validate_jwt_refuses_token_signed_by_unpublished_key() -> None:
    error = await refusal(load(OPENID_JWT), context(bearer(rs256(claims(scp="chat embed"), key=OTHER_RSA_KEY))))
    assert error.reason == "TokenSignatureInvalid"


async def test_validate_jwt_refuses_unknown_key_id() -> None:
    error = await refusal(load(OPENID_JWT), context(bearer(rs256(claims(scp="chat embed"), kid="rotated"))))
    assert error.reason == "TokenSignatureKeyNotFound"


@pytest.mark.parametrize(
    "headers",
    [[], [("Authorization", "")], [("Authorization", "Basic " + hs256(claims()))], [("Authorization", hs256(claims()))]],
    ids=["absent", "empty", "other-scheme", "no-scheme"],
)
async def test_validate_jwt_refuses_missing_token_with_bare_challenge(headers: list[tuple[str, str]]) -> None:
    error = await refusal(load(HS_JWT), context(headers))
    assert (error.response.status, error.reason, body_message(error)) == (401, "TokenNotPresent", "JWT not present.")
    assert ("WWW-Authenticate", "Bearer") in error.response.headers


async def test_validate_jwt_custom_status_and_message_hide_detail_from_client() -> None:
    fragment = HS_JWT.replace("<validate-jwt ", '<validate-jwt failed-validation-httpcode="403" failed-validation-error-message="Go away" ')
    error = await refusal(load(fragment), context(bearer(hs256(claims(aud="api://other")))))
    assert (error.response.status, body_message(error), error.reason) == (403, "Go away", "TokenAudienceNotAllowed")
    assert not any(name == "WWW-Authenticate" for name, _ in error.response.headers)


async def test_validate_jwt_clock_skew_tolerates_recent_expiry() -> None:
    token = hs256(claims(exp=int(time.time()) - 30))
    await load(HS_JWT.replace("<validate-jwt ", '<validate-jwt clock-skew="120" ')).run(context(bearer(token)))
    assert (await refusal(load(HS_JWT), context(bearer(token)))).reason == "TokenExpired"


async def test_validate_jwt_without_required_expiration_accepts_token_without_exp() -> None:
    statement = load(HS_JWT.replace("<validate-jwt ", '<validate-jwt require-expiration-time="false" '))
    await statement.run(context(bearer(hs256(claims(exp=None)))))


@pytest.mark.parametrize(
    ("source", "place"),
    [
        ('query-parameter-name="access_token"', "query"),
        ('token-value="@(context.Request.Headers.GetValueOrDefault(&quot;x-token&quot;, &quot;&quot;))"', "x-token"),
        ('header-name="x-token"', "x-token-bearer"),
    ],
)
async def test_validate_jwt_reads_token_from_configured_source(source: str, place: str) -> None:
    fragment = HS_JWT.replace('header-name="Authorization" require-scheme="Bearer"', source)
    token = hs256(claims())
    ctx = context({"x-token": [("x-token", token)], "x-token-bearer": [("x-token", f"Bearer {token}")]}.get(place, []))
    if place == "query":
        ctx.Request.Url.Query.append("access_token", token)
    await load(fragment).run(ctx)
    assert ctx.Variables["jwt"]["iss"] == ISSUER
    assert (await refusal(load(fragment), context(bearer(token)))).reason == "TokenNotPresent"


async def test_validate_jwt_requires_openid_issuer_when_no_issuers_are_listed() -> None:
    fragment = OPENID_JWT.replace("<issuers><issuer>https://issuer.example/</issuer></issuers>", "")
    keys = StaticSigningKeys({OPENID_URL: {"keys": [jwk()], "issuer": ISSUER}})
    await load(fragment).run(context(bearer(rs256(claims(scp="chat embed"))), keys=keys))
    error = await refusal(load(fragment), context(bearer(rs256(claims(scp="chat embed", iss="https://evil.example/"))), keys=keys))
    assert error.reason == "TokenIssuerNotAllowed"


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        (
            '<validate-jwt header-name="Authorization" require-signed-tokens="false">\n<issuer-signing-keys><key>{{jwt-secret}}</key></issuer-signing-keys></validate-jwt>',
            "validate-jwt",
            "Unsigned tokens",
        ),
        ('<validate-jwt header-name="Authorization">\n<audiences><audience>a</audience></audiences></validate-jwt>', "validate-jwt", "without keys"),
        ("<validate-jwt>\n<issuer-signing-keys><key>{{jwt-secret}}</key></issuer-signing-keys></validate-jwt>", "validate-jwt", "Set one of"),
        (
            '<validate-jwt header-name="a" query-parameter-name="b">\n<issuer-signing-keys><key>{{jwt-secret}}</key></issuer-signing-keys></validate-jwt>',
            "validate-jwt",
            "only one",
        ),
        ('<validate-jwt header-name="a"><issuer-signing-keys>\n<key>c2hvcnQ=</key></issuer-signing-keys></validate-jwt>', "key", "at least 32"),
        ('<validate-jwt header-name="a"><issuer-signing-keys>\n<key>not base64!</key></issuer-signing-keys></validate-jwt>', "key", "not base64"),
        ('<validate-jwt header-name="a"><issuer-signing-keys>\n<key n="AQAB" /></issuer-signing-keys></validate-jwt>', "key", "both 'n' and 'e'"),
        (
            '<validate-jwt header-name="a"><issuer-signing-keys>\n<key certificate-id="c" /></issuer-signing-keys></validate-jwt>',
            "key",
            "Unknown attribute 'certificate-id'",
        ),
        ('<validate-jwt header-name="a">\n<openid-config url="ftp://x/config" /></validate-jwt>', "openid-config", "not an http(s) URL"),
        ('<validate-jwt header-name="a">\n<decryption-keys /></validate-jwt>', "decryption-keys", "Unexpected element"),
        ('<validate-jwt header-name="a"><openid-config url="https://x/c" />\n<audiences /></validate-jwt>', "audiences", "at least one <audience>"),
        (
            '<validate-jwt header-name="a"><openid-config url="https://x/c" /><required-claims>\n<claim name="r" match="most" /></required-claims></validate-jwt>',
            "claim",
            "all, any",
        ),
    ],
)
def test_validate_jwt_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)


def test_validate_jwt_rejects_short_rsa_key_at_load() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    error = load_error(f'<validate-jwt header-name="a"><issuer-signing-keys>{rsa_key_element(weak)}</issuer-signing-keys></validate-jwt>')
    assert "at least 2048" in str(error)
