"""The value cache's Table Storage store, behind `cache-lookup-value` / `-store-value` / `-remove-value` (whose tests
are in tests/unit/statements/test_cache_value.py)."""

from __future__ import annotations

import logging

import pytest

from gateway.stores.memory import MemoryTables
from gateway.stores.value_cache import MAX_KEY_CHARS, MAX_VALUE_BYTES, TABLE, ValueCacheStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_store_round_trips_each_kind_of_value() -> None:
    store = ValueCacheStore(MemoryTables())
    for key, value in {"s": "text", "i": 12, "f": 1.5, "b": True, "o": {"x": [1, "y"]}, "a": [1, 2], "n": None}.items():
        await store.store(key, value, 60)
        assert await store.lookup(key) == (True, value)
    await store.store("big-int", 2**80, 60)
    assert await store.lookup("big-int") == (True, str(2**80))
    assert await store.lookup("absent") == (False, None)


async def test_entries_expire_and_cleanup_deletes_only_expired_rows() -> None:
    tables, clock = MemoryTables(), Clock()
    store = ValueCacheStore(tables, clock)
    await store.store("short", "a", 10)
    await store.store("long", "b", 100)
    clock.now += 11
    assert await store.lookup("short") == (False, None)
    assert await store.lookup("long") == (True, "b")
    assert await store.cleanup() == 1
    assert len(tables.rows(TABLE)) == 1


async def test_keys_are_hashed_into_row_keys_and_bounded() -> None:
    tables = MemoryTables()
    store = ValueCacheStore(tables)
    awkward = "a/b\\c#d?e\x01" + "é" * 1000
    await store.store(awkward, "v", 60)
    assert await store.lookup(awkward) == (True, "v")
    row = tables.rows(TABLE)[0]
    assert len(row["RowKey"]) == 64 and row["PartitionKey"] == row["RowKey"][:2]
    too_long = "k" * (MAX_KEY_CHARS + 1)
    await store.store(too_long, "v", 60)
    assert await store.lookup(too_long) == (False, None)
    assert len(tables.rows(TABLE)) == 1


async def test_large_values_span_properties_and_oversized_ones_are_not_stored() -> None:
    tables = MemoryTables()
    store = ValueCacheStore(tables)
    large = "x" * (MAX_VALUE_BYTES - 100)
    await store.store("large", large, 60)
    assert await store.lookup("large") == (True, large)
    assert tables.rows(TABLE)[0]["chunks"] == 14
    await store.store("huge", "x" * MAX_VALUE_BYTES, 60)
    assert await store.lookup("huge") == (False, None)


async def test_storage_outage_fails_open_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    tables = MemoryTables()
    store = ValueCacheStore(tables)
    await store.store("k", "before", 60)
    tables.outage = True
    with caplog.at_level(logging.WARNING, logger="gateway.stores.value_cache"):
        assert await store.lookup("k") == (False, None)
        await store.store("k", "during", 60)
        await store.remove("k")
        tables.outage = False
        assert await store.lookup("k") == (True, "before")
    messages = [record.getMessage() for record in caplog.records if record.name == "gateway.stores.value_cache"]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert any("available again" in m for m in messages)
