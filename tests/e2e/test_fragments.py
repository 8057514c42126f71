"""Policy fragments through the real stack: applied with the CLI, included by a stored document, served by a
gateway process against the simulator, hot-reloaded when the fragment changes, and protected from deletion."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, GatewayProcess, Keys

TAG = """<fragment>
    <set-header name="x-fragment" exists-action="override"><value>@("{} for " + context.Subscription.Name)</value></set-header>
</fragment>"""
DOCUMENT = """<policies>
    <inbound><base /><include-fragment fragment-id="tagging" /></inbound>
    <backend><base /></backend>
    <outbound><base /><set-header name="x-after" exists-action="override"><value>@(context.Request.Headers.GetValueOrDefault("x-fragment", "none"))</value></set-header></outbound>
</policies>"""


def invoke(env: dict[str, str], tmp_path: Path, *args: str, xml: str | None = None) -> tuple[int, str]:
    if xml is not None:
        path = tmp_path / f"{secrets.token_hex(3)}.xml"
        path.write_text(xml)
        args = (*args, str(path))
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def served_tag(client: AzureOpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "fragments"}])
    assert raw.parse().choices[0].message.content == "Simulated answer to: fragments"
    return raw.headers.get("x-after", "")


def wait_for_tag(client: AzureOpenAI, expected: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := served_tag(client)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen == expected


def test_a_fragment_is_applied_included_served_reloaded_and_kept(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    create_subscription: Callable[..., Keys],
    tmp_path: Path,
) -> None:
    env = {**gateway_env, "GATEWAY_TABLE_PREFIX": "f" + secrets.token_hex(4), "GATEWAY_POLICY_POLL_SECONDS": "0.3"}
    keys = create_subscription("fragment-team", env=env)

    code, output = invoke(env, tmp_path, "policies", "apply", "--scope", "api:openai", xml=DOCUMENT)
    assert code == 1 and "Unknown fragment 'tagging'; known fragments: none defined" in output
    code, output = invoke(env, tmp_path, "policies", "fragments", "apply", "--id", "tagging", xml=TAG.format("v1"))
    assert code == 0 and "as fragment tagging (config version 1)" in output and "<inbound>, <backend>, <outbound>, <on-error>" in output
    checked = invoke(env, tmp_path, "policies", "check", "--scope", "api:openai", xml=DOCUMENT)
    assert checked[0] == 0 and "fragments" not in checked[1]  # read from the store, so checked
    assert invoke(env, tmp_path, "policies", "apply", "--scope", "api:openai", xml=DOCUMENT)[0] == 0

    gateway = start_gateway(env)
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0)
    wait_for_tag(client, "v1 for fragment-team")

    code, output = invoke(env, tmp_path, "policies", "fragments", "apply", "--id", "tagging", xml=TAG.format("v2"))
    assert code == 0
    wait_for_tag(client, "v2 for fragment-team")  # hot reload: only the fragment changed

    code, output = invoke(env, tmp_path, "policies", "fragments", "apply", "--id", "tagging", xml="<fragment><forward-request /></fragment>")
    assert code == 1 and "what includes it would no longer load: Policy for scope api:openai" in output
    code, output = invoke(env, tmp_path, "policies", "fragments", "delete", "--id", "tagging")
    assert code == 1 and "included by scope api:openai" in output
    listed = json.loads(invoke(env, tmp_path, "policies", "fragments", "list")[1])
    assert listed["fragments"]["tagging"]["includedBy"] == ["scope api:openai"] and listed["version"] == 3
    assert invoke(env, tmp_path, "policies", "fragments", "show", "--id", "tagging")[1].strip() == TAG.format("v2").strip()
    assert served_tag(client) == "v2 for fragment-team"  # the refused changes changed nothing

    assert invoke(env, tmp_path, "policies", "delete", "--scope", "api:openai")[0] == 0
    code, output = invoke(env, tmp_path, "policies", "fragments", "delete", "--id", "tagging")
    assert code == 0 and "Deleted fragment tagging" in output
    wait_for_tag(client, "")
    code, output = invoke(env, tmp_path, "policies", "fragments", "show", "--id", "tagging")
    assert code == 1 and "policies fragments list" in output
