"""The sample policy documents under samples/, each loaded and exercised against the simulator."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner

from gateway.cli import main as cli
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.test_e2e_tokens import metric_rows

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


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
    env = sample_env(gateway_env, simulator, GATEWAY_BACKENDS=json.dumps(
        [{"id": name, "url": simulator.url} for name in ("primary", "secondary", "embeddings-backend", "gpt-4o-pool")]
    ))
    for sample in sorted(SAMPLES.glob("*.xml")):
        result = CliRunner().invoke(cli, ["policies", "check", str(sample)], env=env)
        assert result.exit_code == 0, f"{sample.name}: {result.output}"


def test_per_product_quota_sample(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], simulator: Simulator, create_subscription: Callable[..., Keys]
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
