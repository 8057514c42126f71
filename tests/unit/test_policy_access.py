"""What the access-control statements share (each loads only in inbound) and the configured signing keys they
verify with; each statement's own tests are in tests/unit/statements/ (test_check_header.py, test_ip_filter.py,
test_cors.py, test_validate_jwt.py, test_validate_azure_ad_token.py). No test touches the network."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from policies.errors import PolicyLoadError
from policies.jwks import StaticSigningKeys
from tests.unit.statements.helpers import OPENID_URL, jwk, load


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
