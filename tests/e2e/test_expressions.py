"""`@{ … }` blocks end to end: a document applied with the CLI, loaded by a gateway process, run on requests made
with the `openai` SDK against the simulator; a failing or endless block answers 500 and on-error sees why."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator

DOCUMENT = """<policies>
  <inbound>
    <base />
    <set-variable name="summary" value="@{
        // don't forward this: it's only for the response header
        var body = context.Request.Body.As<JObject>(preserveContent: true);
        var messages = body?["messages"] as JArray;
        var roles = messages == null ? new List<string>() : messages.Select(m => (string)m["role"]).Distinct().ToList();
        var team = context.Request.Headers.ContainsKey("x-team") ? context.Request.Headers["x-team"][0] : "none";
        var token = context.Request.Headers.GetValueOrDefault("x-token", "").AsJwt();
        var caller = token?.Subject ?? context.User?.Id ?? "anonymous";
        if (context.Request.Headers.ContainsKey("x-fail")) { throw new InvalidOperationException("asked to fail"); }
        if (context.Request.Headers.ContainsKey("x-spin")) { while (true) { } }
        return $"{team}|{caller}|{string.Join(",", roles)}|{context.Api.Path}|{context.Api.Revision}";
    }" />
    <set-header name="x-signature" exists-action="override">
      <value>@{
        using (var hmac = new HMACSHA256(Encoding.UTF8.GetBytes("demo-key"))) {
          return Convert.ToBase64String(hmac.ComputeHash(Encoding.UTF8.GetBytes((string)context.Variables["summary"])));
        }
      }</value>
    </set-header>
  </inbound>
  <backend><base /></backend>
  <outbound>
    <base />
    <set-header name="x-summary" exists-action="override"><value>@((string)context.Variables["summary"])</value></set-header>
  </outbound>
  <on-error>
    <base />
    <set-header name="x-error-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
  </on-error>
</policies>"""


@pytest.fixture(scope="module")
def block_env(gateway_env: dict[str, str]) -> dict[str, str]:
    """Own tables, so this document never changes what other tests' gateways run."""
    return {**gateway_env, "GATEWAY_TABLE_PREFIX": "x" + secrets.token_hex(4), "GATEWAY_POLICY_POLL_SECONDS": "0.3"}


@pytest.fixture(scope="module")
def block_gateway(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], block_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> GatewayProcess:
    path = tmp_path_factory.mktemp("policies") / "blocks.xml"
    path.write_text(DOCUMENT)
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "api:openai"], env=block_env)
    assert result.exit_code == 0, result.output
    return start_gateway(block_env)


@pytest.fixture(scope="module")
def block_keys(create_subscription: Callable[..., Keys], block_env: dict[str, str]) -> Keys:
    return create_subscription("blocks", env=block_env)


def unsigned(claims: dict[str, str]) -> str:
    part = lambda data: base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.x"


def test_block_computes_headers_for_an_sdk_request(block_gateway: GatewayProcess, block_keys: Keys, simulator: Simulator) -> None:
    client = AzureOpenAI(azure_endpoint=block_gateway.url, api_key=block_keys.primary, api_version=API_VERSION, max_retries=0)
    simulator.clear_requests()
    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
        extra_headers={"x-team": "blue", "x-token": unsigned({"sub": "ada"})},
    )
    summary = "blue|ada|system,user|openai|1"
    assert response.headers["x-summary"] == summary
    assert response.parse().choices[0].message.content
    forwarded = simulator.requests()[-1]["headers"]
    signature = {k.lower(): v for k, v in forwarded.items()}["x-signature"]
    import hashlib
    import hmac

    assert signature == base64.b64encode(hmac.new(b"demo-key", summary.encode(), hashlib.sha256).digest()).decode()
    anonymous = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert anonymous.headers["x-summary"] == "none|anonymous|user|openai|1"


@pytest.mark.parametrize("header", ["x-fail", "x-spin"])
def test_failing_or_endless_block_answers_500_quickly(block_gateway: GatewayProcess, block_keys: Keys, header: str) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{block_gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": block_keys.primary, header: "1"},
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert time.monotonic() - started < 3
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "ExpressionValueEvaluationFailure"
    assert response.headers["x-error-reason"] == "ExpressionValueEvaluationFailure"
    health = httpx.get(f"{block_gateway.url}/health", timeout=5)
    assert health.status_code in (200, 503) and json.loads(health.text)


def test_check_reports_a_block_error_with_its_line(block_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(DOCUMENT.replace('return $"{team}', 'return $"{teem}'))
    result = CliRunner().invoke(cli, ["policies", "apply", str(bad), "--scope", "api:openai"], env=block_env)
    assert result.exit_code == 1
    assert "<set-variable> at line 4" in result.output and "Unknown name 'teem'" in result.output
