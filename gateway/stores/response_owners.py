"""Which subscription created each Responses API response, so that no other tenant can read, continue or delete it.

The backend stores responses under the gateway's own credential, which every tenant shares: without this, anyone
who learns a response id could `GET`/`DELETE /openai/v1/responses/{id}` it or continue it with
`previous_response_id`. (APIM does not guard this; the gateway does.)

Table `<prefix>responseowners`, one row per response: `PartitionKey` the response id, `RowKey` `owner`,
`Subscription` the id of the subscription that created it. The gateway records it from the backend's answer
(gateway/handling/response_ids.py) and checks it before any request naming an id is forwarded:

* the owner answers as before; any other subscription gets 404 `ResponseNotFound`, as for an id that does not exist;
* an id with no row (created before the gateway recorded owners, or directly at the backend) belongs to no one:
  404 for everyone (the request path checks an id's shape first, gateway/handling/names.py);
* storage down: ids this instance recorded or checked lately (`REMEMBERED`, least recently used first out) are
  still decided from memory; any other id fails closed with 503 `StorageUnavailable`. A row that could not be
  written when the response was created (storage down then) is logged; the response stays reachable from the
  instance that created it only.

Rows are never deleted: an owner never changes, and the backend answers 404 for a response it no longer has.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from gateway.errors import EntityRejected, ResponseNotFound, StorageError
from gateway.stores.tables import Table

logger = logging.getLogger(__name__)

TABLE = "responseowners"
_ROW = "owner"
#: Owners kept in memory per instance (about 100 bytes each).
REMEMBERED = 20_000


class ResponseOwners:
    def __init__(self, table: Table, remembered: int = REMEMBERED) -> None:
        self._table = table
        self._remembered = remembered
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._writes: set[asyncio.Task[None]] = set()

    async def record(self, response_id: str, subscription: str) -> None:
        """Record `subscription` as the owner of a response the backend just created (never raises)."""
        self._remember(response_id, subscription)
        try:
            await self._table.upsert({"PartitionKey": response_id, "RowKey": _ROW, "Subscription": subscription})
        except StorageError as exc:
            logger.warning("Could not record the owner of response %s (%s); other instances will answer 404 for it.", response_id, exc.message)

    def record_soon(self, response_id: str, subscription: str) -> None:
        """`record`, with the table write in the background (a stream must not wait for it); in memory at once."""
        task = asyncio.get_running_loop().create_task(self.record(response_id, subscription))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        self._remember(response_id, subscription)

    async def check(self, response_id: str, subscription: str, *, previous: bool = False) -> None:
        """Pass if `subscription` created the response; `ResponseNotFound` otherwise; `StorageUnavailable` if unknown
        here while storage is down. `previous`: the id came as `previous_response_id` (the message says so)."""
        owner = self._owners.get(response_id)
        if owner is None:
            try:
                row = await self._table.get(response_id, _ROW)
            except EntityRejected:
                row = None
            owner = str(row.get("Subscription", "")) if row is not None else ""
            if owner:
                self._remember(response_id, owner)
        else:
            self._owners.move_to_end(response_id)
        if owner != subscription:
            raise ResponseNotFound(response_id, previous=previous)

    async def close(self) -> None:
        """Wait (briefly) for owners still being written."""
        if self._writes:
            await asyncio.wait(self._writes, timeout=5.0)

    def _remember(self, response_id: str, subscription: str) -> None:
        self._owners[response_id] = subscription
        self._owners.move_to_end(response_id)
        while len(self._owners) > self._remembered:
            self._owners.popitem(last=False)
