"""Azure Table Storage (or Azurite) behind `gateway/stores/tables.py`'s `Table`: the only module that imports the
tables SDK, translating its exceptions and values into the gateway's (see that module's docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

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
from gateway.stores.tables import Entity, Operation, Query, Row, StorageHealth, StorageStats, Table

T = TypeVar("T")


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
        self._stats = StorageStats()
        self._connection_string = connection_string
        self._prefix = prefix
        self._deadline = deadline_seconds
        self._service = self._connect()
        self._tables: dict[str, AzureTable] = {}
        self._health = StorageHealth()

    def _connect(self) -> TableServiceClient:
        # Few, quick retries: the gateway has its own fallbacks, and a request must not wait out a long backoff.
        return TableServiceClient.from_connection_string(
            self._connection_string,
            retry_total=2,
            retry_backoff_factor=0.2,
            retry_backoff_max=1,
            connection_timeout=min(5.0, self._deadline),
            read_timeout=30,
        )

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

    def reopen(self) -> None:
        """New clients for the tables already handed out, on whatever loop runs next.

        The async clients keep their connections on the event loop that first used them; once that loop is
        closed (a Functions worker exiting), they can neither be used nor closed, so they are dropped.
        """
        self._service = self._connect()
        for table in self._tables.values():
            table.rebind(self._service)

    async def close(self) -> None:
        for table in self._tables.values():
            await table.client.close()
        await self._service.close()


class AzureTable:
    def __init__(
        self, name: str, label: str, service: TableServiceClient, client: TableClient, health: StorageHealth, stats: StorageStats, deadline: float
    ) -> None:
        self.name = name
        self._label = label
        self._stats = stats
        self.client = client
        self._service = service
        self._health = health
        self._deadline = deadline
        self._created = False
        self._create_lock = asyncio.Lock()

    def rebind(self, service: TableServiceClient) -> None:
        """Use `service`'s connections from now on (see `AzureTables.reopen`)."""
        self._service = service
        self.client = service.get_table_client(self.name)
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
                await self.client.update_entity(encode(entity), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
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
        await self._call(lambda: self.client.submit_transaction(batch))

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
            # Only an account that cannot be reached makes every call fail fast; an error answer (a 5xx for one
            # row or partition) proves storage is there, and fails that call alone.
            if isinstance(translated, StorageUnavailable) and not isinstance(exc, HttpResponseError):
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
