"""The semantic cache end to end: gateway processes on Azurite and the simulator (whose embeddings put paraphrases
at distance 0 and unrelated prompts far apart), called with the openai SDK."""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.stack_helpers import number

STALENESS_SECONDS = 1.0
POLICY = """<policies>
  <inbound>
    <base />
    <azure-openai-emit-token-metric namespace="cache"><dimension name="Subscription ID" /></azure-openai-emit-token-metric>
    <choose>
      <when condition='@(context.Request.Headers.GetValueOrDefault("x-embeddings", "") == "dead")'>
        <azure-openai-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="dead-embeddings" embeddings-backend-auth="system-assigned" />
      </when>
      <otherwise>
        <llm-semantic-cache-lookup score-threshold='@(context.Request.Headers.GetValueOrDefault("x-threshold", "0.05"))'
            embeddings-backend-id="sim" embeddings-backend-auth="system-assigned" max-message-count="3"
            ignore-system-messages='@(context.Request.Headers.GetValueOrDefault("x-ignore-system", "true"))'>
          <vary-by>@(context.Request.Headers.GetValueOrDefault("x-end-user", ""))</vary-by>
        </llm-semantic-cache-lookup>
      </otherwise>
    </choose>
  </inbound>
  <outbound>
    <base />
    <choose>
      <when condition='@(!context.Request.Headers.ContainsKey("x-no-store"))'>
        <llm-semantic-cache-store duration='@(context.Request.Headers.GetValueOrDefault("x-ttl", "60"))' />
      </when>
    </choose>
  </outbound>
</policies>"""


@pytest.fixture(scope="module")
def cache_env(gateway_env: dict[str, str], simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {
        **gateway_env,
        "GATEWAY_TABLE_PREFIX": "c" + secrets.token_hex(4),
        "GATEWAY_POLICY_POLL_SECONDS": "0.3",
        "GATEWAY_LOCAL_QUEUE_WORKER": "false",
        "GATEWAY_METRICS_FLUSH_SECONDS": "0.5",
        "GATEWAY_SEMANTIC_CACHE_STALENESS_SECONDS": str(STALENESS_SECONDS),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "sim", "url": simulator.url, "api_key_setting": "SIMULATOR_KEY", "embeddings_deployment": "text-embedding-3-small"},
                {"id": "dead-embeddings", "url": f"http://127.0.0.1:{devstack.free_port()}", "deployments": ["none"], "embeddings_deployment": "emb"},
            ]
        ),
    }
    path = tmp_path_factory.mktemp("cache-policy") / "policy.xml"
    path.write_text(POLICY)
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "global"], env=env)
    assert result.exit_code == 0, result.output
    return env


@pytest.fixture(scope="module")
def start_logged(
    azurite: devstack.AzuritePorts, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, str]], tuple[GatewayProcess, Path]]]:
    """Start a gateway process whose log goes to a file."""
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(env: dict[str, str]) -> tuple[GatewayProcess, Path]:
        port = devstack.free_port()
        log = tmp_path_factory.mktemp("gateway-log") / "gateway.log"
        handle = log.open("wb")
        command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
        process = subprocess.Popen(command, env={**os.environ, **env}, cwd=devstack.REPO_ROOT, stdout=handle, stderr=handle)
        started.append((process, handle))
        devstack.wait_for_port(port, process)
        return GatewayProcess(f"http://127.0.0.1:{port}", env, process), log

    yield start
    for process, handle in started:
        devstack.stop(process)
        handle.close()


@pytest.fixture(scope="module")
def gateways(start_logged: Callable[[dict[str, str]], tuple[GatewayProcess, Path]], cache_env: dict[str, str]) -> list[tuple[GatewayProcess, Path]]:
    return [start_logged(cache_env), start_logged(cache_env)]


@pytest.fixture(scope="module")
def team(create_subscription: Callable[..., Keys], cache_env: dict[str, str]) -> Keys:
    return create_subscription("cache-team", env=cache_env)


def word() -> str:
    """A word no other test uses, so every test has prompts of its own."""
    return "w" + secrets.token_hex(4)


def ask(
    gateway: GatewayProcess, key: str, *messages: tuple[str, str], headers: dict[str, str] | None = None, **params: Any
) -> tuple[httpx.Headers, Any]:
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=key, api_version=API_VERSION, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": role, "content": content} for role, content in messages], extra_headers=headers or {}, **params
    )
    return raw.headers, raw.parse()


def user(text: str) -> tuple[str, str]:
    return ("user", text)


def chat_calls(simulator: Simulator) -> int:
    return sum(1 for r in simulator.requests() if r["path"].endswith("/chat/completions"))


def outcome(headers: httpx.Headers) -> tuple[str, float | None]:
    distance = headers.get("x-semantic-cache-distance")
    return headers["x-semantic-cache"], None if distance is None else float(distance)


def metric_sum(env: dict[str, str], field: str) -> int:
    table = TableClient.from_connection_string(env["GATEWAY_STORAGE_CONNECTION"], env["GATEWAY_TABLE_PREFIX"] + "metrics")
    try:
        rows = list(table.list_entities())
    except Exception:  # no metrics flushed yet
        return 0
    return sum(number(r[field]) for r in rows if field in r)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_paraphrase_hits_unrelated_prompt_misses(
    gateways: list[tuple[GatewayProcess, Path]], team: Keys, simulator: Simulator, cache_env: dict[str, str]
) -> None:
    (gateway, _), _ = gateways
    w = word()
    headers, first = ask(gateway, team.primary, user(f"What is the capital of {w}?"))
    assert outcome(headers) == ("MISS", None)  # a partition of its own: nothing to compare with
    hits_before = metric_sum(cache_env, "cacheHits")
    simulator.clear_requests()
    headers, second = ask(gateway, team.primary, user(f"Please tell me the capital of {w}."))
    assert outcome(headers) == ("HIT", 0.0)
    assert chat_calls(simulator) == 0  # answered from the cache (only the embedding was requested)
    assert second.choices[0].message.content == first.choices[0].message.content == f"Simulated answer to: What is the capital of {w}?"
    assert second.usage.total_tokens == first.usage.total_tokens  # type: ignore[union-attr]
    timing = headers["server-timing"]
    assert "embedding;dur=" in timing and "cache;dur=" in timing and "upstream" not in timing
    headers, third = ask(gateway, team.primary, user(f"How do I bake sourdough bread for {word()}?"))
    status, distance = outcome(headers)
    assert status == "MISS" and distance is not None and distance > 0.5
    assert third.choices[0].message.content.startswith("Simulated answer to: How do I bake")
    # Token metrics count the hit and what it saved.
    assert wait_until(lambda: metric_sum(cache_env, "cacheHits") == hits_before + 1)
    assert metric_sum(cache_env, "savedTokens") >= first.usage.total_tokens  # type: ignore[union-attr]


def test_completions_are_cached_too(gateways: list[tuple[GatewayProcess, Path]], team: Keys, simulator: Simulator) -> None:
    (gateway, _), _ = gateways
    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=team.primary, api_version=API_VERSION, max_retries=0)
    w = word()
    first = client.completions.with_raw_response.create(model="gpt-4o", prompt=f"Write a haiku about {w}")
    assert first.headers["x-semantic-cache"] == "MISS"
    simulator.clear_requests()
    second = client.completions.with_raw_response.create(model="gpt-4o", prompt=f"write haiku {w}")
    assert second.headers["x-semantic-cache"] == "HIT"
    assert second.parse().choices[0].text == first.parse().choices[0].text
    assert not any(r["path"].endswith("/completions") for r in simulator.requests())


def test_threshold_boundary(gateways: list[tuple[GatewayProcess, Path]], team: Keys, simulator: Simulator) -> None:
    (gateway, _), _ = gateways
    w = word()
    stored, other = f"capital {w} population", f"capital {w} population climate"
    ask(gateway, team.primary, user(stored))
    headers, _ = ask(gateway, team.primary, user(other), headers={"x-no-store": "1"})
    status, distance = outcome(headers)
    assert status == "MISS" and distance is not None and 0.05 < distance < 0.5
    # The distance is 1 - cosine of the embeddings of exactly what the docs say is embedded.
    vectors = httpx.post(
        f"{simulator.url}/openai/deployments/text-embedding-3-small/embeddings",
        params={"api-version": API_VERSION},
        headers={"api-key": simulator.api_key},
        json={"input": [f"user: {stored}", f"user: {other}"]},
    ).json()["data"]
    a, b = (v["embedding"] for v in vectors)
    cosine = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    assert distance == pytest.approx(1 - cosine, abs=1e-4)
    above, _ = ask(gateway, team.primary, user(other), headers={"x-no-store": "1", "x-threshold": f"{distance + 0.0002:.4f}"})
    below, _ = ask(gateway, team.primary, user(other), headers={"x-no-store": "1", "x-threshold": f"{distance - 0.0002:.4f}"})
    assert outcome(above)[0] == "HIT" and outcome(below)[0] == "MISS"


def test_vary_by_and_subscriptions_never_share_entries(
    gateways: list[tuple[GatewayProcess, Path]], team: Keys, create_subscription: Callable[..., Keys], cache_env: dict[str, str], simulator: Simulator
) -> None:
    (gateway, _), _ = gateways
    w = word()
    question, paraphrase = user(f"Which rivers flow through {w}?"), user(f"Tell me which rivers flow through {w}")
    ask(gateway, team.primary, question, headers={"x-end-user": "alice"})
    assert outcome(ask(gateway, team.primary, paraphrase, headers={"x-end-user": "alice", "x-no-store": "1"})[0])[0] == "HIT"
    assert outcome(ask(gateway, team.primary, paraphrase, headers={"x-end-user": "bob", "x-no-store": "1"})[0]) == ("MISS", None)
    assert outcome(ask(gateway, team.primary, paraphrase, headers={"x-no-store": "1"})[0])[0] == "MISS"
    # Another subscription, with an empty vary-by like the first one's unvaried entry: never sees it.
    ask(gateway, team.primary, question)
    assert outcome(ask(gateway, team.primary, paraphrase, headers={"x-no-store": "1"})[0])[0] == "HIT"
    other = create_subscription("other-team", env=cache_env)
    simulator.clear_requests()
    headers, _ = ask(gateway, other.primary, paraphrase)
    assert outcome(headers) == ("MISS", None) and chat_calls(simulator) == 1


def test_ttl_expiry_and_the_cleanup_trigger(
    gateways: list[tuple[GatewayProcess, Path]], team: Keys, cache_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (gateway, _), _ = gateways
    w = word()
    own = {"x-end-user": w}  # a partition of its own, so the only candidate is the expiring entry
    stored = time.monotonic()
    ask(gateway, team.primary, user(f"Summarise the history of {w}"), headers={**own, "x-ttl": "4"})
    assert outcome(ask(gateway, team.primary, user(f"summarise history {w}"), headers={**own, "x-no-store": "1"})[0])[0] == "HIT"
    time.sleep(max(0.0, stored + 4.2 - time.monotonic()))
    assert outcome(ask(gateway, team.primary, user(f"summarise history {w}"), headers={**own, "x-no-store": "1"})[0]) == ("MISS", None)

    from azure.functions.timer import TimerRequest

    import function_app
    from gateway.hosts import local as hosting

    for name, value in cache_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hosting, "_current", None)

    async def clean() -> None:
        try:
            await function_app.semantic_cache_cleanup(TimerRequest())
        finally:
            await hosting.current_gateway().close()

    asyncio.run(clean())
    table = TableClient.from_connection_string(cache_env["GATEWAY_STORAGE_CONNECTION"], cache_env["GATEWAY_TABLE_PREFIX"] + "semanticcache")
    now = datetime.now(UTC)
    rows = list(table.list_entities(select=["ExpiresAt"]))
    assert rows and all(row["ExpiresAt"] > now for row in rows)  # the expired one is gone, the others stay


def test_max_message_count_and_ignore_system_messages(gateways: list[tuple[GatewayProcess, Path]], team: Keys) -> None:
    (gateway, _), _ = gateways
    w = word()
    turns = [user(f"hello {w}"), ("assistant", "hi"), user("how are you"), ("assistant", "fine")]
    assert outcome(ask(gateway, team.primary, *turns, user("and you?"))[0])[0] == "BYPASS"  # 5 messages > 3
    system = ("system", f"You are an expert on {w} geography, climate, economy, culture, cuisine and history.")
    assert outcome(ask(gateway, team.primary, system, *turns[:2], user("tell me more"))[0])[0] == "MISS"  # system not counted

    question, unrelated = user(f"best season to visit {w}"), user("translate good morning into french")
    for ignore in ("true", "false"):
        ask(gateway, team.primary, system, question, headers={"x-ignore-system": ignore})
    distances = {}
    for ignore in ("true", "false"):
        headers, _ = ask(gateway, team.primary, system, unrelated, headers={"x-ignore-system": ignore, "x-no-store": "1"})
        distances[ignore] = outcome(headers)[1]
    # Embedded, the long shared system prompt makes unrelated questions look alike; ignored, it does not.
    assert distances["false"] < 0.5 < distances["true"]  # type: ignore[operator]
    paraphrase = user(f"which is the best season to visit {w}?")
    assert outcome(ask(gateway, team.primary, system, paraphrase, headers={"x-no-store": "1"})[0])[0] == "HIT"
    # An ignored system prompt still partitions: another one never gets these answers.
    other_system = ("system", "Answer in the style of a pirate.")
    assert outcome(ask(gateway, team.primary, other_system, paraphrase, headers={"x-no-store": "1"})[0]) == ("MISS", None)


def test_streamed_answers_are_stored_and_hits_replayed_as_streams(
    gateways: list[tuple[GatewayProcess, Path]], team: Keys, simulator: Simulator
) -> None:
    (gateway, _), _ = gateways
    w = word()
    headers, stream = ask(gateway, team.primary, user(f"Describe the flag of {w}"), stream=True)
    assert outcome(headers)[0] == "MISS"
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == f"Simulated answer to: Describe the flag of {w}"
    paraphrase = user(f"describe {w} flag")
    # Stored when the stream ended (the client may see [DONE] a moment before).
    assert wait_until(lambda: outcome(ask(gateway, team.primary, paraphrase, headers={"x-no-store": "1"})[0])[0] == "HIT")
    simulator.clear_requests()
    headers, answer = ask(gateway, team.primary, paraphrase, headers={"x-no-store": "1"})
    assert answer.choices[0].message.content == streamed and answer.usage.total_tokens > 0  # type: ignore[union-attr]
    headers, stream = ask(gateway, team.primary, paraphrase, stream=True, stream_options={"include_usage": True})
    assert outcome(headers)[0] == "HIT" and headers["content-type"].startswith("text/event-stream")
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == streamed
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == answer.usage.total_tokens  # type: ignore[union-attr]
    _, stream = ask(gateway, team.primary, paraphrase, stream=True)
    assert all(c.usage is None for c in stream)
    assert chat_calls(simulator) == 0


def test_an_entry_stored_by_one_process_is_served_by_the_other(gateways: list[tuple[GatewayProcess, Path]], team: Keys) -> None:
    (first, _), (second, _) = gateways
    w = word()
    own = {"x-end-user": w}  # a partition of its own
    ask(first, team.primary, user(f"What language is spoken in {w}?"), headers=own)
    # The second process loads the partition with that entry; from then on it reads only what is newer.
    paraphrase = user(f"Tell me which language is spoken in {w}")
    assert wait_until(lambda: outcome(ask(second, team.primary, paraphrase, headers={**own, "x-no-store": "1"})[0])[0] == "HIT")
    ask(first, team.primary, user(f"What currency is used in {w}?"), headers=own)
    stored = time.monotonic()
    paraphrase = user(f"Which currency is used in {w}")
    assert wait_until(lambda: outcome(ask(second, team.primary, paraphrase, headers={**own, "x-no-store": "1"})[0])[0] == "HIT")
    # The staleness bound, plus the background table write and one table query.
    assert time.monotonic() - stored <= STALENESS_SECONDS + 0.5


def test_dead_embeddings_backend_fails_open_and_is_logged_once(gateways: list[tuple[GatewayProcess, Path]], team: Keys) -> None:
    (gateway, log), _ = gateways
    for _ in range(3):
        started = time.monotonic()
        headers, answer = ask(gateway, team.primary, user(f"anything about {word()}"), headers={"x-embeddings": "dead"})
        assert outcome(headers)[0] == "BYPASS" and answer.choices[0].message.content.startswith("Simulated answer")
        assert time.monotonic() - started < 1.0
    assert wait_until(lambda: "embeddings backend 'dead-embeddings' cannot be reached" in log.read_text())
    assert log.read_text().count("embeddings backend 'dead-embeddings'") == 1


def test_unreachable_cache_storage_fails_open_and_is_logged_once(
    start_logged: Callable[[dict[str, str]], tuple[GatewayProcess, Path]], cache_env: dict[str, str], team: Keys
) -> None:
    dead = devstack.free_port()
    env = {
        **cache_env,
        "GATEWAY_SEMANTIC_CACHE_CONNECTION": devstack.AzuritePorts(dead, dead, dead).connection_string(),
        "GATEWAY_SEMANTIC_CACHE_TIMEOUT_SECONDS": "0.5",
    }
    gateway, log = start_logged(env)
    for _ in range(4):
        started = time.monotonic()
        headers, answer = ask(gateway, team.primary, user(f"what about {word()}"))
        assert outcome(headers)[0] == "BYPASS" and answer.choices[0].message.content.startswith("Simulated answer")
        assert time.monotonic() - started < 1.0
    assert wait_until(lambda: "reading the semantic cache table failed" in log.read_text())
    assert log.read_text().count("Semantic cache:") == 1


def test_memory_cap_evicts_from_an_instances_memory_while_the_table_keeps_the_entries(
    start_logged: Callable[[dict[str, str]], tuple[GatewayProcess, Path]],
    gateways: list[tuple[GatewayProcess, Path]],
    cache_env: dict[str, str],
    team: Keys,
) -> None:
    capped, _ = start_logged({**cache_env, "GATEWAY_SEMANTIC_CACHE_MAX_MIB": "0.01"})
    _, (other, _) = gateways
    w = word()
    own = {"x-end-user": w}  # a partition of its own
    for thing in ("capital", "population", "currency", "climate", "anthem", "flag", "cuisine", "language"):
        assert outcome(ask(capped, team.primary, user(f"What is the {thing} of {w}?"), headers=own)[0])[0] == "MISS"
    # Eight entries of about 2 KB against a cap of 10 KiB: the first ones left this instance's memory ...
    first, last = user(f"Tell me the capital of {w}"), user(f"Tell me the language of {w}")
    status, distance = outcome(ask(capped, team.primary, first, headers={**own, "x-no-store": "1"})[0])
    assert status == "MISS" and distance is not None and distance > 0.05  # the nearest is another question now
    assert outcome(ask(capped, team.primary, last, headers={**own, "x-no-store": "1"})[0]) == ("HIT", 0.0)
    # ... but not the table: an instance that loads the partition has them all.
    assert wait_until(lambda: outcome(ask(other, team.primary, first, headers={**own, "x-no-store": "1"})[0])[0] == "HIT")
