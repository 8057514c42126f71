"""Policy documents in Table Storage, a version row, and hot reload on every instance.

Table `<prefix>policies`:

* `document` / `<scope>` (global, product:NAME, api:ID, operation:ID): the XML, split over properties
  `xml0…xmlN` where longer than one property holds;
* `fragment` / `<id>`: a policy fragment (`<fragment>…</fragment>`), stored the same way;
* `config` / `version`: a counter bumped (with an ETag check) after every change, fragments included.

Writers (the CLI, the queue trigger, the Event Grid trigger) validate a document completely before writing
it, then bump the version. A document is validated with the stored fragments; a fragment is validated on
its own and with every stored document and fragment that includes it, so a change cannot stop the stored set
from loading; a fragment something includes cannot be deleted. (Two writers racing can still store a set that
does not load; the gateways then keep the previous one, as below.)

Every instance re-reads the version row at most every `poll_seconds` in a background task (never on the
request path), and swaps in a freshly validated policy set when it changed; a set that fails to load (a
document written past validation) is logged and the previous one stays in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from gateway.errors import PoliciesUnavailable, StorageError
from gateway.stores.tables import Query, Row, Table, update_with_retry
from policies.document import Scope
from policies.errors import PolicyLoadError
from policies.policy_set import PolicySet, check_fragment, compile_policy_set, load_scoped
from policies.statement import Loader
from policies.statements.include_fragment import check_fragment_id, included_ids

logger = logging.getLogger(__name__)

_DOCUMENT = "document"
_FRAGMENT = "fragment"
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
        return await self._all(_DOCUMENT)

    async def document(self, scope: Scope) -> str | None:
        return await self._one(_DOCUMENT, str(scope))

    async def put(self, scope: Scope, xml: str) -> int:
        return await self._write(_DOCUMENT, str(scope), xml)

    async def delete(self, scope: Scope) -> int:
        return await self._remove(_DOCUMENT, str(scope))

    async def fragments(self) -> dict[str, str]:
        return await self._all(_FRAGMENT)

    async def fragment(self, fragment_id: str) -> str | None:
        return await self._one(_FRAGMENT, fragment_id)

    async def put_fragment(self, fragment_id: str, xml: str) -> int:
        return await self._write(_FRAGMENT, check_fragment_id(fragment_id), xml)

    async def delete_fragment(self, fragment_id: str) -> int:
        return await self._remove(_FRAGMENT, fragment_id)

    async def _all(self, partition: str) -> dict[str, str]:
        return {e["RowKey"]: _join(e) async for e in self._table.query(Query(partition=partition))}

    async def _one(self, partition: str, key: str) -> str | None:
        entity = await self._table.get(partition, key)
        return _join(entity) if entity is not None else None

    async def _write(self, partition: str, key: str, xml: str) -> int:
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": key, "parts": 0}
        for index in range(0, max(len(xml), 1), _CHUNK):
            entity[f"xml{index // _CHUNK}"] = xml[index : index + _CHUNK]
            entity["parts"] = index // _CHUNK + 1
        await self._table.upsert(entity)
        return await self._bump()

    async def _remove(self, partition: str, key: str) -> int:
        await self._table.delete(partition, key)
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
        fragments = await self._repository.fragments()
        try:
            self._current = await asyncio.to_thread(compile_policy_set, documents, version, self._loader, fragments)
        except PolicyLoadError:
            kept = self._current.version if self._current is not None else "none (requests get 503)"
            logger.exception("Stored policies (version %s) do not load; keeping version %s.", version, kept)
            self._broken_version = version
            return
        logger.info("Policies version %s loaded (%d documents, %d fragments).", version, len(documents), len(fragments))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)


async def apply_document(repository: PolicyRepository, scope: Scope, xml: str, loader: Loader) -> int:
    """Validate `xml` completely (with the stored fragments), then store it; returns the new config version.

    Invalid: ValueError, and nothing is written.
    """
    included = included_ids(xml)
    fragments = await repository.fragments() if included else {}
    load_scoped(xml, scope, dataclasses.replace(loader, fragments=fragments))
    return await repository.put(scope, xml)


async def apply_fragment(repository: PolicyRepository, fragment_id: str, xml: str, loader: Loader) -> tuple[int, tuple[str, ...]]:
    """Validate a fragment on its own and with everything stored that includes it, then store it.

    Returns the new config version and the sections the fragment can be included in. Invalid, or breaking a
    stored document or fragment: ValueError, and nothing is written.
    """
    fragments = {**await repository.fragments(), fragment_id: xml}
    with_fragments = dataclasses.replace(loader, fragments=fragments)
    sections = check_fragment(fragment_id, xml, with_fragments)
    reaching = _reaching(fragment_id, fragments)
    try:
        for other in sorted(reaching - {fragment_id}):
            check_fragment(other, fragments[other], with_fragments)
        documents = await repository.documents()
        compile_policy_set({scope: text for scope, text in documents.items() if included_ids(text) & reaching}, 0, with_fragments)
    except PolicyLoadError as exc:
        raise PolicyLoadError(f"With this fragment, what includes it would no longer load: {exc}") from None
    return await repository.put_fragment(fragment_id, xml), sections


async def delete_fragment(repository: PolicyRepository, fragment_id: str) -> int | None:
    """Delete a fragment nothing stored includes; None when there is no such fragment.

    ValueError naming the includers when a document or fragment includes it (they would stop loading).
    """
    fragments = await repository.fragments()
    if fragment_id not in fragments:
        return None
    documents = await repository.documents()
    users = [f"scope {scope}" for scope, xml in sorted(documents.items()) if fragment_id in included_ids(xml)]
    users += [f"fragment {other!r}" for other, xml in sorted(fragments.items()) if other != fragment_id and fragment_id in included_ids(xml)]
    if users:
        raise ValueError(f"Fragment {fragment_id!r} is included by {', '.join(users)}: remove those includes first, or they stop loading.")
    return await repository.delete_fragment(fragment_id)


def _reaching(fragment_id: str, fragments: Mapping[str, str]) -> set[str]:
    """`fragment_id` and every fragment whose inclusions reach it, directly or through others."""
    includes = {other: included_ids(xml) for other, xml in fragments.items()}
    reaching = {fragment_id}
    while grown := {other for other, ids in includes.items() if ids & reaching} - reaching:
        reaching |= grown
    return reaching


def _join(entity: Mapping[str, Any]) -> str:
    return "".join(entity.get(f"xml{i}", "") for i in range(int(entity.get("parts", 1))))
