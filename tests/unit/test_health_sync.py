"""Shared backend health through Table Storage (Azurite): two instances in one process, each with its own
store and registry as two processes would have; and the health report built from the rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from gateway.backends.config import parse_backends
from gateway.backends.health_sync import (
    STALE_SECONDS,
    SUMMARY_TABLE,
    TABLE,
    HealthRow,
    HealthSync,
    read_rows,
    status_report,
)
from gateway.backends.registry import BackendRegistry
from gateway.stores.memory import MemoryTables

SYNC = 0.1
CONFIGS = parse_backends(
    {
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "ptu/east", "url": "https://ptu.example"},  # a character table keys do not allow
                {"id": "paygo", "url": "https://paygo.example"},
                {"id": "pool", "type": "pool", "pool": {"services": [{"id": "ptu/east", "priority": 1}, {"id": "paygo", "priority": 2}]}},
            ]
        )
    }
)


class Instance:
    def __init__(self, store: MemoryTables) -> None:
        self.store = store
        self.registry = BackendRegistry(CONFIGS)
        self.sync = HealthSync(self.store, self.registry.backends, SYNC, "gw")

    def health(self, backend_id: str):  # type: ignore[no-untyped-def]
        return self.registry.by_id(backend_id).health  # type: ignore[union-attr]

    async def close(self) -> None:
        await self.sync.close()
        await self.store.close()


@pytest.fixture
async def instances(memory_tables: MemoryTables) -> AsyncIterator[tuple[Instance, Instance]]:
    pair = (Instance(memory_tables), Instance(memory_tables))
    for instance in pair:
        await instance.sync.start()
    yield pair
    for instance in pair:
        await instance.close()


async def wait_for(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_a_wait_seen_by_one_instance_reaches_the_other_within_sync_plus_write_and_read(instances: tuple[Instance, Instance]) -> None:
    one, other = instances
    assert one.sync.instance != other.sync.instance  # same GATEWAY_ID, distinct rows
    one.health("ptu/east").record_response(429, {"retry-after": "30"}, 0.01)
    elapsed = await wait_for(lambda: other.health("ptu/east").available_at > time.time(), timeout=2)
    assert elapsed <= SYNC + 0.5
    assert other.health("ptu/east").available_at == pytest.approx(one.health("ptu/east").available_at)
    assert other.health("paygo").available_at == 0


async def test_latest_trip_over_all_instances_wins(instances: tuple[Instance, Instance]) -> None:
    one, other = instances
    other.health("paygo").record_response(429, {"retry-after": "40"}, 0.01)
    one.health("paygo").record_response(429, {"retry-after": "5"}, 0.01)  # a shorter wait must not shorten the other's
    await wait_for(lambda: one.health("paygo").available_at > time.time() + 30, timeout=2)
    await asyncio.sleep(3 * SYNC)
    assert other.health("paygo").available_at > time.time() + 30


async def test_stats_are_written_with_traffic_and_stale_rows_are_removed(instances: tuple[Instance, Instance]) -> None:
    one, other = instances
    table = one.store.table(TABLE)
    gone = {"PartitionKey": "paygo", "RowKey": "gone-instance", "OpenUntil": 0.0, "WaitUntil": 0.0, "Updated": time.time() - STALE_SECONDS - 1}
    await table.upsert(gone)
    one.health("paygo").record_response(200, {"x-ratelimit-remaining-tokens": "5000"}, 0.004)
    await asyncio.sleep(4 * SYNC)
    assert "gone-instance" in {row.instance for row in await read_rows(table)}  # polls never list this table
    await other.sync.sweep()
    rows = await read_rows(table)
    assert "gone-instance" not in {row.instance for row in rows}
    (mine,) = [row for row in rows if row.instance == one.sync.instance and row.backend == "paygo"]
    assert (mine.requests, mine.latency_p50_ms, mine.remaining_tokens) == (1, 4.0, 5000)
    report = {entry["id"]: entry for entry in status_report(CONFIGS, rows, time.time())}
    assert report["paygo"]["recentRequests"] == 1 and report["paygo"]["state"] == "closed"


async def test_a_poll_reads_one_entity_however_many_instances_there_are(memory_tables: MemoryTables) -> None:
    fleet = [Instance(memory_tables) for _ in range(12)]
    for instance in fleet:
        await instance.sync.start()
        instance.health("paygo").record_response(200, {}, 0.004)  # traffic: every instance writes its stats row
    fleet[0].health("ptu/east").record_response(429, {"retry-after": "30"}, 0.01)
    await wait_for(lambda: all(i.health("ptu/east").available_at > time.time() for i in fleet), timeout=2)
    stats = memory_tables.stats
    before = (stats.calls[SUMMARY_TABLE], stats.rows_read[SUMMARY_TABLE], stats.rows_read[TABLE])
    await asyncio.sleep(5 * SYNC)
    polls = stats.calls[SUMMARY_TABLE] - before[0]
    assert polls >= 3 * len(fleet)
    assert stats.rows_read[SUMMARY_TABLE] - before[1] <= polls  # one entity per poll
    assert stats.rows_read[TABLE] == before[2]  # the per-instance rows (12 x 2 here) are never read by a poll
    assert len(await read_rows(memory_tables.table(TABLE))) >= len(fleet)
    for instance in fleet:
        await instance.sync.close()


async def test_an_announcement_the_summary_already_holds_is_not_written(instances: tuple[Instance, Instance]) -> None:
    one, other = instances
    summary = one.store.table(SUMMARY_TABLE)
    one.health("paygo").record_response(429, {"retry-after": "30"}, 0.01)
    await wait_for(lambda: other.health("paygo").available_at > time.time() + 20, timeout=2)
    written = await summary.get("summary", "trips")
    assert written is not None
    other.health("paygo").record_response(429, {"retry-after": "30"}, 0.01)  # the same wait, milliseconds later
    other.health("ptu/east").record_response(200, {}, 0.01)
    await asyncio.sleep(3 * SYNC)
    assert (await summary.get("summary", "trips")).etag == written.etag  # type: ignore[union-attr]
    other.health("paygo").record_response(429, {"retry-after": "60"}, 0.01)  # longer: news
    await wait_for(lambda: one.health("paygo").available_at > time.time() + 50, timeout=2)


async def test_passed_trips_leave_the_summary_row(memory_tables: MemoryTables) -> None:
    now = [1_000_000.0]
    registry = BackendRegistry(CONFIGS)
    sync = HealthSync(memory_tables, registry.backends, SYNC, "gw", clock=lambda: now[0])
    await sync.start()
    summary = memory_tables.table(SUMMARY_TABLE)
    await summary.upsert({"PartitionKey": "summary", "RowKey": "trips", "trips": json.dumps({"gone": [now[0] - 1, now[0] - 1]})})
    registry.by_id("paygo").health.wait_until = now[0] + 30  # type: ignore[union-attr]
    registry.by_id("paygo").health.on_change(registry.by_id("paygo").health)  # type: ignore[union-attr, misc]
    await asyncio.sleep(2 * SYNC)
    row = await summary.get("summary", "trips")
    assert row is not None and json.loads(row["trips"]) == {"paygo": [0.0, now[0] + 30]}
    await sync.close()


def test_report_aggregates_instances_and_pools() -> None:
    now = 1_000_000.0

    def row(
        backend: str, instance: str, *, open_until: float = 0, wait_until: float = 0, failures: int = 0, p50: float | None = None, age: float = 1
    ) -> HealthRow:
        return HealthRow(
            backend=backend, instance=instance, open_until=open_until, wait_until=wait_until, failures=failures,
            requests=10, latency_p50_ms=p50, remaining_tokens=None, remaining_requests=None, updated=now - age,
        )  # fmt: skip

    rows = [
        row("ptu/east", "a", open_until=now + 20, failures=3, p50=10),
        row("ptu/east", "b", wait_until=now + 50, failures=1, p50=30),
        row("ptu/east", "c", failures=9, p50=1000, age=3600),  # not recent: no stats, but it still counts for trips
        row("paygo", "a", open_until=now - 5, p50=5),  # a trip that is over
    ]
    report = {entry["id"]: entry for entry in status_report(CONFIGS, rows, now)}
    ptu = report["ptu/east"]
    assert (ptu["state"], ptu["available"], ptu["recentFailures"], ptu["latencyP50Ms"], ptu["instances"]) == ("open", False, 4, 20.0, 2)
    assert ptu["openUntil"].endswith("Z") and ptu["waitUntil"] is not None
    assert (report["paygo"]["state"], report["paygo"]["openUntil"], report["paygo"]["available"]) == ("closed", None, True)
    assert report["pool"]["state"] == "active"
    assert [(m["id"], m["available"]) for m in report["pool"]["members"]] == [("ptu/east", False), ("paygo", True)]
