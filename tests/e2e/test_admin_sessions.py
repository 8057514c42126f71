"""Dashboard sessions: random signed tokens with server-checked expiry, sign-out on every instance, throttled wrong
keys per client address, `Secure` behind a trusted TLS proxy, and sign-in from the gateway's own page only."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import httpx
import pytest

from gateway.ops.sessions import SESSION_SECONDS, SessionTokens
from gateway.ops.throttle import FailureThrottle
from tests.conftest import GatewayProcess
from tests.stack_helpers import token_env

ADMIN_KEY = "admin-" + secrets.token_hex(12)
PEPPER = "pepper-" + secrets.token_hex(12)


def test_tokens_are_random_signed_and_expire_on_the_server() -> None:
    tokens = SessionTokens(ADMIN_KEY, PEPPER)
    now = time.time()
    first, second = tokens.issue(now), tokens.issue(now)
    assert first != second and ADMIN_KEY not in first
    assert tokens.check(first, now + 10) is not None and tokens.check(second, now) is not None
    assert tokens.check(first, now + SESSION_SECONDS + 1) is None  # expired, whatever the cookie's Max-Age said
    assert tokens.check(tokens.issue(now + 3600), now) is None  # from the future
    version, issued, nonce, mac = first.split(".")
    assert tokens.check(f"{version}.{int(issued) + 1}.{nonce}.{mac}", now) is None  # tampered
    assert SessionTokens(ADMIN_KEY, "another pepper").check(first, now) is None  # the key alone is not enough
    assert SessionTokens(ADMIN_KEY + "x", PEPPER).check(first, now) is None  # a rotated admin key ends sessions
    for junk in ("", "v1", "v1.x.y.z", "v1.1.2.3.4", "a" * 500):
        assert tokens.check(junk, now) is None


def test_wrong_keys_are_throttled_per_address_in_bounded_memory() -> None:
    clock = [1000.0]
    throttle = FailureThrottle(limit=3, window=60, max_addresses=4, clock=lambda: clock[0])
    for _ in range(3):
        assert throttle.retry_after("192.0.2.1") is None
        throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 60 and throttle.retry_after("192.0.2.2") is None
    for host in range(3):  # the same /64 counts as one subscriber
        throttle.failed(f"2001:db8::{host + 1}")
    assert throttle.retry_after("2001:db8::99") == 60 and throttle.retry_after("2001:db8:1::1") is None
    clock[0] += 30
    assert throttle.retry_after("192.0.2.1") == 30
    clock[0] += 31
    assert throttle.retry_after("192.0.2.1") is None  # the window ended
    for host in range(10):
        throttle.failed(f"198.51.100.{host}")
    assert len(throttle._failures) == 4  # never more than max_addresses


@pytest.fixture(scope="module")
def admin_env(gateway_env: dict[str, str]) -> dict[str, str]:
    return token_env(gateway_env, GATEWAY_ADMIN_KEY=ADMIN_KEY, GATEWAY_KEY_PEPPER=PEPPER, GATEWAY_TRUSTED_PROXY_HOPS="1")


@pytest.fixture(scope="module")
def two_instances(start_gateway: Callable[[dict[str, str]], GatewayProcess], admin_env: dict[str, str]) -> tuple[GatewayProcess, GatewayProcess]:
    """Two gateway processes sharing storage, as two Functions instances do, behind one trusted proxy."""
    return start_gateway(admin_env), start_gateway(admin_env)


def sign_in(gateway: GatewayProcess, address: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/ops/dashboard", data={"key": ADMIN_KEY}, headers={"x-forwarded-for": address, **headers})


def backends(gateway: GatewayProcess, cookie: str) -> int:
    return httpx.get(f"{gateway.url}/ops/backends", cookies={"gateway-admin": cookie}).status_code


def test_each_sign_in_gets_its_own_session_valid_on_every_instance(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = two_instances
    first, second = sign_in(a, "192.0.2.10"), sign_in(a, "192.0.2.10")
    assert first.status_code == second.status_code == 303
    assert first.cookies["gateway-admin"] != second.cookies["gateway-admin"]
    assert backends(a, first.cookies["gateway-admin"]) == backends(b, first.cookies["gateway-admin"]) == 200


def test_sign_out_on_one_instance_ends_the_session_on_all(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = two_instances
    kept, ended = sign_in(a, "192.0.2.11").cookies["gateway-admin"], sign_in(a, "192.0.2.11").cookies["gateway-admin"]
    page = httpx.get(f"{a.url}/ops/dashboard", cookies={"gateway-admin": ended})
    assert page.status_code == 200 and 'id="sign-out"' in page.text
    out = httpx.post(f"{b.url}/ops/dashboard", data={"action": "logout"}, cookies={"gateway-admin": ended})
    assert out.status_code == 303 and 'gateway-admin=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert backends(a, ended) == backends(b, ended) == 401
    assert backends(a, kept) == 200  # another session of the same admin key stays


def test_the_server_checks_expiry_itself(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = two_instances
    old = SessionTokens(ADMIN_KEY, PEPPER).issue(time.time() - SESSION_SECONDS - 60)  # authentic, but too old
    fresh = SessionTokens(ADMIN_KEY, PEPPER).issue(time.time())
    assert backends(a, old) == 401 and backends(a, fresh) == 200


def test_wrong_keys_from_one_address_are_throttled_not_everyones(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = two_instances
    url = f"{a.url}/ops/backends"
    guesser = {"x-forwarded-for": "203.0.113.66"}
    assert [httpx.get(url, headers={**guesser, "x-admin-key": f"guess-{i}"}).status_code for i in range(5)] == [401] * 5
    throttled = httpx.get(url, headers={**guesser, "x-admin-key": ADMIN_KEY})
    assert throttled.status_code == 429 and 200 < int(throttled.headers["retry-after"]) <= 300
    login = httpx.post(f"{a.url}/ops/dashboard", data={"key": ADMIN_KEY}, headers=guesser)
    assert login.status_code == 429 and "Too many wrong admin keys" in login.text
    # The client-written left part of X-Forwarded-For does not choose the counted address.
    assert httpx.get(url, headers={"x-forwarded-for": "198.51.100.1, 203.0.113.66", "x-admin-key": ADMIN_KEY}).status_code == 429
    assert httpx.get(url, headers={"x-forwarded-for": "198.51.100.1", "x-admin-key": ADMIN_KEY}).status_code == 200


def test_secure_cookie_behind_a_trusted_tls_proxy(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = two_instances
    behind_tls = sign_in(a, "192.0.2.12", **{"x-forwarded-proto": "https"}).headers["set-cookie"].lower()
    plain = sign_in(a, "192.0.2.12").headers["set-cookie"].lower()
    assert "; secure" in behind_tls and "; secure" not in plain
    for cookie in (behind_tls, plain):
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ops" in cookie


def test_sign_in_is_accepted_from_the_gateways_own_page_only(two_instances: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = two_instances
    assert sign_in(a, "192.0.2.13", origin="https://evil.example").status_code == 403
    assert sign_in(a, "192.0.2.13", origin="null").status_code == 403
    assert sign_in(a, "192.0.2.13", **{"sec-fetch-site": "cross-site"}).status_code == 403
    assert sign_in(a, "192.0.2.13", origin=a.url, **{"sec-fetch-site": "same-origin"}).status_code == 303
    # Behind the trusted proxy, the origin is the one the client used.
    assert (
        sign_in(a, "192.0.2.13", origin="https://gw.example.com", **{"x-forwarded-proto": "https", "x-forwarded-host": "gw.example.com"}).status_code
        == 303
    )
