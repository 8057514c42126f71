"""Policies end to end: documents applied through the CLI and the queue, hot reload on two gateway processes,
on-error, and the sample documents exercised against the simulator."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
POLL_SECONDS = 0.3


@pytest.fixture(scope="module")
def policy_env(gateway_env: dict[str, str], simulator: Simulator) -> dict[str, str]:
    """Own tables (so documents here do not change other tests' gateway) and two backends on the simulator."""
    return {
        **gateway_env,
        "GATEWAY_TABLE_PREFIX": "p" + secrets.token_hex(4),
        "GATEWAY_POLICY_QUEUE": "updates-" + secrets.token_hex(4),
        "GATEWAY_POLICY_POLL_SECONDS": str(POLL_SECONDS),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "primary", "url": simulator.url, "deployments": ["*"], "api_key_setting": "SIMULATOR_KEY"},
                {"id": "secondary", "url": simulator.url, "deployments": ["gpt-4o-mini"], "api_key_setting": "SIMULATOR_KEY"},
                {"id": "dead", "url": f"http://127.0.0.1:{devstack.free_port()}", "deployments": ["nothing"]},
            ]
        ),
    }


@pytest.fixture(scope="module")
def policy_gateways(start_gateway: Callable[[dict[str, str]], GatewayProcess], policy_env: dict[str, str]) -> list[GatewayProcess]:
    return [start_gateway(policy_env), start_gateway(policy_env)]


@pytest.fixture(scope="module")
def policy_keys(create_subscription: Callable[..., Keys], policy_env: dict[str, str]) -> Keys:
    return create_subscription("policy-team", env=policy_env)


def apply(env: dict[str, str], scope: str, xml: str, tmp_path: Path) -> None:
    path = tmp_path / f"{scope.replace(':', '_')}.xml"
    path.write_text(xml)
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", scope], env=env)
    assert result.exit_code == 0, result.output


def chat(gateway: GatewayProcess, key: str, deployment: str = "gpt-4o", **extra: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/openai/deployments/{deployment}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": key, **extra},
        json={"messages": [{"role": "user", "content": "policy test"}]},
        timeout=10,
    )


def marker_policy(version: str) -> str:
    return (
        "<policies><inbound><base /></inbound><backend><base /></backend>"
        f'<outbound><base /><set-header name="x-policy-version" exists-action="override"><value>{version}</value></set-header></outbound>'
        "<on-error><base /></on-error></policies>"
    )


def wait_for_header(gateway: GatewayProcess, key: str, value: str, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if chat(gateway, key).headers.get("x-policy-version") == value:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{gateway.url} never served policy version {value}")


def test_queue_update_reaches_both_processes_without_failed_requests(
    policy_gateways: list[GatewayProcess], policy_keys: Keys, policy_env: dict[str, str], tmp_path: Path
) -> None:
    apply(policy_env, "api:openai", marker_policy("one"), tmp_path)
    for gateway in policy_gateways:
        wait_for_header(gateway, policy_keys.primary, "one")

    failures: list[str] = []
    served = {"count": 0}
    stop = threading.Event()

    def traffic(gateway: GatewayProcess) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                response = client.post(
                    f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
                    params={"api-version": API_VERSION},
                    headers={"api-key": policy_keys.primary},
                    json={"messages": [{"role": "user", "content": "during the switch"}]},
                )
                served["count"] += 1
                if response.status_code != 200 or response.headers.get("x-policy-version") not in ("one", "two"):
                    failures.append(f"{response.status_code} {response.headers.get('x-policy-version')}")

    threads = [threading.Thread(target=traffic, args=(g,)) for g in policy_gateways]
    for thread in threads:
        thread.start()
    try:
        queue = QueueClient.from_connection_string(
            policy_env["GATEWAY_STORAGE_CONNECTION"], policy_env["GATEWAY_POLICY_QUEUE"], message_encode_policy=TextBase64EncodePolicy()
        )
        queued_at = time.monotonic()
        queue.send_message(json.dumps({"scope": "api:openai", "xml": marker_policy("two")}))
        switch_times = [wait_for_header(g, policy_keys.primary, "two") for g in policy_gateways]
        elapsed = time.monotonic() - queued_at
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert served["count"] > 20
    # Queue poll (1 s) + version poll (0.3 s) + margin.
    assert max(switch_times) < 5 and elapsed < 5


def test_invalid_document_is_rejected_and_previous_stays_in_force(
    policy_gateways: list[GatewayProcess], policy_keys: Keys, policy_env: dict[str, str], tmp_path: Path
) -> None:
    apply(policy_env, "api:openai", marker_policy("valid"), tmp_path)
    wait_for_header(policy_gateways[0], policy_keys.primary, "valid")
    bad = tmp_path / "bad.xml"
    bad.write_text("<policies><inbound>\n<rate-limit calls='x' renewal-period='60' /></inbound></policies>")
    result = CliRunner().invoke(cli, ["policies", "apply", str(bad), "--scope", "api:openai"], env=policy_env)
    assert result.exit_code == 1
    assert "line 2" in result.output and "calls" in result.output and "Nothing was applied" in result.output
    queue = QueueClient.from_connection_string(
        policy_env["GATEWAY_STORAGE_CONNECTION"], policy_env["GATEWAY_POLICY_QUEUE"], message_encode_policy=TextBase64EncodePolicy()
    )
    queue.send_message(json.dumps({"scope": "api:openai", "xml": bad.read_text()}))
    time.sleep(1.5 + POLL_SECONDS)
    for gateway in policy_gateways:
        assert chat(gateway, policy_keys.primary).headers.get("x-policy-version") == "valid"


ON_ERROR = """<policies>
  <inbound><base />
    <choose><when condition="@(context.Request.Headers.GetValueOrDefault(&quot;x-route&quot;, &quot;&quot;) == &quot;dead&quot;)">
      <set-backend-service backend-id="dead" />
    </when></choose>
    <rate-limit-by-key calls="1" renewal-period="3600" counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;x-limit-key&quot;, context.RequestId))" />
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base />
    <set-header name="x-error-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>
    <set-header name="x-error-source" exists-action="override"><value>@(context.LastError.Source + "/" + context.LastError.Section)</value></set-header>
  </on-error>
</policies>"""


def test_on_error_sees_policy_refusal_and_backend_failure(
    policy_gateways: list[GatewayProcess], policy_keys: Keys, policy_env: dict[str, str], tmp_path: Path
) -> None:
    apply(policy_env, "operation:Completions_Create", "<policies />", tmp_path)  # unrelated scope: still reloads
    apply(policy_env, "api:openai", ON_ERROR, tmp_path)
    gateway = policy_gateways[0]
    deadline = time.monotonic() + 5
    while chat(gateway, policy_keys.primary, **{"x-route": "dead"}).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = chat(gateway, policy_keys.primary, **{"x-route": "dead"})
    assert failed.status_code == 502
    assert failed.headers["x-error-reason"] == "BackendConnectionFailure"
    assert failed.headers["x-error-source"] == "forward-request/backend"
    assert "127.0.0.1" not in failed.text  # the backend URL is not revealed
    limited_key = {"x-limit-key": secrets.token_hex(4)}
    assert chat(gateway, policy_keys.primary, **limited_key).status_code == 200
    refused = chat(gateway, policy_keys.primary, **limited_key)
    assert refused.status_code == 429
    assert refused.headers["x-error-reason"] == "RateLimitExceeded"
    assert refused.headers["x-error-source"] == "rate-limit-by-key/inbound"
    assert int(refused.headers["retry-after"]) > 0


def test_model_routing_sample(
    policy_gateways: list[GatewayProcess], policy_keys: Keys, policy_env: dict[str, str], simulator: Simulator, tmp_path: Path
) -> None:
    apply(policy_env, "api:openai", (SAMPLES / "model-routing.xml").read_text(), tmp_path)
    gateway = policy_gateways[1]
    time.sleep(POLL_SECONDS * 3)
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=policy_keys.primary, api_version=API_VERSION, max_retries=0)
    routed = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "route me"}])
    assert routed.headers["x-routed-to"] == "gpt-4o-mini"
    assert routed.parse().choices[0].message.content == "Simulated answer to: route me"
    rejected = chat(gateway, policy_keys.primary, deployment="gpt-35-turbo")
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "InvalidModel"


def test_managed_identity_retry_sample(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    policy_env: dict[str, str],
    create_subscription: Callable[..., Keys],
    simulator: Simulator,
    tmp_path: Path,
) -> None:
    env = {
        **policy_env,
        "GATEWAY_TABLE_PREFIX": "m" + secrets.token_hex(4),
        "IDENTITY_ENDPOINT": f"{simulator.url}/msi/token",
        "IDENTITY_HEADER": "local",
    }
    keys = create_subscription("mi-team", env=env)
    apply(env, "global", (SAMPLES / "managed-identity-retry.xml").read_text(), tmp_path)
    gateway = start_gateway(env)
    simulator.clear_requests()
    httpx.post(f"{simulator.url}/sim/faults", json={"status": 429, "count": 2, "retry_after": 0.1})
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after retries"}])
    assert answer.choices[0].message.content == "Simulated answer to: after retries"
    seen = simulator.requests()
    assert len(seen) == 3  # two throttled attempts, then success
    assert all(r["headers"]["authorization"].startswith("Bearer sim-mi-") for r in seen)
    assert all(keys.primary not in repr(r) for r in seen)


def test_cli_check_show_list_effective_delete(policy_env: dict[str, str], tmp_path: Path) -> None:
    env = {**policy_env, "GATEWAY_TABLE_PREFIX": "c" + secrets.token_hex(4)}
    runner = CliRunner()
    sample = SAMPLES / "model-routing.xml"
    checked = runner.invoke(cli, ["policies", "check", str(sample), "--scope", "api:openai"], env=env)
    assert checked.exit_code == 0 and "OK" in checked.output
    assert runner.invoke(cli, ["policies", "apply", str(sample), "--scope", "api:openai"], env=env).exit_code == 0
    shown = runner.invoke(cli, ["policies", "show", "--scope", "api:openai"], env=env)
    assert shown.output.strip() == sample.read_text().strip()
    listed = json.loads(runner.invoke(cli, ["policies", "list"], env=env).output)
    assert listed["version"] == 1 and list(listed["scopes"]) == ["api:openai"]
    effective = runner.invoke(cli, ["policies", "effective", "--operation", "ChatCompletions_Create"], env=env)
    assert effective.exit_code == 0
    assert effective.output.index("<choose") < effective.output.index("<forward-request")
    assert runner.invoke(cli, ["policies", "delete", "--scope", "api:openai"], env=env).exit_code == 0
    missing = runner.invoke(cli, ["policies", "show", "--scope", "api:openai"], env=env)
    assert missing.exit_code == 1 and "policies list" in missing.output


CORS = """<policies>
  <inbound>
    <cors allow-credentials="false">
      <allowed-origins><origin>https://chat.contoso.com</origin></allowed-origins>
      <allowed-methods preflight-result-max-age="600"><method>POST</method></allowed-methods>
      <allowed-headers><header>content-type</header><header>api-key</header></allowed-headers>
      <expose-headers><header>x-ms-region</header></expose-headers>
    </cors>
    <base />
  </inbound>
</policies>"""


def test_cors_preflight_without_key_and_cors_headers_on_answers(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], policy_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    env = {**policy_env, "GATEWAY_TABLE_PREFIX": "o" + secrets.token_hex(4)}
    keys = create_subscription("browser-team", env=env)
    apply(env, "api:openai", CORS, tmp_path)
    gateway = start_gateway(env)
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    preflight = httpx.options(
        url,
        headers={
            "Origin": "https://chat.contoso.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, api-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://chat.contoso.com"
    assert preflight.headers["access-control-max-age"] == "600"
    assert "api-key" in preflight.headers["access-control-allow-headers"]
    stranger = httpx.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers
    answer = chat(gateway, keys.primary, Origin="https://chat.contoso.com")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://chat.contoso.com"
    assert answer.headers["access-control-expose-headers"] == "x-ms-region"
    assert chat(gateway, keys.primary, Origin="https://evil.example").status_code == 403
