"""The statements added for APIM fidelity, end to end: documents applied through the CLI, a gateway process, the
simulator as backend, and the `openai` SDK (or httpx where a refusal is the point) as client."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, Keys, Simulator
from tests.stack_helpers import logged_gateway

POLL_SECONDS = 0.3

DOCUMENT = """<policies>
  <inbound>
    <base />
    <trace source="e2e-statements" severity="information">
      <message>@("case " + context.Request.Headers.GetValueOrDefault("x-case", "none"))</message>
      <metadata name="deployment" value="@(context.Request.MatchedParameters["deployment-id"])" />
    </trace>
    <choose>
      <when condition='@(context.Request.Headers.GetValueOrDefault("x-case", "") == "transform")'>
        <set-body template="liquid">{"messages": [{"role": "user", "content": "{{ body.messages[0].content | Upcase }} for {{ context.Request.MatchedParameters["deployment-id"] }}"}]}</set-body>
        <rewrite-uri template="/deployments/gpt-4o-mini/chat/completions" />
      </when>
      <when condition='@(context.Request.Headers.GetValueOrDefault("x-case", "") == "method")'>
        <set-method>PUT</set-method>
      </when>
      <when condition='@(context.Request.Headers.GetValueOrDefault("x-case", "") == "quota")'>
        <quota-by-key calls="2" renewal-period="3600" counter-key='@(context.Request.Headers.GetValueOrDefault("x-quota-key", ""))' />
      </when>
    </choose>
  </inbound>
  <backend>
    <limit-concurrency key='@(context.Request.Headers.GetValueOrDefault("x-lc-key", context.RequestId))' max-count="1">
      <retry condition="@(context.Response.StatusCode == 429)" count="1" interval="0">
        <choose>
          <when condition="@(context.Response.StatusCode == 429)"><set-backend-service backend-id="secondary" /></when>
          <otherwise><set-backend-service backend-id="primary" /></otherwise>
        </choose>
        <forward-request />
      </retry>
    </limit-concurrency>
  </backend>
  <outbound>
    <base />
    <find-and-replace from="Simulated answer" to="Gateway answer" />
    <wait for="all">
      <choose><when condition="@(true)"><set-header name="x-waited" exists-action="override"><value>all</value></set-header></when></choose>
    </wait>
    <set-header name="x-request-id" exists-action="override"><value>@(context.RequestId)</value></set-header>
  </outbound>
</policies>"""


@dataclass(frozen=True)
class TracedGateway:
    url: str
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def traced_gateway(gateway_env: dict[str, str], simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedGateway]:
    """A gateway process of its own whose log (stderr) the tests read, with a primary and a secondary backend."""
    env = {
        **gateway_env,
        "GATEWAY_TABLE_PREFIX": "s" + secrets.token_hex(4),
        "GATEWAY_POLICY_POLL_SECONDS": str(POLL_SECONDS),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "primary", "url": simulator.url, "deployments": ["*"], "api_key_setting": "SIMULATOR_KEY"},
                {"id": "secondary", "url": simulator.url, "deployments": ["*"], "api_key_setting": "SIMULATOR_KEY"},
            ]
        ),
    }
    log = tmp_path_factory.mktemp("gateway-log") / "stderr.log"
    with logged_gateway(env, log) as url:
        yield TracedGateway(url, env, log)


@pytest.fixture(scope="module")
def applied(traced_gateway: TracedGateway, create_subscription: Callable[..., Keys], tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The document above in force at API scope, and a key."""
    keys = create_subscription("statements-team", env=traced_gateway.env)
    path = tmp_path_factory.mktemp("documents") / "statements.xml"
    path.write_text(DOCUMENT)
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "api:openai"], env=traced_gateway.env)
    assert result.exit_code == 0, result.output
    deadline = time.monotonic() + 10
    while chat(traced_gateway, keys.primary).headers.get("x-waited") != "all":
        assert time.monotonic() < deadline, "the document never came into force"
        time.sleep(0.1)
    return keys


def chat(gateway: TracedGateway, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": key, **headers},
        json={"messages": [{"role": "user", "content": "statement test"}]},
        timeout=15,
    )


def test_context_request_id_is_a_new_guid_for_every_request(traced_gateway: TracedGateway, applied: Keys) -> None:
    first, second = (chat(traced_gateway, applied.primary).headers["x-request-id"] for _ in range(2))
    assert uuid.UUID(first).version == 4 and uuid.UUID(second).version == 4
    assert first != second


def test_set_body_liquid_rewrite_uri_find_and_replace_and_wait_with_the_sdk(
    traced_gateway: TracedGateway, applied: Keys, simulator: Simulator
) -> None:
    simulator.clear_requests()
    client = AzureOpenAI(azure_endpoint=traced_gateway.url, api_key=applied.primary, api_version=API_VERSION, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}], extra_headers={"x-case": "transform"}
    )
    assert raw.parse().choices[0].message.content == "Gateway answer to: HELLO THERE for gpt-4o"
    assert raw.headers["x-waited"] == "all"
    (seen,) = simulator.requests()
    assert seen["path"] == "/openai/deployments/gpt-4o-mini/chat/completions" and f"api-version={API_VERSION}" in seen["query"]


def test_set_method_changes_the_backend_call(traced_gateway: TracedGateway, applied: Keys) -> None:
    answer = chat(traced_gateway, applied.primary, **{"x-case": "method"})
    assert answer.status_code == 405  # the simulator serves chat completions with POST only


def test_quota_by_key_refuses_the_third_call_with_403(traced_gateway: TracedGateway, applied: Keys) -> None:
    headers = {"x-case": "quota", "x-quota-key": secrets.token_hex(4)}
    assert [chat(traced_gateway, applied.primary, **headers).status_code for _ in range(2)] == [200, 200]
    refused = chat(traced_gateway, applied.primary, **headers)
    assert refused.status_code == 403 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["message"].startswith("Out of call volume quota. Quota will be replenished in")


def test_limit_concurrency_refuses_a_second_request_in_flight(traced_gateway: TracedGateway, applied: Keys) -> None:
    key = {"x-lc-key": secrets.token_hex(4)}
    slow = {**key, "x-sim-fault": "hang", "x-sim-hang-s": "1.5"}
    statuses: list[int] = []
    first = threading.Thread(target=lambda: statuses.append(chat(traced_gateway, applied.primary, **slow).status_code))
    first.start()
    time.sleep(0.5)
    second = chat(traced_gateway, applied.primary, **key)
    first.join()
    assert second.status_code == 429 and statuses == [200]
    assert chat(traced_gateway, applied.primary, **key).status_code == 200  # the place was given back


def test_retry_failover_reads_context_response_before_the_first_answer(traced_gateway: TracedGateway, applied: Keys, simulator: Simulator) -> None:
    simulator.clear_requests()
    httpx.post(f"{simulator.url}/sim/faults", json={"status": 429, "count": 1, "retry_after": 0.1})
    answer = chat(traced_gateway, applied.primary)
    assert answer.status_code == 200  # was 500 on every request: context.Response was null in the first pass
    assert len(simulator.requests()) == 2


def test_trace_reaches_the_gateway_log_with_its_source(traced_gateway: TracedGateway, applied: Keys) -> None:
    chat(traced_gateway, applied.primary, **{"x-case": "traced"})
    deadline = time.monotonic() + 5
    while "policies.trace: case traced" not in traced_gateway.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the trace never reached the log"
        time.sleep(0.1)


def test_audience_only_validate_azure_ad_token_passes_policies_check(traced_gateway: TracedGateway, tmp_path: Path) -> None:
    path = tmp_path / "aad.xml"
    path.write_text(
        '<policies><inbound><validate-azure-ad-token tenant-id="contoso.onmicrosoft.com">'
        "<audiences><audience>api://gateway</audience></audiences></validate-azure-ad-token><base /></inbound></policies>"
    )
    result = CliRunner().invoke(cli, ["policies", "check", str(path), "--scope", "api:openai"], env=traced_gateway.env)
    assert result.exit_code == 0, result.output
