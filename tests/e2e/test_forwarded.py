"""The client address, scheme and host: only what trusted proxies wrote counts, and addresses are normalised."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.requests import Request

from gateway.config.settings import Settings
from gateway.handling.forwarded import client_address, normalise_address, request_origin, trusted_entry
from tests.conftest import GatewayProcess, Keys
from tests.stack_helpers import apply, token_env

ECHO_IP = """<policies><inbound><base />
  <ip-filter action="forbid"><address>10.9.9.9</address></ip-filter>
  <ip-filter action="forbid" header-name="X-Forwarded-For"><address>10.9.9.8</address></ip-filter>
  <return-response><set-status code="200" /><set-body>@(context.Request.IpAddress)</set-body></return-response>
</inbound></policies>"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", "10.1.2.3"),
        (" 10.1.2.3:5678 ", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("[::ffff:10.1.2.3]:443", "10.1.2.3"),
        ("[2001:DB8:0:0::1]:80", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("10.1.2", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_addresses_are_normalised(text: str, expected: str | None) -> None:
    assert normalise_address(text) == expected


def headers(*items: tuple[str, str]) -> Headers:
    return Headers(raw=[(k.encode(), v.encode()) for k, v in items])


def test_the_entry_hops_from_the_right_is_the_client() -> None:
    spoofed = headers(("x-forwarded-for", "10.1.2.3, 198.51.100.7"), ("x-forwarded-for", "203.0.113.9"))
    assert trusted_entry(spoofed, "x-forwarded-for", 0) is None
    assert client_address(spoofed, "127.0.0.1", 0) == "127.0.0.1"
    assert client_address(spoofed, "127.0.0.1", 1) == "203.0.113.9"  # header lines count in order
    assert client_address(spoofed, "127.0.0.1", 2) == "198.51.100.7"
    assert client_address(spoofed, "127.0.0.1", 4) == "127.0.0.1"  # fewer entries than proxies: it went around one
    assert client_address(headers(("x-forwarded-for", "::ffff:192.0.2.8")), "::ffff:127.0.0.1", 1) == "192.0.2.8"
    assert client_address(headers(("x-forwarded-for", "garbage")), "::ffff:127.0.0.1", 1) == "127.0.0.1"
    assert client_address(headers(), None, 1) == ""


def request_with(*items: tuple[str, str]) -> Request:
    raw = [(b"host", b"10.0.0.4:8080"), *((k.encode(), v.encode()) for k, v in items)]
    return Request({"type": "http", "method": "GET", "scheme": "http", "path": "/", "query_string": b"", "headers": raw})


def test_forwarded_scheme_and_host_count_only_from_trusted_hops() -> None:
    forwarded = request_with(("x-forwarded-proto", "https"), ("x-forwarded-host", "gw.example.com"))
    assert request_origin(forwarded, 0) == ("http", "10.0.0.4:8080")
    assert request_origin(forwarded, 1) == ("https", "gw.example.com")
    hostile = request_with(("x-forwarded-proto", "javascript"), ("x-forwarded-host", "evil.example/<x>"))
    assert request_origin(hostile, 1) == ("http", "10.0.0.4:8080")


def test_hops_setting_defaults_to_one_under_functions_and_is_bounded() -> None:
    base = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}
    assert Settings.from_env(base).trusted_proxy_hops == 0
    assert Settings.from_env({**base, "FUNCTIONS_WORKER_RUNTIME": "python"}).trusted_proxy_hops == 1
    assert Settings.from_env({**base, "GATEWAY_TRUST_FORWARDED_FOR": "true"}).trusted_proxy_hops == 1
    assert Settings.from_env({**base, "FUNCTIONS_WORKER_RUNTIME": "python", "GATEWAY_TRUSTED_PROXY_HOPS": "0"}).trusted_proxy_hops == 0
    assert Settings.from_env({**base, "GATEWAY_TRUSTED_PROXY_HOPS": "2"}).trusted_proxy_hops == 2
    for bad in ("-1", "x", "9"):
        with pytest.raises(ValueError, match="GATEWAY_TRUSTED_PROXY_HOPS"):
            Settings.from_env({**base, "GATEWAY_TRUSTED_PROXY_HOPS": bad})


@pytest.fixture(scope="module")
def echo_env(gateway_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = token_env(gateway_env)
    apply(env, ECHO_IP, tmp_path_factory.mktemp("policy"))
    return env


@pytest.fixture(scope="module")
def echo_key(echo_env: dict[str, str], create_subscription: Callable[..., Keys]) -> str:
    return create_subscription("echo", env=echo_env).primary


@pytest.fixture(scope="module")
def echo_gateways(start_gateway: Callable[[dict[str, str]], GatewayProcess], echo_env: dict[str, str]) -> dict[int, GatewayProcess]:
    """Gateways answering with the client address their policies see: one with no trusted proxy, one with one."""
    return {hops: start_gateway({**echo_env, "GATEWAY_TRUSTED_PROXY_HOPS": str(hops)}) for hops in (0, 1)}


def seen_ip(gateway: GatewayProcess, key: str, forwarded: str | None) -> httpx.Response:
    extra = {"x-forwarded-for": forwarded} if forwarded is not None else {}
    return httpx.post(f"{gateway.url}/openai/v1/chat/completions", headers={"api-key": key, **extra}, json={"model": "gpt-4o"})


def test_without_trusted_proxies_the_header_is_ignored_even_from_loopback(echo_gateways: dict[int, GatewayProcess], echo_key: str) -> None:
    answer = seen_ip(echo_gateways[0], echo_key, "10.1.2.3")
    assert (answer.status_code, answer.text) == (200, "127.0.0.1")
    assert seen_ip(echo_gateways[0], echo_key, "10.9.9.9").text == "127.0.0.1"


def test_one_trusted_proxy_means_the_rightmost_entry(echo_gateways: dict[int, GatewayProcess], echo_key: str) -> None:
    gateway = echo_gateways[1]
    assert seen_ip(gateway, echo_key, "10.1.2.3, 192.0.2.7").text == "192.0.2.7"
    assert seen_ip(gateway, echo_key, "::ffff:192.0.2.8").text == "192.0.2.8"
    assert seen_ip(gateway, echo_key, "[2001:db8::5]:4711").text == "2001:db8::5"
    assert seen_ip(gateway, echo_key, None).text == "127.0.0.1"
    # The forbidden address written by the client to the left does not match; written by the proxy, it does.
    assert seen_ip(gateway, echo_key, "10.9.9.9, 192.0.2.7").status_code == 200
    assert seen_ip(gateway, echo_key, "192.0.2.7, ::ffff:10.9.9.9").status_code == 403


def test_ip_filter_on_the_header_follows_the_trusted_hops(echo_gateways: dict[int, GatewayProcess], echo_key: str) -> None:
    """`header-name="X-Forwarded-For"` matches the entry the trusted proxy wrote, never one the client wrote."""
    assert seen_ip(echo_gateways[0], echo_key, "10.9.9.8").status_code == 200  # no trusted proxy: the header is the client's
    assert seen_ip(echo_gateways[1], echo_key, "10.9.9.8, 192.0.2.7").status_code == 200
    assert seen_ip(echo_gateways[1], echo_key, "192.0.2.7, 10.9.9.8").status_code == 403
