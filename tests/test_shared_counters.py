"""What a hot counter costs in storage: a spent window is read, not written, and requests queued behind one
lease write do not each write again (docs/scale.md)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.stores import counters as counters_module
from gateway.stores.counters import SharedCounters
from gateway.stores.memory import MemoryTables
from policies.counters import Window

LIMIT = 100


async def spend_window(instances: list[SharedCounters], window: Window) -> int:
    """Admit 10-token requests round-robin until every instance is refused; returns the tokens admitted."""
    admitted = 0
    refused: set[int] = set()
    while len(refused) < len(instances):
        for index, instance in enumerate(instances):
            if (await instance.acquire("hot", window, 10, LIMIT)).allowed:
                admitted += 10
            else:
                refused.add(index)
    return admitted


async def test_a_spent_window_costs_reads_and_no_writes(memory_tables: MemoryTables, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_module, "EXHAUSTED_RECHECK_SECONDS", 0.0)  # every refused request asks the table
    table = memory_tables.table("counters")
    instances = [SharedCounters(table, 0.2) for _ in range(3)]
    window = Window.fixed(3600)
    assert await spend_window(instances, window) == LIMIT
    (row,) = memory_tables.rows("counters")
    etag = (await table.get(row["PartitionKey"], row["RowKey"])).etag  # type: ignore[union-attr]
    calls = memory_tables.stats.calls["counters"]
    for _ in range(20):
        for instance in instances:
            assert not (await instance.acquire("hot", window, 10, LIMIT)).allowed
    assert memory_tables.stats.calls["counters"] - calls == 60  # one read per refused request, nothing else
    assert (await table.get(row["PartitionKey"], row["RowKey"])).etag == etag  # type: ignore[union-attr]
    assert memory_tables.stats.conflicts["counters"] == 0


async def test_requests_queued_behind_a_refusing_lookup_do_not_each_ask_again(memory_tables: MemoryTables, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_module, "EXHAUSTED_RECHECK_SECONDS", 0.05)
    memory_tables.latency = 0.002  # as Table Storage's round trips: requests meet at the lease lock
    table = memory_tables.table("counters")
    instance, other = SharedCounters(table, 0.5), SharedCounters(table, 0.5)
    window = Window.fixed(3600)
    assert await spend_window([instance, other], window) == LIMIT
    await asyncio.sleep(counters_module.EXHAUSTED_RECHECK_SECONDS)  # the cached "spent" ends: the next request asks
    calls = memory_tables.stats.calls["counters"]
    results = await asyncio.gather(*(instance.acquire("hot", window, 10, LIMIT) for _ in range(50)))
    assert not any(result.allowed for result in results)
    assert memory_tables.stats.calls["counters"] - calls == 1


async def test_a_lease_that_lapsed_still_reports_its_spend_when_nothing_is_left(memory_tables: MemoryTables) -> None:
    table = memory_tables.table("counters")
    short = SharedCounters(table, 1.0, lease_seconds=counters_module.CLOCK_MARGIN_SECONDS + 0.2)  # valid locally for 0.2 s
    window = Window.fixed(3600)
    assert (await short.acquire("hot", window, 60, LIMIT)).allowed  # holds all 100, spent 60
    await asyncio.sleep(0.25)
    assert not (await short.acquire("hot", window, 50, LIMIT)).allowed  # 40 left, lease lapsed: renew, report
    (row,) = memory_tables.rows("counters")
    assert row["settled"] == 60
