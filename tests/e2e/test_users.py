"""`context.User` and `context.Api` through the real stack: an owner set with the CLI reaches a policy expression in a
gateway process, follows `subscriptions owner` changes, and is null for a subscription without one."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, GatewayProcess, Simulator

DOCUMENT = """<policies>
    <inbound><base /></inbound>
    <backend><base /></backend>
    <outbound>
        <base />
        <set-header name="x-user" exists-action="override">
            <value>@(context.User == null ? "anonymous" : context.User.Email + "/" + context.User.LastName + "/" + string.Join(",", context.User.Groups.Select(g => g.Id)))</value>
        </set-header>
        <set-header name="x-api" exists-action="override">
            <value>@(context.Api.Path + "|" + context.Api.Revision + "|" + context.Api.ServiceUrl.Host + ":" + context.Api.ServiceUrl.Port)</value>
        </set-header>
    </outbound>
</policies>"""


def cli_json(env: dict[str, str], *args: str) -> dict:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def headers(client: AzureOpenAI) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "who am I"}])
    return raw.headers["x-user"], raw.headers["x-api"]


def wait_for_user(client: AzureOpenAI, expected: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := headers(client)[0]) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen == expected


def test_the_subscription_owner_is_context_user(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], simulator: Simulator, tmp_path: Path
) -> None:
    env = {**gateway_env, "GATEWAY_TABLE_PREFIX": "u" + secrets.token_hex(4), "GATEWAY_POLICY_POLL_SECONDS": "0.3"}
    owned = cli_json(
        env, "subscriptions", "create", "research", "--owner-email", "ada@contoso.com", "--owner-name", "Ada Lovelace",
        "--owner-group", "research", "--owner-group", "pilots",
    )  # fmt: skip
    assert owned["owner"]["id"] == "ada@contoso.com" and owned["owner"]["firstName"] == "Ada"
    anonymous = cli_json(env, "subscriptions", "create", "anonymous")
    assert "owner" not in anonymous
    path = tmp_path / "user.xml"
    path.write_text(DOCUMENT)
    assert CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "api:openai"], env=env).exit_code == 0

    gateway = start_gateway(env)
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=owned["primaryKey"], api_version=API_VERSION, max_retries=0)
    user, api = headers(client)
    assert user == "ada@contoso.com/Lovelace/research,pilots"
    assert api == f"openai|1|127.0.0.1:{simulator.url.rsplit(':', 1)[1]}"
    other = AzureOpenAI(azure_endpoint=gateway.url, api_key=anonymous["primaryKey"], api_version=API_VERSION, max_retries=0)
    assert headers(other)[0] == "anonymous"

    changed = cli_json(env, "subscriptions", "owner", owned["id"], "--email", "grace@contoso.com", "--name", "Grace Hopper")
    assert changed["owner"]["groups"] == ["research", "pilots"] and changed["owner"]["id"] == "ada@contoso.com"  # kept
    wait_for_user(client, "grace@contoso.com/Hopper/research,pilots")
    cli_json(env, "subscriptions", "owner", owned["id"], "--clear")
    wait_for_user(client, "anonymous")

    refused = CliRunner().invoke(cli, ["subscriptions", "create", "x", "--owner-email", "not an email"], env=env)
    assert refused.exit_code == 2 and "is not an email address" in refused.output
