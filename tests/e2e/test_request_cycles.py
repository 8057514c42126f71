"""A finished request leaves no reference cycles, so reference counting frees it and the collector has no work.

Statements hand the context callbacks that close over it (token limits, metrics, deferred counts); the
gateway drops them when the request is over. Here a gateway runs in this process (tables in memory, the
simulated backend behind it) while the collector saves whatever cyclic garbage it finds.
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from gateway.config.settings import Settings
from gateway.handling.gateway import Gateway
from gateway.hosts.local import create_local_app
from gateway.stores.memory import MemoryTables
from gateway.stores.policies import apply_document
from gateway.stores.subscriptions import KeyHasher, SubscriptionRepository
from policies.document import Scope

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
POLICY = """<policies><inbound><base />
  <llm-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="1000000" estimate-prompt-tokens="true"
                   remaining-tokens-header-name="x-remaining-tokens" />
  <llm-emit-token-metric namespace="t"><dimension name="Subscription ID" /></llm-emit-token-metric>
  <rate-limit-by-key calls="1000" renewal-period="60" counter-key="@(context.Subscription.Id)"
                     increment-condition="@(context.Response.StatusCode == 200)" />
</inbound></policies>"""
REFUSING = POLICY.replace('tokens-per-minute="1000000"', 'tokens-per-minute="1"')
#: Modules whose objects must not be left in cycles by a request.
OURS = ("gateway.", "policies.")


@pytest.fixture
async def client(gateway_env: dict[str, str], request: pytest.FixtureRequest) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    tables = MemoryTables()
    gateway = Gateway(Settings.from_env({**gateway_env, "GATEWAY_LOCAL_QUEUE_WORKER": "false"}), tables)
    await apply_document(gateway.policy_repository, Scope("global"), request.param, gateway.loader)
    _, key, _ = await SubscriptionRepository(tables.table("subscriptions"), KeyHasher(gateway_env["GATEWAY_KEY_PEPPER"])).create("t", "all")
    await gateway.start()
    transport = httpx.ASGITransport(app=create_local_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http, key
    await gateway.close()


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def ours(garbage: list[object]) -> list[str]:
    names = []
    for item in garbage:
        module = getattr(type(item), "__module__", "") or ""
        if callable(item) and hasattr(item, "__module__"):
            module = item.__module__ or ""
        if module.startswith(OURS):
            names.append(getattr(item, "__qualname__", type(item).__qualname__))
    return names


async def send(http: httpx.AsyncClient, key: str, stream: bool) -> httpx.Response:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream})
    return await http.post(CHAT, content=body, headers={"api-key": key, "content-type": "application/json"})


@pytest.mark.parametrize("client", [POLICY], indirect=True)
async def test_answered_requests_leave_no_cycles(client: tuple[httpx.AsyncClient, str], saved_garbage: list[object]) -> None:
    http, key = client
    for stream in (False, True) * 5:
        response = await send(http, key, stream)
        assert response.status_code == 200 and "x-remaining-tokens" in response.headers
    unauthorized = await http.post(CHAT, content=b"{}", headers={"api-key": "wrong"})
    assert unauthorized.status_code == 401
    gc.collect()
    assert ours(saved_garbage) == []


@pytest.mark.parametrize("client", [REFUSING], indirect=True)
async def test_refused_requests_leave_no_cycles(client: tuple[httpx.AsyncClient, str], saved_garbage: list[object]) -> None:
    http, key = client
    for stream in (False, True) * 3:
        assert (await send(http, key, stream)).status_code == 429
    gc.collect()
    assert ours(saved_garbage) == []
