"""Inbound authentication end to end: keys from Azurite, checked by a gateway process, managed by the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from azure.data.tables import TableClient
from click.testing import CliRunner
from openai import AuthenticationError, AzureOpenAI, OpenAI

from gateway.cli.main import main as cli
from gateway.stores.subscriptions import KeyHasher
from tests.conftest import API_VERSION, GatewayProcess, Keys

MISSING = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."
INVALID = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
#: The test gateway trusts a looked-up key for 0.5 s; wait a little longer for a change to show.
CACHE_WAIT = 0.7


def chat(gateway: GatewayProcess, key: str | None, path: str = "deployments/gpt-4o/chat/completions") -> httpx.Response:
    headers = {"api-key": key} if key else {}
    body: dict = {"messages": [{"role": "user", "content": "hi"}]}
    params = {"api-version": API_VERSION}
    if path.startswith("v1/"):
        body["model"] = "gpt-4o"
        params = {}
    return httpx.post(f"{gateway.url}/openai/{path}", params=params, headers=headers, json=body)


def assert_refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "401", "message": message}}


def test_missing_key_is_refused_with_apim_message(gateway: GatewayProcess) -> None:
    assert_refused(chat(gateway, None), MISSING)


def test_wrong_key_is_refused_and_sdk_raises_authentication_error(gateway: GatewayProcess) -> None:
    assert_refused(chat(gateway, "0" * 32), INVALID)
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key="wrong", api_version=API_VERSION, max_retries=0)
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_both_keys_work_and_bearer_works_for_v1_client(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    keys = create_subscription("both-keys")
    assert chat(gateway, keys.primary).status_code == 200
    assert chat(gateway, keys.secondary).status_code == 200
    client = OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=keys.secondary, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]).choices


def test_suspended_subscription_is_refused_until_resumed(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    keys = create_subscription("to-suspend")
    env = gateway.env
    runner = CliRunner()
    assert chat(gateway, keys.primary).status_code == 200
    result = runner.invoke(cli, ["subscriptions", "suspend", keys.subscription.id], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "suspended"
    time.sleep(CACHE_WAIT)
    assert_refused(chat(gateway, keys.primary), INVALID)
    assert runner.invoke(cli, ["subscriptions", "resume", keys.subscription.id], env=env).exit_code == 0
    time.sleep(CACHE_WAIT)
    assert chat(gateway, keys.primary).status_code == 200


def test_cancelled_and_deleted_subscriptions_are_refused(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    cancelled, deleted = create_subscription("cancel-me"), create_subscription("delete-me")
    runner = CliRunner()
    assert runner.invoke(cli, ["subscriptions", "cancel", cancelled.subscription.id], env=gateway.env).exit_code == 0
    assert runner.invoke(cli, ["subscriptions", "delete", deleted.subscription.id], env=gateway.env).exit_code == 0
    assert_refused(chat(gateway, cancelled.primary), INVALID)
    assert_refused(chat(gateway, deleted.primary), INVALID)


def test_api_scoped_subscription_only_opens_its_api(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    keys = create_subscription("v1-only", scope="api:openai-v1")
    assert chat(gateway, keys.primary, "v1/chat/completions").status_code == 200
    assert_refused(chat(gateway, keys.primary), INVALID)


def test_product_scoped_subscription_opens_the_products_apis(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    starter = create_subscription("starter-team", scope="product:starter")  # product "starter" = openai-v1 only
    unlimited = create_subscription("unlimited-team", scope="product:unlimited")
    assert chat(gateway, starter.primary, "v1/chat/completions").status_code == 200
    assert_refused(chat(gateway, starter.primary), INVALID)
    assert chat(gateway, unlimited.primary).status_code == 200
    assert chat(gateway, unlimited.primary, "v1/chat/completions").status_code == 200


def test_rotation_replaces_only_the_rotated_key(gateway: GatewayProcess, create_subscription: Callable[..., Keys]) -> None:
    keys = create_subscription("rotate-me")
    assert chat(gateway, keys.primary).status_code == 200
    result = CliRunner().invoke(cli, ["subscriptions", "rotate", keys.subscription.id, "--key", "primary"], env=gateway.env)
    assert result.exit_code == 0, result.output
    new_primary = json.loads(result.stdout)["primaryKey"]
    assert new_primary != keys.primary and len(new_primary) == 32
    time.sleep(CACHE_WAIT)
    assert_refused(chat(gateway, keys.primary), INVALID)
    assert chat(gateway, new_primary).status_code == 200
    assert chat(gateway, keys.secondary).status_code == 200


def test_cli_create_prints_keys_once_and_stores_only_hashes(gateway: GatewayProcess, hasher: KeyHasher) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["subscriptions", "create", "cli-team", "--scope", "api:openai"], env=gateway.env)
    assert created.exit_code == 0, created.output
    data = json.loads(created.stdout)
    assert data["scope"] == "api:openai" and data["state"] == "active"
    assert chat(gateway, data["primaryKey"]).status_code == 200
    shown = runner.invoke(cli, ["subscriptions", "show", data["id"]], env=gateway.env)
    listed = runner.invoke(cli, ["subscriptions", "list"], env=gateway.env)
    for output in (shown.stdout, listed.stdout):
        assert data["primaryKey"] not in output and data["secondaryKey"] not in output
        assert "Hash" not in output
    assert data["id"] in {s["id"] for s in json.loads(listed.stdout)}
    stored = list(
        TableClient.from_connection_string(
            gateway.env["GATEWAY_STORAGE_CONNECTION"], gateway.env["GATEWAY_TABLE_PREFIX"] + "subscriptions"
        ).list_entities()
    )
    assert not any(data["primaryKey"] in repr(e) or data["secondaryKey"] in repr(e) for e in stored)
    row = next(e for e in stored if e["RowKey"] == data["id"])
    assert row["primaryKeyHash"] == hasher.hash(data["primaryKey"])


def test_cli_rejects_unknown_scope_and_unknown_id(gateway: GatewayProcess) -> None:
    runner = CliRunner()
    bad_scope = runner.invoke(cli, ["subscriptions", "create", "x", "--scope", "product:nope"], env=gateway.env)
    assert bad_scope.exit_code == 2
    assert "product:starter" in bad_scope.output  # the message lists what is allowed
    missing = runner.invoke(cli, ["subscriptions", "suspend", "no-such-id"], env=gateway.env)
    assert missing.exit_code == 1
    assert "subscriptions list" in missing.output
