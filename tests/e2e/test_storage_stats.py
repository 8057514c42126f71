"""`GET /ops/storage` through a gateway process: its storage calls, entities read and lost races per table, behind
the admin key (docs/scale.md; bench/scale.py reads it)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import httpx
from openai import AzureOpenAI

from tests.conftest import GatewayProcess, Keys

ADMIN_KEY = "admin-" + secrets.token_hex(12)
API_VERSION = "2024-10-21"


def test_storage_calls_per_table_need_the_admin_key_and_grow_with_use(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys]
) -> None:
    env = {**gateway_env, "GATEWAY_TABLE_PREFIX": "o" + secrets.token_hex(4), "GATEWAY_ADMIN_KEY": ADMIN_KEY,
           "GATEWAY_HEALTH_SYNC_SECONDS": "0.2", "GATEWAY_LOCAL_QUEUE_WORKER": "false"}  # fmt: skip
    keys = create_subscription("storage-stats", env=env)
    gateway = start_gateway(env)
    assert httpx.get(f"{gateway.url}/ops/storage").status_code == 401

    def stats() -> dict[str, dict[str, int]]:
        response = httpx.get(f"{gateway.url}/ops/storage", headers={"x-admin-key": ADMIN_KEY})
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    before = stats()
    azure = AzureOpenAI(azure_endpoint=gateway.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0)
    azure.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}], max_tokens=5)
    time.sleep(0.5)  # two health polls
    after = stats()
    assert after["calls"]["subscriptions"] >= before["calls"].get("subscriptions", 0) + 2  # key index, then the subscription
    assert after["rowsRead"]["subscriptions"] >= before["rowsRead"].get("subscriptions", 0) + 2
    assert after["calls"]["backendtrips"] >= before["calls"].get("backendtrips", 0) + 2  # one point read per poll
    assert "backendhealth" not in after["rowsRead"]  # no poll lists the per-instance rows
    assert after["conflicts"] == {}
