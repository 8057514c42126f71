"""Table Storage as every store sees it: the `Table` interface, rows, queries, and the one ETag retry loop.

Stores see `Table`: plain Python values in, plain values out (an `int` is written as Int64 and read back as an
`int`; `float`, `str`, `bool`, `bytes` and `datetime` keep their types), rows with their ETag and timestamp,
structured queries instead of OData text, and the gateway's own errors instead of azure.core's:

* `StorageUnavailable` (503 with Retry-After): storage cannot be reached, timed out, or failed (5xx, auth);
* `EntityRejected`: storage refused one entity as invalid (a property over 64 KiB, a bad key): permanent;
* `Conflict`: an ETag-checked write lost a race, or an insert found the row there: retry or give up.

Every `Tables` counts its operations and lost races per table (`StorageStats`): a dict increment per call, so
benchmarks and `GET /ops/storage` can tell which table a deployment leans on (docs/scale.md).

An outage costs requests almost nothing: once storage cannot be reached, the tables fail fast for `PROBE_SECONDS`,
letting one call through per interval to find out whether it is back (then everything flows again at once). An
error answer for one call (a 5xx for one row or partition) fails that call only. Every
call has a deadline (`deadline_seconds`), so a storage account that stops answering holds no request longer.

Implementations: `gateway/stores/azure_tables.py` (Azure Table Storage or Azurite: the one module that imports
`azure-data-tables`) and `gateway/stores/memory.py` (in memory, with the same limits, for unit tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from gateway.errors import Conflict

logger = logging.getLogger(__name__)

Entity = Mapping[str, Any]
#: Transaction steps. "replace" and "delete" of a `Row` are checked against the ETag it was read with.
Operation = Literal["insert", "upsert", "replace", "delete"]

#: After a failure, calls fail at once for this long, except one probe per interval.
PROBE_SECONDS = 1.0
#: Table Storage's limits (the in-memory tables enforce them too): a transaction's size, a string property.
MAX_TRANSACTION = 100
MAX_STRING_CHARS = 32_768


class Row(dict[str, Any]):
    """An entity as read: its properties (PartitionKey and RowKey included), its ETag and last-modified time."""

    __slots__ = ("etag", "timestamp")

    def __init__(self, values: Mapping[str, Any], etag: str, timestamp: datetime | None) -> None:
        super().__init__(values)
        self.etag = etag
        self.timestamp = timestamp


@dataclass(frozen=True)
class Query:
    """Rows of one partition, or of a partition range; optionally filtered by property comparisons.

    `where` holds (property, operator, value) with operators eq, ne, lt, le, gt, ge; the property `Timestamp`
    is the row's last-modified time.
    """

    partition: str | None = None
    partition_from: str | None = None
    #: Exclusive upper bound; `partition_through` is the inclusive one.
    partition_before: str | None = None
    partition_through: str | None = None
    where: tuple[tuple[str, str, Any], ...] = ()
    select: tuple[str, ...] | None = None

    def conditions(self) -> list[tuple[str, str, Any]]:
        """Every condition, the partition bounds included, as (property, operator, value)."""
        bounds = [
            ("PartitionKey", "eq", self.partition),
            ("PartitionKey", "ge", self.partition_from),
            ("PartitionKey", "lt", self.partition_before),
            ("PartitionKey", "le", self.partition_through),
        ]
        return [bound for bound in bounds if bound[2] is not None] + list(self.where)


class Table(Protocol):
    """One table. Every method raises only `StorageUnavailable`, `EntityRejected` or `Conflict`."""

    name: str

    async def get(self, partition: str, row: str) -> Row | None: ...

    async def insert(self, entity: Entity) -> None:
        """Create the row; `Conflict` if it exists."""

    async def replace(self, entity: Entity, etag: str) -> None:
        """Overwrite the row if it is unchanged since it was read with `etag`; `Conflict` otherwise (or if gone)."""

    async def upsert(self, entity: Entity) -> None:
        """Create or overwrite the row (every property replaced)."""

    async def merge(self, entity: Entity) -> bool:
        """Update the given properties of an existing row; False if there is no such row."""

    async def delete(self, partition: str, row: str) -> None:
        """Delete the row if it exists."""

    def query(self, query: Query, page_size: int = 1000) -> AsyncIterator[Row]: ...

    async def transact(self, operations: Sequence[tuple[Operation, Entity]]) -> None:
        """Up to 100 operations on one partition, all or none. A rejected entity raises `EntityRejected` with its index."""


class Tables(Protocol):
    """The tables of one storage account, each named `<prefix><name>` and created on first use."""

    def table(self, name: str) -> Table: ...

    def table_name(self, name: str) -> str: ...

    @property
    def calls(self) -> int:
        """Storage requests made so far (benchmarks report calls per request)."""

    @property
    def stats(self) -> StorageStats: ...

    def health(self) -> StorageHealth: ...

    def reopen(self) -> None:
        """Use new connections from now on, for an event loop other than the one the old ones belong to."""

    async def close(self) -> None: ...


@dataclass
class StorageStats:
    """Storage operations (a query counts once per page), entities read, and `Conflict` answers per table, since
    the process started.

    Keyed by the table's name without the prefix. Table Storage's targets count entities per second per
    partition, hence `rows_read`. A Conflict is an ETag-checked write that lost its race or an insert that found
    its row: on the counters table, what leases cost in contention.
    """

    calls: Counter[str] = field(default_factory=Counter)
    rows_read: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def as_json(self) -> dict[str, dict[str, int]]:
        return {"calls": dict(self.calls), "rowsRead": dict(self.rows_read), "conflicts": dict(self.conflicts)}


@dataclass
class StorageHealth:
    """Whether storage answered lately; a readiness probe reports it."""

    available: bool = True
    #: `time.time()` of the first failure of the current outage.
    since: float | None = None
    last_error: str = ""
    _next_probe: float = field(default=0.0, repr=False)

    def failed(self, error: str) -> None:
        now = time.monotonic()
        if self.available:
            self.available, self.since = False, time.time()
            logger.warning("Table Storage is unavailable: %s", error)
        self.last_error = error
        self._next_probe = now + PROBE_SECONDS

    def succeeded(self) -> None:
        if not self.available:
            logger.warning("Table Storage is available again after %.1f s.", time.time() - (self.since or time.time()))
        self.available, self.since, self.last_error = True, None, ""

    def fail_fast(self) -> bool:
        """True while storage is known to be down and this is not the interval's probe."""
        if self.available:
            return False
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_SECONDS
            return False
        return True

    def retry_after(self) -> int:
        return max(1, round(PROBE_SECONDS * 2))

    def as_json(self) -> dict[str, Any]:
        return {"available": self.available, "unavailableSince": self.since, "lastError": self.last_error or None}


async def update_with_retry(
    table: Table, partition: str, row: str, change: Callable[[Row | None], Entity | None], attempts: int = 50
) -> Entity | None:
    """Read-modify-write one row under ETag checks, retrying lost races with a short jittered pause.

    `change` gets the current row (None when absent) and returns the entity to write, or None to write nothing.
    Returns what was written (or None). Raises `Conflict` when every attempt lost its race.
    """
    for attempt in range(attempts):
        current = await table.get(partition, row)
        updated = change(current)
        if updated is None:
            return None
        try:
            if current is None:
                await table.insert(updated)
            else:
                await table.replace(updated, current.etag)
            return updated
        except Conflict:
            await asyncio.sleep(0.002 * min(attempt + 1, 10) * (1 + (time.monotonic_ns() % 997) / 997))
    raise Conflict(f"The row {partition}/{row} of {table.name} is too contended to update.")
