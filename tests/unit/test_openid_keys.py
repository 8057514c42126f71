"""OpenID signing keys fetched from identity providers: the gateway's cache in front of them, and token
validation statements using it (httpx.MockTransport stands in for the provider)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gateway.backends.openid_keys import OpenIdKeyCache
from policies.jwks import SigningKeysUnavailable
from tests.unit.statements.helpers import AAD, ISSUER, JWKS_URL, OPENID_URL, OTHER_RSA_KEY, TENANT, bearer, context, entra, jwk, load, refusal, rs256


async def test_validate_azure_ad_token_fetches_tenant_configuration_url() -> None:
    requested: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0", "jwks_uri": JWKS_URL})
        return httpx.Response(200, json={"keys": [jwk()]})

    keys = OpenIdKeyCache(transport=httpx.MockTransport(provider))
    await load(AAD).run(context(bearer(rs256(entra())), keys=keys))
    assert requested == [f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration", JWKS_URL]


async def test_validate_azure_ad_token_refuses_when_keys_cannot_be_fetched() -> None:
    keys = OpenIdKeyCache(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    error = await refusal(load(AAD), context(bearer(rs256(entra())), keys=keys))
    assert (error.response.status, error.reason) == (401, "TokenSignatureKeyNotFound")


class Provider:
    """A scripted identity provider behind httpx.MockTransport, counting configuration fetches."""

    def __init__(self, *keys: dict[str, Any], status: int = 200) -> None:
        self.keys = list(keys)
        self.status = status
        self.fetches = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)  # a real round trip suspends, letting concurrent callers pile up
        if self.status != 200:
            return httpx.Response(self.status)
        if str(request.url) == OPENID_URL:
            self.fetches += 1
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": JWKS_URL})
        return httpx.Response(200, json={"keys": self.keys})


def signing_keys(provider: Provider, clock: list[float]) -> OpenIdKeyCache:
    return OpenIdKeyCache(transport=httpx.MockTransport(provider), clock=lambda: clock[0])


async def test_signing_keys_fetch_once_and_cache_for_an_hour() -> None:
    provider, clock = Provider(jwk()), [0.0]
    keys = signing_keys(provider, clock)
    first = await keys.get(OPENID_URL, "k1")
    clock[0] = 3599.0
    assert await keys.get(OPENID_URL, "k1") is first
    assert (provider.fetches, first.issuer, [key.key_id for key in first.keys]) == (1, ISSUER, ["k1"])
    clock[0] = 3600.0
    await keys.get(OPENID_URL, "k1")
    assert provider.fetches == 2


async def test_signing_keys_refresh_once_for_unknown_kid_then_wait() -> None:
    provider, clock = Provider(jwk()), [0.0]
    keys = signing_keys(provider, clock)
    await keys.get(OPENID_URL, "k1")
    clock[0] = 301.0
    provider.keys.append(jwk(OTHER_RSA_KEY, kid="k2"))
    assert (await keys.get(OPENID_URL, "k2")).has("k2")
    await keys.get(OPENID_URL, "made-up")
    await keys.get(OPENID_URL, "made-up-too")
    assert provider.fetches == 2


async def test_signing_keys_fetch_at_most_once_concurrently() -> None:
    provider = Provider(jwk())
    keys = signing_keys(provider, [0.0])
    results = await asyncio.gather(*(keys.get(OPENID_URL) for _ in range(10)))
    assert provider.fetches == 1
    assert all(result is results[0] for result in results)


async def test_signing_keys_keep_previous_keys_when_refresh_fails() -> None:
    provider, clock = Provider(jwk()), [0.0]
    keys = signing_keys(provider, clock)
    cached = await keys.get(OPENID_URL)
    provider.status, clock[0] = 500, 4000.0
    assert await keys.get(OPENID_URL) is cached


async def test_signing_keys_unavailable_without_cache_and_retried_later() -> None:
    provider, clock = Provider(jwk(), status=404), [0.0]
    keys = signing_keys(provider, clock)
    with pytest.raises(SigningKeysUnavailable):
        await keys.get(OPENID_URL)
    provider.status = 200
    with pytest.raises(SigningKeysUnavailable):
        await keys.get(OPENID_URL)
    clock[0] = 31.0
    assert (await keys.get(OPENID_URL)).has("k1")


async def test_signing_keys_overrides_never_touch_the_network() -> None:
    def offline(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected fetch of {request.url}")

    keys = OpenIdKeyCache({OPENID_URL: {"keys": [jwk()]}, TENANT: {"keys": [jwk(kid="t1")]}}, transport=httpx.MockTransport(offline))
    assert (await keys.get(OPENID_URL, "unknown")).has("k1")
    assert (await keys.get("https://login.example/other", tenant_id=TENANT)).has("t1")
