"""The sample policy documents under samples/, each loaded and exercised against the simulator."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.stack_helpers import metric_rows

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def sample_env(gateway_env: dict[str, str], simulator: Simulator, **extra: str) -> dict[str, str]:
    return {
        **gateway_env,
        "GATEWAY_TABLE_PREFIX": "s" + secrets.token_hex(4),
        "GATEWAY_POLICY_QUEUE": "updates-" + secrets.token_hex(4),
        "GATEWAY_METRICS_FLUSH_SECONDS": "0.5",
        "GATEWAY_PRODUCTS": json.dumps({"gold": ["openai", "openai-v1"], "silver": ["openai"]}),
        "GATEWAY_BACKENDS": json.dumps([{"id": "primary", "url": simulator.url, "deployments": ["*"], "api_key_setting": "SIMULATOR_KEY"}]),
        **extra,
    }


def apply_sample(env: dict[str, str], name: str, scope: str = "global") -> None:
    result = CliRunner().invoke(cli, ["policies", "apply", str(SAMPLES / name), "--scope", scope], env=env)
    assert result.exit_code == 0, result.output


def chat(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": key},
        json={"messages": [{"role": "user", "content": "quota please"}]},
    )


def test_every_sample_is_a_valid_document(gateway_env: dict[str, str], simulator: Simulator) -> None:
    backends = [{"id": name, "url": simulator.url} for name in ("primary", "secondary")]
    backends += [
        {"id": name, "url": simulator.url, "embeddings_deployment": "text-embedding-3-small"} for name in ("embeddings-backend", "simulator")
    ]
    backends.append({"id": "gpt-4o-pool", "type": "pool", "pool": {"services": [{"id": "primary"}, {"id": "secondary"}]}})
    env = sample_env(gateway_env, simulator, GATEWAY_BACKENDS=json.dumps(backends))
    for sample in sorted(SAMPLES.glob("*.xml")):
        result = CliRunner().invoke(cli, ["policies", "check", str(sample)], env=env)
        assert result.exit_code == 0, f"{sample.name}: {result.output}"


def test_per_product_quota_sample(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    simulator: Simulator,
    create_subscription: Callable[..., Keys],
) -> None:
    env = sample_env(gateway_env, simulator)
    gold, silver = create_subscription("gold-team", "product:gold", env=env), create_subscription("silver-team", "product:silver", env=env)
    apply_sample(env, "per-product-quota.xml")
    gateway = start_gateway(env)
    first, second = chat(gateway, gold.primary), chat(gateway, gold.primary)
    assert first.status_code == second.status_code == 200
    quota = [int(r.headers["x-remaining-quota-tokens"]) for r in (first, second)]
    assert quota[0] > quota[1] and quota[0] <= 1_000_000
    plain = chat(gateway, silver.primary)
    assert plain.status_code == 200 and "x-remaining-quota-tokens" not in plain.headers
    deadline = time.monotonic() + 10
    products: dict[str, int] = {}
    while time.monotonic() < deadline:
        products = {}
        for row in metric_rows(env):
            product = json.loads(row["dimensions"])["Product"]
            requests = row["requests"]
            products[product] = products.get(product, 0) + int(getattr(requests, "value", requests))
        if products == {"gold": 2, "silver": 1}:
            break
        time.sleep(0.1)
    assert products == {"gold": 2, "silver": 1}


def test_zero_to_production_sample_fails_over_in_the_pool_with_managed_identity(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    simulator: Simulator,
    create_subscription: Callable[..., Keys],
) -> None:
    backends = [
        {"id": "ptu", "url": simulator.url, "deployments": ["*"], "managed_identity": True},
        {"id": "paygo", "url": simulator.url, "deployments": ["*"], "managed_identity": True},
        {
            "id": "gpt-4o-pool",
            "type": "pool",
            "deployments": ["gpt-4o"],
            "pool": {"services": [{"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2}]},
        },
    ]
    env = sample_env(
        gateway_env, simulator, GATEWAY_BACKENDS=json.dumps(backends), IDENTITY_ENDPOINT=f"{simulator.url}/msi/token", IDENTITY_HEADER="local"
    )
    keys = create_subscription("production", env=env)
    apply_sample(env, "zero-to-production.xml")
    gateway = start_gateway(env)
    simulator.clear_requests()
    httpx.post(f"{simulator.url}/sim/faults", json={"status": 429, "count": 1, "retry_after": 30})
    answer = chat(gateway, keys.primary)
    assert answer.status_code == 200, answer.text
    assert int(answer.headers["x-remaining-tokens"]) < 100_000
    seen = simulator.requests()
    assert len(seen) == 2  # the first member said 429 (wait 30 s), the retry went to the second
    assert all(r["headers"]["authorization"].startswith("Bearer sim-mi-") for r in seen)
    assert chat(gateway, keys.primary).status_code == 200  # the throttled member is skipped while it waits
    assert len(simulator.requests()) == 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(int(getattr(r["requests"], "value", r["requests"])) for r in metric_rows(env)) < 2:
        time.sleep(0.1)
    (row,) = metric_rows(env)
    assert json.loads(row["dimensions"])["User ID"] == "N/A"


def test_semantic_cache_sample_serves_a_paraphrase_from_cache(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    simulator: Simulator,
    create_subscription: Callable[..., Keys],
) -> None:
    backends = [
        {"id": "primary", "url": simulator.url, "deployments": ["*"], "api_key_setting": "SIMULATOR_KEY"},
        {
            "id": "embeddings-backend",
            "url": simulator.url,
            "deployments": ["text-embedding-3-small"],
            "api_key_setting": "SIMULATOR_KEY",
            "embeddings_deployment": "text-embedding-3-small",
        },
    ]
    env = sample_env(gateway_env, simulator, GATEWAY_BACKENDS=json.dumps(backends))
    keys = create_subscription("cached", env=env)
    apply_sample(env, "semantic-cache.xml")
    gateway = start_gateway(env)

    def ask(content: str) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
            params={"api-version": API_VERSION},
            headers={"api-key": keys.primary, "x-user-id": "ana"},
            json={"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]},
        )

    first = ask("What is the capital of France?")
    assert first.headers["x-semantic-cache"] == "MISS"
    deadline = time.monotonic() + 5
    while (second := ask("Tell me the capital of France, please")).headers["x-semantic-cache"] != "HIT" and time.monotonic() < deadline:
        time.sleep(0.2)  # the store is written in the background
    assert second.headers["x-semantic-cache"] == "HIT"
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert ask("How do I bake sourdough bread?").headers["x-semantic-cache"] == "MISS"
