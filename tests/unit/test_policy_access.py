"""Access-control statements (check-header, ip-filter, cors, validate-jwt, validate-azure-ad-token) and the
signing-key cache, loaded from policy XML and run against a request context; no test touches the network."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from policies.context import Context
from policies.document import Scope, load_document
from policies.errors import PolicyError, PolicyLoadError
from policies.jwks import StaticSigningKeys
from policies.statement import Loader, Statement
from policies.statements.cors import Cors
from tests.policy_helpers import FakeServices, make_context

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_APP = "11111111-2222-3333-4444-555555555555"
BACKEND_APP = "99999999-8888-7777-6666-555555555555"
ISSUER = "https://issuer.example/"
AUDIENCE = "api://gateway"
OPENID_URL = "https://issuer.example/.well-known/openid-configuration"
JWKS_URL = "https://issuer.example/keys"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SECRET = secrets.token_bytes(64)
NAMED_VALUES = {"jwt-secret": base64.b64encode(SECRET).decode(), "tenant": TENANT, "client-app": CLIENT_APP}


def jwk(key: rsa.RSAPrivateKey = RSA_KEY, kid: str = "k1", **extra: Any) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig", **extra}


def load(fragment: str, named_values: dict[str, str] | None = None, section: str = "inbound") -> Statement:
    """The single statement of `fragment`, loaded from a whole document at API scope."""
    xml = f"<policies>\n<{section}>\n{fragment}\n</{section}>\n</policies>"
    document = load_document(xml, Scope("api", "openai"), Loader(named_values=named_values or NAMED_VALUES))
    (statement,) = document.sections[section]
    return statement  # type: ignore[return-value]


def load_error(fragment: str) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        load(fragment)
    return caught.value


def line_of(fragment: str, element: str) -> int:
    """The document line where `element` first starts; `load` puts the fragment at line 3."""
    return 3 + fragment[: fragment.index(f"<{element}")].count("\n")


def context(
    headers: list[tuple[str, str]] | None = None,
    *,
    ip: str = "10.1.2.3",
    method: str = "POST",
    keys: StaticSigningKeys | None = None,
) -> Context:
    services = FakeServices()
    services.signing_keys = keys or StaticSigningKeys({OPENID_URL: {"keys": [jwk()]}, TENANT: {"keys": [jwk()]}})
    built = make_context(services, headers=headers or [], ip=ip)
    built.Request.Method = method
    return built


async def refusal(statement: Statement, ctx: Context) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        await statement.run(ctx)
    return caught.value


def body_message(error: PolicyError) -> str:
    return orjson.loads(error.response.body)["error"]["message"]


# check-header

CHECK_HEADER = (
    '<check-header name="x-client" failed-check-httpcode="401" failed-check-error-message="Unknown client" ignore-case="{case}">'
    "<value>Portal</value><value>batch</value></check-header>"
)


@pytest.mark.parametrize(
    ("ignore_case", "sent"),
    [("true", ["portal"]), ("true", ["BATCH"]), ("false", ["Portal"]), ("false", ["batch", "Portal"])],
)
async def test_check_header_passes_when_every_value_is_listed(ignore_case: str, sent: list[str]) -> None:
    ctx = context([("X-Client", value) for value in sent])
    await load(CHECK_HEADER.format(case=ignore_case)).run(ctx)
    assert ctx.LastError is None


async def test_check_header_refuses_missing_header_with_configured_status_and_message() -> None:
    error = await refusal(load(CHECK_HEADER.format(case="true")), context([("x-other", "portal")]))
    assert (error.response.status, error.reason, error.source) == (401, "HeaderNotFound", "check-header")
    assert body_message(error) == "Unknown client"
    assert "x-client" in error.message


@pytest.mark.parametrize(
    ("ignore_case", "sent"),
    [("false", ["portal"]), ("true", ["stranger"]), ("true", ["portal", "stranger"])],
)
async def test_check_header_refuses_value_not_listed(ignore_case: str, sent: list[str]) -> None:
    error = await refusal(load(CHECK_HEADER.format(case=ignore_case)), context([("x-client", value) for value in sent]))
    assert (error.response.status, error.reason) == (401, "HeaderValueNotAllowed")
    assert "stranger" not in error.message  # the rejected value may be a secret


async def test_check_header_without_values_checks_presence_only() -> None:
    statement = load('<check-header name="x-team" failed-check-httpcode="403" failed-check-error-message="No team" ignore-case="false" />')
    await statement.run(context([("x-team", "anything")]))
    error = await refusal(statement, context())
    assert (error.response.status, body_message(error)) == (403, "No team")


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m"', "'ignore-case' is required"),
        ('name="x" failed-check-httpcode="4011" failed-check-error-message="m" ignore-case="true"', "at most 599"),
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="maybe"', "true or false"),
    ],
)
def test_check_header_load_errors_name_element_and_line(attributes: str, problem: str) -> None:
    error = load_error(f"<check-header {attributes} />")
    assert (error.element, error.line) == ("check-header", 3)
    assert problem in str(error)


# ip-filter

ALLOW = """<ip-filter action="allow">
    <address>203.0.113.7</address>
    <address-range from="10.0.0.0" to="10.0.0.255" />
    <address-range from="2001:db8::" to="2001:db8::ffff" />
</ip-filter>"""


@pytest.mark.parametrize("ip", ["203.0.113.7", "10.0.0.0", "10.0.0.255", "::ffff:10.0.0.9", "2001:db8::1", "10.0.0.4:50123"])
async def test_ip_filter_allow_lets_listed_callers_in(ip: str) -> None:
    await load(ALLOW).run(context(ip=ip))


@pytest.mark.parametrize("ip", ["203.0.113.8", "10.0.1.0", "2001:db8::1:0", "::1"])
async def test_ip_filter_allow_refuses_unlisted_callers(ip: str) -> None:
    error = await refusal(load(ALLOW), context(ip=ip))
    assert (error.response.status, error.reason, body_message(error)) == (403, "CallerIpNotAllowed", "Forbidden")


async def test_ip_filter_forbid_refuses_listed_callers_only() -> None:
    statement = load('<ip-filter action="forbid"><address-range from="192.0.2.0" to="192.0.2.127" /></ip-filter>')
    await statement.run(context(ip="192.0.2.128"))
    error = await refusal(statement, context(ip="192.0.2.5"))
    assert (error.response.status, error.reason) == (403, "CallerIpBlocked")


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-forwarded-for"])
async def test_ip_filter_on_x_forwarded_for_matches_the_address_the_gateway_trusted(header: str) -> None:
    """The client writes the left of X-Forwarded-For; the gateway's client address (trusted hops) is the caller."""
    statement = load(ALLOW.replace('action="allow"', f'action="allow" header-name="{header}"'))
    spoofed = context([(header, "203.0.113.7, 198.51.100.1")], ip="198.51.100.1")
    assert (await refusal(statement, spoofed)).reason == "CallerIpNotAllowed"
    await statement.run(context([(header, "198.51.100.1, 203.0.113.7")], ip="203.0.113.7"))


@pytest.mark.parametrize(
    ("written", "allowed"),
    [("203.0.113.7, 10.9.9.9", True), ("[2001:db8::5]:443", True), ("198.51.100.1, 203.0.113.7", False)],
)
async def test_ip_filter_reads_another_header_as_written(written: str, allowed: bool) -> None:
    statement = load(ALLOW.replace('action="allow"', 'action="allow" header-name="X-Azure-ClientIP"'))
    ctx = context([("X-Azure-ClientIP", written)], ip="192.0.2.1")
    if allowed:
        await statement.run(ctx)
    else:
        assert (await refusal(statement, ctx)).reason == "CallerIpNotAllowed"


@pytest.mark.parametrize("ip", ["", "unknown", "10.0.0.1.5"])
async def test_ip_filter_refuses_unparsable_caller(ip: str) -> None:
    error = await refusal(load(ALLOW), context(ip=ip))
    assert (error.response.status, error.reason) == (403, "FailedToParseCallerIP")


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        ('<ip-filter action="allow">\n<address>10.0.0.300</address></ip-filter>', "address", "not an IPv4 or IPv6 address"),
        ('<ip-filter action="allow">\n<address-range from="10.0.0.9" to="10.0.0.1" /></ip-filter>', "address-range", "empty"),
        ('<ip-filter action="allow">\n<address-range from="10.0.0.1" to="2001:db8::1" /></ip-filter>', "address-range", "mixes"),
        ('<ip-filter action="allow">\n<address>@(context.Request.IpAddress)</address></ip-filter>', "address", "expression"),
        ('<ip-filter action="allow">\n<subnet>10.0.0.0/8</subnet></ip-filter>', "subnet", "Unexpected element"),
        ('<ip-filter action="allow" />', "ip-filter", "at least one"),
        ('<ip-filter action="deny"><address>10.0.0.1</address></ip-filter>', "ip-filter", "allow, forbid"),
    ],
)
def test_ip_filter_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)


# cors

CORS = """<cors allow-credentials="true" terminate-unmatched-request="{terminate}">
    <allowed-origins><origin>https://chat.example.com:443/</origin><origin>http://localhost:8080</origin></allowed-origins>
    <allowed-methods preflight-result-max-age="300"><method>post</method><method>GET</method></allowed-methods>
    <allowed-headers><header>Content-Type</header><header>api-key</header></allowed-headers>
    <expose-headers><header>x-ratelimit-remaining-tokens</header></expose-headers>
</cors>"""


@pytest.mark.parametrize("origin", ["https://chat.example.com", "http://localhost:8080"])
async def test_cors_adds_grants_for_allowed_origin(origin: str) -> None:
    ctx = context([("Origin", origin)])
    await load(CORS.format(terminate="true")).run(ctx)
    assert ctx.response_headers == [
        ("Access-Control-Allow-Origin", origin),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "x-ratelimit-remaining-tokens"),
    ]


async def test_cors_wildcard_origin_grants_star_without_vary() -> None:
    statement = load("<cors><allowed-origins><origin>*</origin></allowed-origins></cors>")
    ctx = context([("Origin", "https://anywhere.example")])
    await statement.run(ctx)
    assert ctx.response_headers == [("Access-Control-Allow-Origin", "*")]


async def test_cors_ignores_requests_without_origin() -> None:
    ctx = context()
    await load(CORS.format(terminate="true")).run(ctx)
    assert ctx.response_headers == []


@pytest.mark.parametrize(
    ("origin", "method", "reason"),
    [
        ("https://evil.example", "POST", "CorsOriginNotAllowed"),
        ("http://chat.example.com", "POST", "CorsOriginNotAllowed"),
        ("null", "POST", "CorsOriginNotAllowed"),
        ("https://chat.example.com", "DELETE", "CorsMethodNotAllowed"),
    ],
)
async def test_cors_refuses_unmatched_request_when_terminating(origin: str, method: str, reason: str) -> None:
    ctx = context([("Origin", origin)], method=method)
    error = await refusal(load(CORS.format(terminate="true")), ctx)
    assert (error.response.status, error.reason, error.source) == (403, reason, "cors")
    assert ctx.response_headers == []


async def test_cors_lets_unmatched_request_through_without_grants_when_not_terminating() -> None:
    ctx = context([("Origin", "https://evil.example")])
    await load(CORS.format(terminate="false")).run(ctx)
    assert ctx.response_headers == []


async def test_cors_terminates_unmatched_requests_by_default() -> None:
    statement = load("<cors><allowed-origins><origin>https://a.example</origin></allowed-origins></cors>")
    assert (await refusal(statement, context([("Origin", "https://b.example")]))).reason == "CorsOriginNotAllowed"


def test_cors_preflight_grants_requested_method_and_headers() -> None:
    statement = load(CORS.format(terminate="true"))
    assert isinstance(statement, Cors)
    preflight = [
        ("Origin", "https://chat.example.com"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type, API-Key"),
    ]
    response = statement.preflight(context(preflight, method="OPTIONS"))
    assert (response.status, response.body) == (200, b"")
    assert dict(response.headers) == {
        "Access-Control-Allow-Origin": "https://chat.example.com",
        "Vary": "Origin",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "content-type, api-key",
        "Access-Control-Max-Age": "300",
    }


@pytest.mark.parametrize(
    "preflight",
    [
        [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
        [("Origin", "https://chat.example.com"), ("Access-Control-Request-Method", "PUT")],
        [("Origin", "https://chat.example.com"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "x-secret")],
        [("Origin", "https://chat.example.com")],
        [("Access-Control-Request-Method", "POST")],
    ],
)
def test_cors_preflight_refuses_what_is_not_allowed(preflight: list[tuple[str, str]]) -> None:
    statement = load(CORS.format(terminate="true"))
    assert isinstance(statement, Cors)
    response = statement.preflight(context(preflight, method="OPTIONS"))
    assert response.status == 403
    assert not any(name.startswith("Access-Control-") for name, _ in response.headers)


def test_cors_preflight_defaults_to_get_and_post_and_wildcard_headers() -> None:
    statement = load("<cors><allowed-origins><origin>*</origin></allowed-origins><allowed-headers><header>*</header></allowed-headers></cors>")
    assert isinstance(statement, Cors)
    asked = [("Origin", "https://a.example"), ("Access-Control-Request-Headers", "x-anything")]
    allowed = statement.preflight(context([*asked, ("Access-Control-Request-Method", "GET")], method="OPTIONS"))
    refused = statement.preflight(context([*asked, ("Access-Control-Request-Method", "PATCH")], method="OPTIONS"))
    assert (allowed.status, refused.status) == (200, 403)
    assert ("Access-Control-Allow-Headers", "x-anything") in allowed.headers


@pytest.mark.parametrize(
    ("fragment", "element", "problem"),
    [
        ('<cors allow-credentials="true">\n<allowed-origins><origin>*</origin></allowed-origins></cors>', "cors", "cannot be combined"),
        ("<cors>\n<allowed-methods><method>GET</method></allowed-methods></cors>", "cors", "Add <allowed-origins>"),
        ("<cors><allowed-origins>\n<origin>chat.example.com</origin></allowed-origins></cors>", "origin", "not an origin"),
        ("<cors><allowed-origins>\n<origin>@(context.Api.Id)</origin></allowed-origins></cors>", "origin", "expressions"),
        ("<cors><allowed-origins>\n<origin>*</origin><origin>https://a.example</origin></allowed-origins></cors>", "origin", "single"),
        ("<cors><allowed-origins><origin>*</origin></allowed-origins>\n<allowed-headers /></cors>", "allowed-headers", "at least one"),
        ("<cors><allowed-origins><origin>*</origin></allowed-origins>\n<allow-headers /></cors>", "allow-headers", "Unexpected element"),
    ],
)
def test_cors_load_errors_name_element_and_line(fragment: str, element: str, problem: str) -> None:
    error = load_error(fragment)
    assert (error.element, error.line) == (element, line_of(fragment, element))
    assert problem in str(error)


# validate-jwt


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for ISSUER/AUDIENCE; a change to None removes that claim.

    Valid for a day: parametrised tokens are made at collection, and the whole suite may run longer than minutes."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 86_400, "roles": ["reader", "writer"]}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey = RSA_KEY, kid: str | None = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def hs256(payload: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


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


# validate-azure-ad-token

AAD = """<validate-azure-ad-token tenant-id="{{tenant}}" output-token-variable-name="jwt">
    <client-application-ids><application-id>{{client-app}}</application-id></client-application-ids>
    <backend-application-ids><application-id>99999999-8888-7777-6666-555555555555</application-id></backend-application-ids>
    <required-claims><claim name="roles"><value>OpenAI.User</value></claim></required-claims>
</validate-azure-ad-token>"""


def entra(**changes: Any) -> dict[str, Any]:
    """A v2.0 access token's claims for TENANT, CLIENT_APP and BACKEND_APP."""
    defaults = {
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "aud": BACKEND_APP,
        "azp": CLIENT_APP,
        "tid": TENANT,
        "roles": ["OpenAI.User"],
    }
    return claims(**{**defaults, **changes})


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


@pytest.mark.parametrize(
    "fragment",
    [
        '<check-header name="x" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="true" />',
        '<ip-filter action="allow"><address>10.0.0.1</address></ip-filter>',
        "<cors><allowed-origins><origin>*</origin></allowed-origins></cors>",
        '<validate-jwt header-name="a"><openid-config url="https://x/c" /></validate-jwt>',
        '<validate-azure-ad-token tenant-id="t"><client-application-ids><application-id>x</application-id></client-application-ids></validate-azure-ad-token>',
    ],
)
def test_access_statements_load_only_in_inbound(fragment: str) -> None:
    load(fragment)
    with pytest.raises(PolicyLoadError, match="Not allowed in <outbound>"):
        load(fragment, section="outbound")


# configured signing keys


async def test_signing_keys_skip_keys_the_gateway_cannot_verify_with() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    keys = StaticSigningKeys(
        {
            OPENID_URL: {
                "keys": [
                    jwk(kid="good"),
                    jwk(weak, kid="weak"),
                    jwk(kid="enc", use="enc"),
                    jwk(kid="hs", alg="HS256"),
                    {"kty": "oct", "k": "c2hvcnQ", "kid": "short"},
                    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
                ]
            }
        }
    )
    resolved = await keys.get(OPENID_URL)
    assert [key.key_id for key in resolved.keys] == ["good"]


def test_signing_keys_refuse_malformed_override_at_startup() -> None:
    with pytest.raises(ValueError, match="tenant-a"):
        StaticSigningKeys({"tenant-a": {"kty": "RSA"}})
