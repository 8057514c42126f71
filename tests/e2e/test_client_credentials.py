"""The client's credentials: one unambiguous subscription key, and none of its credential values reaches a backend."""

from __future__ import annotations

import secrets

import httpx
import pytest
from starlette.requests import Request

from gateway.errors import AmbiguousSubscriptionKey
from gateway.handling.client_credentials import ClientCredentials, subscription_key
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator


def request(headers: list[tuple[str, str]], query: str = "") -> Request:
    raw = [(name.encode(), value.encode()) for name, value in headers]
    return Request({"type": "http", "method": "POST", "path": "/openai/v1/chat/completions", "query_string": query.encode(), "headers": raw})


@pytest.mark.parametrize(
    ("headers", "query", "key"),
    [
        ([("api-key", "k")], "", "k"),
        ([("ocp-apim-subscription-key", "k"), ("authorization", "Bearer jwt")], "", "k"),  # the bearer may be a JWT
        ([("api-key", "k"), ("ocp-apim-subscription-key", "k")], "", "k"),  # the same key twice is no doubt
        ([("authorization", "Bearer k ")], "", "k"),
        ([("authorization", "Basic abc")], "subscription-key=q", "q"),
        ([], "api-key=q&api-version=1", "q"),
        ([], "", None),
    ],
)
def test_the_key_is_found_where_clients_send_it(headers: list[tuple[str, str]], query: str, key: str | None) -> None:
    assert subscription_key(request(headers, query)) == key


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([("api-key", "valid"), ("api-key", "junk")], ""),
        ([("api-key", "sub"), ("api-key", "x"), ("api-key", "sub")], ""),
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], ""),
        ([("api-key", "a"), ("authorization", "Bearer b"), ("authorization", "Bearer c")], ""),
        ([("api-key", "a"), ("ocp-apim-subscription-key", "b")], ""),
        ([], "subscription-key=a&subscription-key=b"),
        ([], "subscription-key=a&api-key=b"),
    ],
)
def test_a_key_sent_twice_is_refused_rather_than_one_copy_picked(headers: list[tuple[str, str]], query: str) -> None:
    with pytest.raises(AmbiguousSubscriptionKey):
        subscription_key(request(headers, query))


def test_every_client_credential_value_is_removed_and_only_policy_values_survive() -> None:
    sent = [("api-key", "SUB"), ("API-KEY", "X"), ("api-key", "SUB"), ("Cookie", "a=1"), ("cookie", "b=2"), ("x-user", "u")]
    credentials = ClientCredentials.of(sent)
    assert credentials.outbound([*sent, ("connection", "keep-alive")]) == [("x-user", "u")]
    # A policy replaced the key (set-header override) and appended one: only its own values go out.
    assert credentials.outbound([("api-key", "backend-key"), ("api-key", "X"), ("x-user", "u")]) == [("api-key", "backend-key"), ("x-user", "u")]


def test_repeated_credential_headers_get_401_and_never_reach_the_backend(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    marker = secrets.token_hex(8)
    for headers in (
        [("api-key", keys.primary), ("api-key", "junk")],
        [("api-key", keys.primary), ("api-key", "caller-chosen"), ("api-key", keys.primary)],
        [("authorization", f"Bearer {keys.primary}"), ("authorization", "Bearer caller-chosen")],
    ):
        answer = httpx.post(url, headers=[*headers, ("x-test-marker", marker)], json=body)
        assert answer.status_code == 401 and "ambiguous" in answer.json()["error"]["message"]
    assert not [r for r in simulator.requests() if r["headers"].get("x-test-marker") == marker]


def test_the_backend_gets_its_own_key_and_none_of_the_clients_credentials(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    marker = secrets.token_hex(8)
    headers = [("api-key", keys.primary), ("authorization", "Bearer caller-chosen"), ("cookie", "a=1"), ("cookie", "b=2"), ("x-test-marker", marker)]
    answer = httpx.post(
        f"{gateway.url}/openai/v1/chat/completions", headers=headers, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status_code == 200
    (seen,) = [r["headers"] for r in simulator.requests() if r["headers"].get("x-test-marker") == marker]
    assert seen["api-key"] == simulator.api_key
    assert "authorization" not in seen and "cookie" not in seen and keys.primary not in seen.values()
