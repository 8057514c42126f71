"""Liveness answers while the process serves; readiness says whether policies are loaded and storage answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from starlette.responses import Response

from gateway.config.settings import Settings
from gateway.handling.gateway import Gateway
from gateway.hosts import health
from gateway.stores.memory import MemoryTables

ENV = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 24, "GATEWAY_POLICY_POLL_SECONDS": "0.05"}


@pytest.fixture
async def gateway(memory_tables: MemoryTables) -> AsyncIterator[Gateway]:
    gateway = Gateway(Settings.from_env(ENV), memory_tables)
    yield gateway
    memory_tables.outage = False
    await gateway.close()


def test_liveness_needs_no_gateway() -> None:
    response = health.liveness()
    assert response.status_code == 200 and orjson.loads(response.body)["status"] == "ok"


async def test_ready_when_policies_loaded_and_storage_answers(gateway: Gateway) -> None:
    response = await health.readiness(gateway)  # starts the gateway: nothing else did
    assert response.status_code == 200
    body = orjson.loads(response.body)
    assert body["status"] == "ready"
    assert body["storage"] == {"available": True, "unavailableSince": None, "lastError": None}
    assert body["policies"] == {"loaded": True}
    assert response.headers["cache-control"] == "no-store"


async def test_not_ready_during_a_storage_outage_with_since_and_last_error(gateway: Gateway, memory_tables: MemoryTables) -> None:
    assert (await health.readiness(gateway)).status_code == 200
    memory_tables.outage = True
    response = await _readiness_becomes(gateway, 503)  # the next policy poll finds storage down
    body = orjson.loads(response.body)
    assert body["status"] == "not-ready"
    assert body["storage"]["available"] is False
    assert isinstance(body["storage"]["unavailableSince"], float) and body["storage"]["lastError"] == "outage"
    assert body["policies"] == {"loaded": True}  # the last good set stays in force
    memory_tables.outage = False
    await _readiness_becomes(gateway, 200)


async def test_not_ready_until_policies_load(gateway: Gateway, memory_tables: MemoryTables) -> None:
    memory_tables.outage = True  # storage down from the start: no policy set can load
    response = await health.readiness(gateway)
    assert response.status_code == 503
    assert orjson.loads(response.body)["policies"] == {"loaded": False}
    memory_tables.outage = False
    response = await _readiness_becomes(gateway, 200)
    assert orjson.loads(response.body)["policies"] == {"loaded": True}


async def _readiness_becomes(gateway: Gateway, status: int) -> Response:
    """Readiness once it answers `status`; the policy poller calls storage every 0.05 s here."""
    for _ in range(250):
        response = await health.readiness(gateway)
        if response.status_code == status:
            return response
        await asyncio.sleep(0.02)
    raise AssertionError(f"readiness never answered {status}")
