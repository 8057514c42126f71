"""Response owners without processes: the check, the bounded memory, and storage outages (MemoryTables)."""

from __future__ import annotations

import pytest

from gateway.errors import ResponseNotFound, StorageUnavailable
from gateway.handling.response_ids import ResponseIdTap, check_access
from gateway.stores.memory import MemoryTables
from gateway.stores.response_owners import TABLE, ResponseOwners


async def test_only_the_recorded_owner_passes(memory_tables: MemoryTables) -> None:
    owners = ResponseOwners(memory_tables.table(TABLE))
    await owners.record("resp_1", "alice")
    await owners.check("resp_1", "alice")
    for subscription, response_id in (("bob", "resp_1"), ("alice", "resp_unknown"), ("alice", "resp/../x")):
        with pytest.raises(ResponseNotFound):
            await owners.check(response_id, subscription)
    fresh = ResponseOwners(memory_tables.table(TABLE))  # another instance reads the table
    await fresh.check("resp_1", "alice")


async def test_outage_decides_from_memory_and_fails_closed_otherwise(memory_tables: MemoryTables) -> None:
    owners = ResponseOwners(memory_tables.table(TABLE), remembered=2)
    for n in range(3):
        await owners.record(f"resp_{n}", "alice")
    memory_tables.outage = True
    await owners.check("resp_2", "alice")
    with pytest.raises(ResponseNotFound):
        await owners.check("resp_2", "bob")
    with pytest.raises(StorageUnavailable):
        await owners.check("resp_0", "alice")  # the oldest left memory: unknown here while storage is down
    await owners.record("resp_3", "alice")  # logged, not raised; remembered here
    await owners.check("resp_3", "alice")


async def test_requests_naming_a_response_are_checked(memory_tables: MemoryTables) -> None:
    owners = ResponseOwners(memory_tables.table(TABLE))
    await owners.record("resp_1", "alice")
    await check_access(owners, "getResponse", {"response-id": "resp_1"}, None, "alice")
    await check_access(owners, "createResponse", {}, {"model": "m", "input": "x"}, "bob")
    await check_access(owners, "createResponse", {}, {"previous_response_id": 7}, "bob")  # the backend refuses that
    with pytest.raises(ResponseNotFound, match="Previous response with id 'resp_1'"):
        await check_access(owners, "createResponse", {}, {"previous_response_id": "resp_1"}, "bob")
    with pytest.raises(ResponseNotFound):
        await check_access(owners, "deleteResponse", {"response-id": "resp_1"}, None, "bob")
    with pytest.raises(ResponseNotFound, match="Previous response not found"):  # out of the rule: never looked up
        await check_access(owners, "createResponse", {}, {"previous_response_id": "resp/../x#"}, "alice")


def test_the_tap_finds_the_id_in_the_first_event_only() -> None:
    found: list[str] = []
    tap = ResponseIdTap(found.append, strip_usage=False)
    created = b'event: response.created\ndata: {"type": "response.created", "response": {"id": "resp_9"}}\n\n'
    assert tap.feed(created[:30]) == b""  # a partial event waits for its end
    assert tap.feed(created[30:]) == created
    tap.feed(b'data: {"type": "response.created", "response": {"id": "resp_other"}}\n\n')
    assert found == ["resp_9"]
    other = ResponseIdTap(found.append, strip_usage=False)
    other.feed(b'data: {"type": "response.output_text.delta"}\n\ndata: {"type": "response.created", "response": {"id": "x"}}\n\n')
    assert found == ["resp_9"]
