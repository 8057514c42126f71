"""The shared counters with many instances on one hot key (docs/scale.md): a spent window is read, not written;
requests queued behind one lease write do not each write again; leases are sized by each instance's demand, so
slow instances do not park the limit; a contended write refuses rather than admitting as in an outage."""

from __future__ import annotations

import asyncio
from functools import partial

import orjson
import pytest

from gateway.errors import Conflict, StorageUnavailable
from gateway.stores import counters as counters_module
from gateway.stores.counters import SharedCounters
from gateway.stores.memory import MemoryTables
from policies.counters import Window

LIMIT = 100


@pytest.fixture
def short_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases of a second or two stay valid locally (the production margin for clock skew is 5 s)."""
    monkeypatch.setattr(counters_module, "CLOCK_MARGIN_SECONDS", 0.1)


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


async def test_many_slow_instances_all_get_a_share_instead_of_the_first_twenty_parking_it(memory_tables: MemoryTables, short_margin: None) -> None:
    table = memory_tables.table("counters")
    fleet = [SharedCounters(table, 0.05, lease_seconds=3.0) for _ in range(40)]  # 5 % slices: 20 would hold it all
    window = Window.fixed(3600)
    admitted = 0
    for _ in range(3):  # each instance asks for one 10-token request a round: 1,200 tokens of a 2,000 limit
        for instance in fleet:
            admitted += 10 * (await instance.acquire("hot", window, 10, 2000)).allowed
        await asyncio.sleep(0.05)
    assert admitted == 1200
    (row,) = memory_tables.rows("counters")
    held = sum(held for held, _ in orjson.loads(row["leases"]).values())
    assert held <= 40 * 2 * 10 * 3  # nobody holds much more than its own demand


async def test_a_renewal_gives_back_what_exceeds_the_demand(memory_tables: MemoryTables, short_margin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_module, "EXHAUSTED_RECHECK_SECONDS", 0.0)
    table = memory_tables.table("counters")
    busy, other = SharedCounters(table, 1.0, lease_seconds=1.5), SharedCounters(table, 1.0, lease_seconds=1.5)
    window = Window.fixed(3600)
    assert (await busy.acquire("hot", window, 500, 1000)).allowed  # a 500-token lease...
    await busy.add("hot", window, -490, 1000)  # ...of which the answer used 10: 490 stay in its balance
    for _ in range(2):  # then one small request per measuring interval (0.5 s)
        await asyncio.sleep(0.55)
        assert (await busy.acquire("hot", window, 10, 1000)).allowed
    assert not (await other.acquire("hot", window, 600, 1000)).allowed  # 500 are parked with `busy`
    await busy.maintain()
    assert (await other.acquire("hot", window, 600, 1000)).allowed


async def test_a_new_window_starts_with_a_lease_sized_by_the_last_one(memory_tables: MemoryTables, short_margin: None) -> None:
    table = memory_tables.table("counters")
    instance = SharedCounters(table, 1.0, lease_seconds=3.0)
    first, second = Window("w1", 4e9), Window("w2", 4e9)
    for _ in range(50):
        assert (await instance.acquire("hot", first, 10, 100_000)).allowed
    writes = instance.storage_operations
    for _ in range(50):
        assert (await instance.acquire("hot", second, 10, 100_000)).allowed
    assert instance.storage_operations - writes == 1


async def test_a_write_that_keeps_losing_its_race_refuses_the_request(memory_tables: MemoryTables, monkeypatch: pytest.MonkeyPatch) -> None:
    table = memory_tables.table("counters")

    async def always_conflict(entity: object, etag: str = "") -> None:
        raise Conflict("another instance wrote first")

    monkeypatch.setattr(table, "insert", always_conflict)
    monkeypatch.setattr(counters_module, "update_with_retry", partial(counters_module.update_with_retry, attempts=2))
    window = Window.fixed(3600)
    assert not (await SharedCounters(table).acquire("hot", window, 10, 1000)).allowed  # not "storage is down: admit"
    with pytest.raises(StorageUnavailable):
        await SharedCounters(table, refuse_on_outage=True).acquire("hot", window, 10, 1000)
