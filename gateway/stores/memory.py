"""`Tables` in this process's memory, with Table Storage's semantics and limits, for unit tests and tools.

Same contract as `gateway/stores/tables.py`: ETags change on every write, ETag-checked writes and inserts raise
`Conflict`, transactions are all-or-nothing within one partition and at most 100 operations, a string property
over 32K characters or a key with `/ \\ # ?` or control characters raises `EntityRejected`, rows come back in
(PartitionKey, RowKey) order. `outage = True` makes every call raise `StorageUnavailable`, like a storage
account that stopped answering. `latency` makes every call wait that long before it takes effect, as a round
trip to Table Storage does, so concurrent read-modify-writes meet as they do there (tests, bench/lease_model.py).
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.errors import Conflict, EntityRejected, StorageUnavailable
from gateway.stores.tables import MAX_STRING_CHARS, MAX_TRANSACTION, Entity, Operation, Query, Row, StorageHealth, StorageStats, Table

_MAX_PROPERTIES = 255
_MAX_KEY_CHARS = 1024
_FORBIDDEN_KEY_CHARS = frozenset("/\\#?") | {chr(c) for c in itertools.chain(range(0x20), range(0x7F, 0xA0))}
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}  # fmt: skip


class MemoryTables:
    def __init__(self, prefix: str = "", latency: float = 0.0) -> None:
        self._prefix = prefix
        self.latency = latency
        self._tables: dict[str, MemoryTable] = {}
        self._health = StorageHealth()
        self.stats = StorageStats()
        #: While True, every call fails as during a storage outage.
        self.outage = False

    @property
    def calls(self) -> int:
        return self.stats.total

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = MemoryTable(self.table_name(name), name, self)
        return table

    def table_name(self, name: str) -> str:
        return self._prefix + name

    def health(self) -> StorageHealth:
        return self._health

    def reopen(self) -> None:
        """Nothing to reconnect in memory."""

    def rows(self, name: str) -> list[dict[str, Any]]:
        """Every row of a table, for assertions."""
        table = self._tables.get(name)
        return [dict(values) for _, values in sorted(table.rows.items())] if table else []

    async def _enter(self, label: str) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        self.stats.calls[label] += 1
        if self.outage:
            self._health.failed("outage")
            raise StorageUnavailable(retry_after=self._health.retry_after())
        self._health.succeeded()

    async def close(self) -> None:
        return None


class MemoryTable:
    def __init__(self, name: str, label: str, tables: MemoryTables) -> None:
        self.name = name
        self._label = label
        self._tables = tables
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._meta: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._etags = itertools.count(1)

    async def get(self, partition: str, row: str) -> Row | None:
        await self._tables._enter(self._label)
        found = self._row((partition, row))
        self._tables.stats.rows_read[self._label] += found is not None
        return found

    async def insert(self, entity: Entity) -> None:
        await self._tables._enter(self._label)
        self._apply([("insert", entity)])

    async def replace(self, entity: Entity, etag: str) -> None:
        await self._tables._enter(self._label)
        self._apply([("replace", Row(entity, etag, None))])

    async def upsert(self, entity: Entity) -> None:
        await self._tables._enter(self._label)
        self._apply([("upsert", entity)])

    async def merge(self, entity: Entity) -> bool:
        await self._tables._enter(self._label)
        key = _key(entity)
        if key not in self.rows:
            return False
        self._apply([("upsert", {**self.rows[key], **entity})])
        return True

    async def delete(self, partition: str, row: str) -> None:
        await self._tables._enter(self._label)
        if (partition, row) in self.rows:
            self._apply([("delete", {"PartitionKey": partition, "RowKey": row})])

    async def query(self, query: Query, page_size: int = 1000) -> AsyncIterator[Row]:
        await self._tables._enter(self._label)
        conditions = query.conditions()
        for key in sorted(self.rows):
            row = self._row(key)
            if row is not None and all(_holds(row, condition) for condition in conditions):
                self._tables.stats.rows_read[self._label] += 1
                yield Row({name: row[name] for name in query.select if name in row}, row.etag, row.timestamp) if query.select else row

    async def transact(self, operations: Sequence[tuple[Operation, Entity]]) -> None:
        await self._tables._enter(self._label)
        if len(operations) > MAX_TRANSACTION or len({entity["PartitionKey"] for _, entity in operations}) > 1:
            raise EntityRejected(f"A transaction on {self.name} must hold at most {MAX_TRANSACTION} rows of one partition.")
        self._apply(operations)

    def _apply(self, operations: Sequence[tuple[Operation, Entity]]) -> None:
        """Check every operation first, then apply them all: all or nothing, as a transaction is."""
        for index, (kind, entity) in enumerate(operations):
            if kind != "delete":
                _validate(entity, index, self.name)
            if kind == "insert" and _key(entity) in self.rows:
                raise self._conflict(f"The row exists in {self.name}.")
            if kind in ("replace", "delete") and _key(entity) not in self.rows:
                raise self._conflict(f"A row of {self.name} was deleted.")
            if kind in ("replace", "delete") and isinstance(entity, Row) and self._meta.get(_key(entity), ("",))[0] != entity.etag:
                raise self._conflict(f"A row of {self.name} changed or was deleted.")
        for kind, entity in operations:
            key = _key(entity)
            if kind == "delete":
                self.rows.pop(key, None)
                self._meta.pop(key, None)
            else:
                self.rows[key] = dict(entity)
                self._meta[key] = (f'W/"{next(self._etags)}"', datetime.now(UTC))

    def _conflict(self, message: str) -> Conflict:
        self._tables.stats.conflicts[self._label] += 1
        return Conflict(message)

    def _row(self, key: tuple[str, str]) -> Row | None:
        values = self.rows.get(key)
        if values is None:
            return None
        etag, stamp = self._meta[key]
        return Row(values, etag, stamp)


def _key(entity: Entity) -> tuple[str, str]:
    return str(entity["PartitionKey"]), str(entity["RowKey"])


def _validate(entity: Entity, index: int, table: str) -> None:
    for name in ("PartitionKey", "RowKey"):
        key = str(entity.get(name, ""))
        if len(key) > _MAX_KEY_CHARS or any(char in _FORBIDDEN_KEY_CHARS for char in key):
            raise EntityRejected(f"Table Storage refused a row of {table}: InvalidInput ({name}).", index=index)
    if len(entity) > _MAX_PROPERTIES:
        raise EntityRejected(f"Table Storage refused a row of {table}: TooManyProperties.", index=index)
    for value in entity.values():
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            raise EntityRejected(f"Table Storage refused a row of {table}: PropertyValueTooLarge.", index=index)
        if isinstance(value, bytes) and len(value) > 65_536:
            raise EntityRejected(f"Table Storage refused a row of {table}: PropertyValueTooLarge.", index=index)


def _holds(row: Row, condition: tuple[str, str, Any]) -> bool:
    name, op, expected = condition
    actual = row.timestamp if name == "Timestamp" else row.get(name)
    if actual is None:
        return False
    try:
        return _OPERATORS[op](actual, expected)
    except TypeError:
        return False
