"""What several statement test files share: access-control statements loaded from a document and run against a
request context (keys, tokens and claims for validate-jwt and validate-azure-ad-token), and a `send-request`."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from policies.context import Context
from policies.document import Scope, load_document
from policies.errors import PolicyError, PolicyLoadError
from policies.jwks import StaticSigningKeys
from policies.statement import Loader, Statement
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


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for ISSUER/AUDIENCE; a change to None removes that claim.

    Valid for a day: parametrised tokens are made at collection, and the whole suite may run longer than minutes."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 86_400, "roles": ["reader", "writer"]}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey = RSA_KEY, kid: str | None = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


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


#: A `send-request` with every kind of child, storing its answer in `r`; `mode` and `ignore` are formatted in.
SEND = """<send-request mode="{mode}" response-variable-name="r" timeout="5" ignore-error="{ignore}">
    <set-url>@("https://api.example.com/check?id=" + context.Subscription.Id)</set-url>
    <set-method>POST</set-method>
    <set-header name="x-team" exists-action="override"><value>@(context.Subscription.Name)</value></set-header>
    <set-header name="content-type" exists-action="skip"><value>text/plain</value></set-header>
    <set-body>@("ask " + context.Request.Headers.GetValueOrDefault("x-user-id", ""))</set-body>
    <authentication-managed-identity resource="api://checker" />
</send-request>"""
