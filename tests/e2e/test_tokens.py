"""Token limits and token metrics end to end: gateway processes sharing Azurite, the simulator, the openai SDK."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.stack_helpers import (
    apply,
    metric_rows,
    metric_sum,
    token_env,
    wait_for_metric,
)

METRIC_POLICY = """<policies><inbound><base />
  <azure-openai-emit-token-metric namespace="tests">
    <dimension name="Subscription ID" /><dimension name="Operation ID" />
    <dimension name="Team" value="@(context.Request.Headers.GetValueOrDefault(&quot;x-team&quot;, &quot;none&quot;))" />
  </azure-openai-emit-token-metric>
  {extra}
</inbound></policies>"""


def client(gateway: GatewayProcess, key: str, api_version: str = API_VERSION) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=gateway.url, api_key=key, api_version=api_version, max_retries=0)


MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]
#: What the simulator reports for MESSAGES: 8 prompt words, "Simulated answer to:" + 8 words.
EXPECTED_TOTAL = 8 + 11


@pytest.fixture(scope="module")
def metered(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    create_subscription: Callable[..., Keys],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[GatewayProcess, dict[str, str], Keys]:
    env = token_env(gateway_env)
    keys = create_subscription("metered", env=env)
    apply(env, METRIC_POLICY.format(extra=""), tmp_path_factory.mktemp("metered"))
    return start_gateway(env), env, keys


def test_stream_without_include_usage_is_counted_exactly_and_usage_chunk_stripped(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    before = metric_sum(env, "total")
    chunks = list(client(gateway, keys.primary).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask: no usage chunk reaches it
    assert all(chunk.choices for chunk in chunks)
    assert wait_for_metric(env, "total", before + EXPECTED_TOTAL) == before + EXPECTED_TOTAL


def test_stream_with_include_usage_keeps_the_chunk(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    before = metric_sum(env, "total")
    chunks = list(
        client(gateway, keys.primary).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == EXPECTED_TOTAL
    assert wait_for_metric(env, "total", before + EXPECTED_TOTAL) == before + EXPECTED_TOTAL


def test_stream_on_old_api_version_is_estimated_with_tiktoken(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    before_total, before_estimated = metric_sum(env, "total"), metric_sum(env, "estimated")
    list(client(gateway, keys.primary, "2024-02-01").chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert wait_for_metric(env, "estimated", before_estimated + 1) == before_estimated + 1
    added = metric_sum(env, "total") - before_total
    # tiktoken: the prompt with chat overhead, and the 11 streamed words of the answer.
    assert 8 + 11 <= added <= 8 + 11 + 15


def test_aborted_stream_is_charged_for_what_was_relayed(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    before_completion = metric_sum(env, "completion")
    before_estimated = metric_sum(env, "estimated")
    body = {"messages": [{"role": "user", "content": " ".join(["word"] * 40)}], "stream": True}
    with httpx.stream(
        "POST",
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "x-sim-token-ms": "40"},
        json=body,
        timeout=10,
    ) as response:
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            if received.count(b"data: ") >= 6:  # role chunk + 5 tokens, then hang up
                break
    assert wait_for_metric(env, "estimated", before_estimated + 1) == before_estimated + 1
    charged = metric_sum(env, "completion") - before_completion
    assert 5 <= charged <= 12  # what was relayed (a token or two may be in flight), not the 43 the answer had


def test_non_streaming_and_embeddings_metrics_with_dimensions(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    azure = client(gateway, keys.primary)
    before_prompt = metric_sum(env, "prompt")
    azure.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-team": "blue"})
    azure.embeddings.create(model="text-embedding-3-small", input="alpha beta gamma", extra_headers={"x-team": "blue"})
    assert wait_for_metric(env, "prompt", before_prompt + 8 + 3) == before_prompt + 8 + 3
    dimensions = [json.loads(r["dimensions"]) for r in metric_rows(env) if json.loads(r["dimensions"]).get("Team") == "blue"]
    assert {d["Operation ID"] for d in dimensions} == {"ChatCompletions_Create", "embeddings_create"}
    assert {d["Subscription ID"] for d in dimensions} == {keys.subscription.id}


def test_token_limit_refuses_with_429_then_admits_in_next_window(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    env = token_env(gateway_env, GATEWAY_TOKEN_RATE_WINDOW_SECONDS="3")
    keys = create_subscription("limited", env=env)
    limit = '<azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="200" estimate-prompt-tokens="true" remaining-tokens-header-name="x-remaining-tokens" tokens-consumed-header-name="x-consumed-tokens" />'
    apply(env, METRIC_POLICY.format(extra=limit), tmp_path)
    gateway = start_gateway(env)

    def call() -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
            params={"api-version": API_VERSION},
            headers={"api-key": keys.primary},
            json={"messages": MESSAGES, "max_tokens": 20},
        )

    time.sleep(3 - time.time() % 3 + 0.05)  # start at the beginning of a window
    admitted = []
    while (response := call()).status_code == 200:
        admitted.append(response)
        assert int(response.headers["x-consumed-tokens"]) == EXPECTED_TOTAL
    refused = response
    # Each request reserves its tiktoken prompt estimate (~18) + max_tokens (20) and settles to 19 used.
    assert 4 <= len(admitted) <= 10
    remaining = [int(r.headers["x-remaining-tokens"]) for r in admitted]
    assert remaining == sorted(remaining, reverse=True)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 3
    assert refused.json()["error"]["message"] == f"Token limit is exceeded. Try again in {retry_after} seconds."
    time.sleep(retry_after + 0.1)
    answer = client(gateway, keys.primary).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
    assert answer.usage is not None and answer.usage.total_tokens == EXPECTED_TOTAL


def test_two_processes_share_one_limit_per_window(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    window, limit = 4.0, 3000
    env = token_env(gateway_env, GATEWAY_TOKEN_RATE_WINDOW_SECONDS=str(window), GATEWAY_LEASE_FRACTION="0.05")
    keys = create_subscription("shared-limit", env=env)
    apply(
        env,
        f'<policies><inbound><base /><llm-token-limit counter-key="org-wide" tokens-per-minute="{limit}" estimate-prompt-tokens="true" /></inbound></policies>',
        tmp_path,
    )
    gateways = [start_gateway(env), start_gateway(env)]
    # Start on a window boundary so every window is fully covered except the last.
    time.sleep(math.ceil(time.time() / window) * window - time.time() + 0.05)
    start = time.time()
    admitted: dict[int, int] = {}
    straddling: dict[int, int] = {}
    refused = 0
    lock = threading.Lock()

    def worker(seed: int) -> None:
        nonlocal refused
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as http:
            while time.time() - start < 2.5 * window:
                gateway = gateways[seed % 2]
                sent = time.time()
                response = http.post(
                    f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
                    params={"api-version": API_VERSION},
                    headers={"api-key": keys.primary},
                    json={"messages": MESSAGES, "max_tokens": rng.randint(2, 30)},
                )
                done = time.time()
                with lock:
                    if response.status_code == 200:
                        index = int(sent // window)
                        total = response.json()["usage"]["total_tokens"]
                        admitted[index] = admitted.get(index, 0) + total
                        if int(done // window) != index:  # admitted on either side of a boundary
                            straddling[index] = straddling.get(index, 0) + total
                    else:
                        assert response.status_code == 429, response.text
                        refused += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    windows = sorted(admitted)
    assert len(windows) >= 3 and refused > 0
    lease = math.ceil(limit * 0.05)
    for index in windows:
        # No overshoot beyond what straddled a boundary (leases never exceed the limit; max_tokens bounds answers).
        assert admitted[index] - straddling.get(index, 0) <= limit, (index, admitted)
    for index in windows[:2]:  # fully covered windows with demand far above the limit
        # Under-use at most N x lease, plus refunds of the last requests, plus one request.
        assert admitted[index] >= limit - 2 * lease - 2 * 60, (index, admitted)


def test_metrics_sums_match_usage_across_two_processes_and_a_restart(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    env = token_env(gateway_env, GATEWAY_METRICS_FLUSH_SECONDS="30")  # only shutdown flushes in time
    keys = create_subscription("restart", env=env)
    apply(env, METRIC_POLICY.format(extra=""), tmp_path)
    first, second = start_gateway(env), start_gateway(env)
    expected = 0

    def traffic(gateway: GatewayProcess, count: int) -> int:
        total = 0
        azure = client(gateway, keys.primary)
        for i in range(count):
            messages = [{"role": "user", "content": " ".join(["w"] * (i + 1))}]
            if i % 2:
                total += azure.chat.completions.create(model="gpt-4o", messages=messages).usage.total_tokens  # type: ignore[union-attr]
            else:
                chunks = list(azure.chat.completions.create(model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}))
                total += chunks[-1].usage.total_tokens  # type: ignore[union-attr]
        return total

    expected += traffic(first, 10) + traffic(second, 10)
    devstack.stop(first.process)  # graceful: flushes what it aggregated
    restarted = start_gateway(env)
    expected += traffic(restarted, 6)
    devstack.stop(restarted.process)
    devstack.stop(second.process)
    assert metric_sum(env, "total") == expected
    assert metric_sum(env, "requests") == 26
    assert len({r["instance"] for r in metric_rows(env)}) == 3  # append-only per instance
    report = CliRunner().invoke(cli, ["usage", "--since", "1h", "--by", "subscription", "--json"], env=env)
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.output)
    assert row["group"] == keys.subscription.id and row["total"] == expected and row["requests"] == 26
    by_team = json.loads(CliRunner().invoke(cli, ["usage", "--by", "dimension:Team", "--json"], env=env).output)
    assert by_team[0]["group"] == "none" and by_team[0]["total"] == expected


@pytest.mark.parametrize("depth", [65, 2_000])
def test_deeply_nested_json_is_refused_before_any_policy_or_backend(
    metered: tuple[GatewayProcess, dict[str, str], Keys], simulator: Simulator, depth: int
) -> None:
    gateway, _, keys = metered
    before = simulator.stats()["requests"]
    nested = '{"messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    response = httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "content-type": "application/json"},
        content=nested,
    )
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "BadRequest", "message": "The request body is nested deeper than 64 levels of arrays and objects."}}
    assert simulator.stats()["requests"] == before  # never forwarded
