"""Policy documents in Table Storage, a version row, and hot reload on every instance.

Table `<prefix>policies`:

* `document` / `<scope>` (global, product:NAME, api:ID, operation:ID): the XML, split over properties
  `xml0…xmlN` where longer than one property holds;
* `config` / `version`: a counter bumped (with an ETag check) after every change.

Writers (the CLI, the queue trigger, the Event Grid trigger) validate a document completely before writing
it, then bump the version. Every instance re-reads the version row at most every `poll_seconds` in a
background task (never on the request path), and swaps in a freshly validated policy set when it changed; a set that fails to load (a
document written past validation) is logged and the previous one stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from gateway.errors import PoliciesUnavailable, StorageError
from gateway.stores.tables import Query, Row, Table, update_with_retry
from policies.document import Scope
from policies.errors import PolicyLoadError
from policies.policy_set import PolicySet, compile_policy_set, load_scoped
from policies.statement import Loader

logger = logging.getLogger(__name__)

_DOCUMENT = "document"
_CONFIG = "config"
_VERSION = "version"
#: Characters per table property (64 KiB of UTF-16 is 32,768; leave room).
_CHUNK = 30_000


class PolicyRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def version(self) -> int:
        entity = await self._table.get(_CONFIG, _VERSION)
        return int(entity["version"]) if entity is not None else 0

    async def documents(self) -> dict[str, str]:
        return {e["RowKey"]: _join(e) async for e in self._table.query(Query(partition=_DOCUMENT))}

    async def document(self, scope: Scope) -> str | None:
        entity = await self._table.get(_DOCUMENT, str(scope))
        return _join(entity) if entity is not None else None

    async def put(self, scope: Scope, xml: str) -> int:
        entity: dict[str, Any] = {"PartitionKey": _DOCUMENT, "RowKey": str(scope), "parts": 0}
        for index in range(0, max(len(xml), 1), _CHUNK):
            entity[f"xml{index // _CHUNK}"] = xml[index : index + _CHUNK]
            entity["parts"] = index // _CHUNK + 1
        await self._table.upsert(entity)
        return await self._bump()

    async def delete(self, scope: Scope) -> int:
        await self._table.delete(_DOCUMENT, str(scope))
        return await self._bump()

    async def _bump(self) -> int:
        version = 0

        def next_version(row: Row | None) -> dict[str, Any]:
            nonlocal version
            version = (int(row["version"]) if row is not None else 0) + 1
            return {"PartitionKey": _CONFIG, "RowKey": _VERSION, "version": version}

        await update_with_retry(self._table, _CONFIG, _VERSION, next_version)
        return version


class PolicyManager:
    """This instance's current policy set, refreshed from storage by a background task.

    The poller runs on its own schedule, not on requests, so a change is in force on every instance at most
    `poll_seconds` (plus one load) after it was written, even on an instance that was idle meanwhile.

    Until a policy set has loaded (storage unreachable at start, or stored documents this gateway cannot load),
    requests are refused with 503 `PoliciesUnavailable`: serving without the configured policies would skip
    their limits. Afterwards a failing refresh keeps the last good set in force. A reload compiles in a worker
    thread, so the event loop keeps serving while a large document compiles.
    """

    def __init__(self, repository: PolicyRepository, loader: Loader, poll_seconds: float) -> None:
        self._repository = repository
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._current: PolicySet | None = None
        #: A stored version that does not load: not retried until the version changes.
        self._broken_version: int | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> PolicySet:
        if self._current is None:
            raise PoliciesUnavailable()
        return self._current

    async def start(self) -> None:
        """Try to load once before serving, then keep polling in the background (faster until loaded)."""
        try:
            await self._refresh()
        except StorageError as exc:
            logger.warning("Could not load policies at start (%s); refusing requests with 503 until they load.", exc.message)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._poll_seconds if self.loaded else min(1.0, self._poll_seconds))
            try:
                async with asyncio.timeout(max(10.0, self._poll_seconds)):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._refresh()
                failing = False
            except (StorageError, TimeoutError) as exc:
                if not failing:  # once per outage, not once per poll
                    version = self._current.version if self._current is not None else None
                    logger.warning("Policy refresh failed (%s); keeping version %s.", type(exc).__name__, version)
                failing = True

    async def _refresh(self) -> None:
        version = await self._repository.version()
        if (self._current is not None and version == self._current.version) or version == self._broken_version:
            return
        documents = await self._repository.documents()
        try:
            self._current = await asyncio.to_thread(compile_policy_set, documents, version, self._loader)
        except PolicyLoadError:
            kept = self._current.version if self._current is not None else "none (requests get 503)"
            logger.exception("Stored policies (version %s) do not load; keeping version %s.", version, kept)
            self._broken_version = version
            return
        logger.info("Policies version %s loaded (%d documents).", version, len(documents))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)


async def apply_document(repository: PolicyRepository, scope: Scope, xml: str, loader: Loader) -> int:
    """Validate `xml` completely, then store it; returns the new config version. Invalid: nothing is written."""
    load_scoped(xml, scope, loader)
    return await repository.put(scope, xml)


def _join(entity: Mapping[str, Any]) -> str:
    return "".join(entity.get(f"xml{i}", "") for i in range(int(entity.get("parts", 1))))
