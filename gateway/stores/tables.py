"""Table Storage access: one async service client per process, tables created on first use.

Table names carry a configurable prefix so several gateways can share one storage account.
"""

from __future__ import annotations

import asyncio

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient, TableServiceClient


class TableStore:
    def __init__(self, connection_string: str, prefix: str) -> None:
        self._calls = 0
        # The request hook is the one policy the tables SDK passes on to its table clients.
        self._service = TableServiceClient.from_connection_string(connection_string, raw_request_hook=self._count)
        self._prefix = prefix
        self._ready: dict[str, TableClient] = {}
        self._lock = asyncio.Lock()

    @property
    def calls(self) -> int:
        """Storage requests this process has made so far (for benchmarks: calls per request)."""
        return self._calls

    def _count(self, request: object) -> None:
        self._calls += 1

    def table_name(self, name: str) -> str:
        return self._prefix + name

    async def table(self, name: str) -> TableClient:
        """The client for `<prefix><name>`, creating the table the first time this process asks for it."""
        client = self._ready.get(name)
        if client is not None:
            return client
        async with self._lock:
            if name not in self._ready:
                full_name = self.table_name(name)
                try:
                    await self._service.create_table(full_name)
                except ResourceExistsError:
                    pass
                self._ready[name] = self._service.get_table_client(full_name)
        return self._ready[name]

    async def close(self) -> None:
        for client in self._ready.values():
            await client.close()
        await self._service.close()
