"""Table Storage: the one module that talks to `azure-data-tables`, and the interface every store uses.

Stores see `Table`: plain Python values in, plain values out (an `int` is written as Int64 and read back as an
`int`; `float`, `str`, `bool`, `bytes` and `datetime` keep their types), rows with their ETag and timestamp,
structured queries instead of OData text, and the gateway's own errors instead of azure.core's:

* `StorageUnavailable` (503 with Retry-After): storage cannot be reached, timed out, or failed (5xx, auth);
* `EntityRejected`: storage refused one entity as invalid (a property over 64 KiB, a bad key): permanent;
* `Conflict`: an ETag-checked write lost a race, or an insert found the row there: retry or give up.

Every `Tables` counts its operations and lost races per table (`StorageStats`): a dict increment per call, so
benchmarks and `GET /ops/storage` can tell which table a deployment leans on (docs/scale.md).

An outage costs requests almost nothing: after a failure the tables fail fast for `PROBE_SECONDS`, letting one
call through per interval to find out whether storage is back (then everything flows again at once). Every
call has a deadline (`deadline_seconds`), so a storage account that stops answering holds no request longer.

`gateway/stores/memory.py` implements the same interface in memory, with the same limits, for unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

import aiohttp
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from gateway.errors import Conflict, EntityRejected, StorageUnavailable

logger = logging.getLogger(__name__)

Entity = Mapping[str, Any]
#: Transaction steps. "replace" and "delete" of a `Row` are checked against the ETag it was read with.
Operation = Literal["insert", "upsert", "replace", "delete"]
T = TypeVar("T")

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


def encode(entity: Entity) -> dict[str, Any]:
    """Python values as the tables SDK writes them: every int as Int64 (the SDK would pick Int32)."""
    return {
        name: EntityProperty(value, EdmType.INT64) if isinstance(value, int) and not isinstance(value, bool) else value
        for name, value in entity.items()
    }


def decode(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value.value if isinstance(value, EntityProperty) else value for name, value in entity.items()}


class AzureTables:
    """`Tables` on Azure Table Storage (or Azurite), with one async service client per process."""

    def __init__(self, connection_string: str, prefix: str, deadline_seconds: float = 5.0) -> None:
        # Few, quick retries: the gateway has its own fallbacks, and a request must not wait out a long backoff.
        self._service = TableServiceClient.from_connection_string(
            connection_string,
            retry_total=2,
            retry_backoff_factor=0.2,
            retry_backoff_max=1,
            connection_timeout=min(5.0, deadline_seconds),
            read_timeout=30,
        )
        self._prefix = prefix
        self._deadline = deadline_seconds
        self._tables: dict[str, AzureTable] = {}
        self._health = StorageHealth()
        self._stats = StorageStats()

    @property
    def calls(self) -> int:
        return self._stats.total

    @property
    def stats(self) -> StorageStats:
        return self._stats

    def table_name(self, name: str) -> str:
        return self._prefix + name

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            full = self.table_name(name)
            client = self._service.get_table_client(full)
            table = self._tables[name] = AzureTable(full, name, self._service, client, self._health, self._stats, self._deadline)
        return table

    def health(self) -> StorageHealth:
        return self._health

    async def close(self) -> None:
        for table in self._tables.values():
            await table.client.close()
        await self._service.close()


class AzureTable:
    def __init__(
        self, name: str, label: str, service: TableServiceClient, client: TableClient, health: StorageHealth, stats: StorageStats, deadline: float
    ) -> None:
        self.name = name
        self.client = client
        self._label = label
        self._service = service
        self._health = health
        self._stats = stats
        self._deadline = deadline
        self._created = False
        self._create_lock = asyncio.Lock()

    async def get(self, partition: str, row: str) -> Row | None:
        async def read() -> Row | None:
            try:
                entity = await self.client.get_entity(partition, row)
            except ResourceNotFoundError:
                return None
            self._stats.rows_read[self._label] += 1
            return _row(entity)

        return await self._call(read)

    async def insert(self, entity: Entity) -> None:
        await self._call(lambda: self.client.create_entity(encode(entity)))

    async def replace(self, entity: Entity, etag: str) -> None:
        async def write() -> None:
            try:
                await self.client.update_entity(
                    encode(entity), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except ResourceNotFoundError:
                raise Conflict(f"A row of {self.name} was deleted while being updated.") from None

        await self._call(write)

    async def upsert(self, entity: Entity) -> None:
        await self._call(lambda: self.client.upsert_entity(encode(entity), mode=UpdateMode.REPLACE))

    async def merge(self, entity: Entity) -> bool:
        async def write() -> bool:
            try:
                await self.client.update_entity(encode(entity), mode=UpdateMode.MERGE)
            except ResourceNotFoundError:
                return False
            return True

        return await self._call(write)

    async def delete(self, partition: str, row: str) -> None:
        await self._call(lambda: self.client.delete_entity(partition, row))

    async def query(self, query: Query, page_size: int = 1000) -> AsyncIterator[Row]:
        text, parameters = _odata(query)
        pages = self.client.query_entities(text, parameters=parameters, select=list(query.select) if query.select else None,
                                           results_per_page=page_size).by_page()  # fmt: skip
        while True:
            page = await self._call(lambda: _next_page(pages), counted=False)
            if page is None:  # the previous page had no continuation: no request was made
                return
            self._stats.calls[self._label] += 1
            self._stats.rows_read[self._label] += len(page)
            for entity in page:
                yield _row(entity)

    async def transact(self, operations: Sequence[tuple[Operation, Entity]]) -> None:
        if not operations:
            return
        batch = [_transaction_step(kind, entity) for kind, entity in operations]
        await self._call(lambda: self.client.submit_transaction(batch))  # type: ignore[arg-type]

    async def _call(self, operation: Callable[[], Awaitable[T]], counted: bool = True) -> T:
        """Run one SDK call with the deadline, the fail-fast window, and errors translated."""
        if self._health.fail_fast():
            raise StorageUnavailable(retry_after=self._health.retry_after())
        if counted:
            self._stats.calls[self._label] += 1
        try:
            async with asyncio.timeout(self._deadline):
                await self._ensure_created()
                result = await operation()
        except (AzureError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            translated = _translate(exc, self.name)
            if isinstance(translated, Conflict):
                self._stats.conflicts[self._label] += 1
            elif isinstance(translated, StorageUnavailable):
                self._health.failed(f"{type(exc).__name__} on {self.name}")
                translated.headers["Retry-After"] = str(self._health.retry_after())
            raise translated from exc
        self._health.succeeded()
        return result

    async def _ensure_created(self) -> None:
        if self._created:
            return
        async with self._create_lock:
            if not self._created:
                self._stats.calls[self._label] += 1
                try:
                    await self._service.create_table(self.name)
                except ResourceExistsError:
                    pass
                self._created = True


async def _next_page(pages: Any) -> list[Any] | None:
    try:
        page = await pages.__anext__()
    except StopAsyncIteration:
        return None
    return [entity async for entity in page]


def _row(entity: Any) -> Row:
    metadata = getattr(entity, "metadata", {}) or {}
    return Row(decode(entity), metadata.get("etag", ""), metadata.get("timestamp"))


def _transaction_step(kind: Operation, entity: Entity) -> tuple[Any, ...]:
    if kind == "upsert":
        return ("upsert", encode(entity), {"mode": UpdateMode.REPLACE})
    if kind == "insert":
        return ("create", encode(entity))
    checked = {"etag": entity.etag, "match_condition": MatchConditions.IfNotModified} if isinstance(entity, Row) else {}
    if kind == "replace":
        return ("update", encode(entity), {"mode": UpdateMode.REPLACE, **checked})
    return ("delete", {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}, checked)


_ODATA_OPERATORS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})


def _odata(query: Query) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    parameters: dict[str, Any] = {}
    for index, (name, operator, value) in enumerate(query.conditions()):
        if operator not in _ODATA_OPERATORS or not name.isidentifier():
            raise ValueError(f"Unsupported query condition {name} {operator}.")
        clauses.append(f"{name} {operator} @p{index}")
        parameters[f"p{index}"] = value
    return " and ".join(clauses), parameters


#: Service error codes that refuse an entity for what it is, not for where or when it was sent.
_REJECTIONS = frozenset({
    "PropertyValueTooLarge", "EntityTooLarge", "PropertyNameTooLong", "TooManyProperties", "InvalidInput",
    "OutOfRangeInput", "InvalidValueType", "KeyValueTooLarge", "PropertiesNeedValue", "InvalidDuplicateRow",
    "RequestBodyTooLarge", "InvalidXmlDocument", "InvalidResourceName",
})  # fmt: skip


def _translate(exc: Exception, table: str) -> Exception:
    """An SDK or transport exception as the gateway's error (see the module docstring)."""
    if isinstance(exc, (ResourceModifiedError, ResourceExistsError)):
        return Conflict(f"A row of {table} changed or exists already.")
    if isinstance(exc, HttpResponseError):
        code = str(getattr(exc, "error_code", None) or "")
        status = exc.status_code or 0
        if (status in (409, 412) and code not in _REJECTIONS) or (status == 404 and isinstance(exc, TableTransactionError)):
            return Conflict(f"A row of {table} changed or exists already ({code or status}).")
        if code in _REJECTIONS or status in (400, 413):
            index = exc.index if isinstance(exc, TableTransactionError) else 0
            return EntityRejected(f"Table Storage refused a row of {table}: {code or status}.", index=index)
        return StorageUnavailable(f"Table Storage answered {status} ({code or 'no code'}) on {table}.")
    return StorageUnavailable()
