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

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient

from policies.document import DEFAULT_DOCUMENT, PolicyDocument, Scope, effective_sections, load_document
from policies.pipeline import Pipeline
from policies.statement import Loader

logger = logging.getLogger(__name__)

_DOCUMENT = "document"
_CONFIG = "config"
_VERSION = "version"
#: Characters per table property (64 KiB of UTF-16 is 32,768; leave room).
_CHUNK = 30_000


class PolicySet:
    """Validated documents by scope, and the effective pipeline per (product, API, operation), built once."""

    def __init__(self, documents: Mapping[Scope, PolicyDocument], version: int, default: PolicyDocument) -> None:
        self.documents = dict(documents)
        self.version = version
        self._default = default
        self._pipelines: dict[tuple[str | None, str, str], Pipeline] = {}

    def pipeline(self, product: str | None, api: str, operation: str) -> Pipeline:
        key = (product, api, operation)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            chain = [
                self.documents.get(Scope("global")),
                self.documents.get(Scope("product", product)) if product else None,
                self.documents.get(Scope("api", api)),
                self.documents.get(Scope("operation", operation)),
            ]
            sections = effective_sections(chain, self._default)
            pipeline = Pipeline(sections["inbound"], sections["backend"], sections["outbound"], sections["on-error"])
            self._pipelines[key] = pipeline
        return pipeline


def compile_policy_set(xml_by_scope: Mapping[str, str], version: int, loader: Loader) -> PolicySet:
    """Load every document; the first failure raises PolicyLoadError naming the scope."""
    documents = {}
    for scope_text, xml in xml_by_scope.items():
        scope = Scope.parse(scope_text)
        documents[scope] = load_scoped(xml, scope, loader)
    return PolicySet(documents, version, load_document(DEFAULT_DOCUMENT, Scope("global"), loader))


def load_scoped(xml: str, scope: Scope, loader: Loader) -> PolicyDocument:
    try:
        return load_document(xml, scope, loader)
    except ValueError as exc:
        raise type(exc)(f"Policy for scope {scope}: {exc}") from None


class PolicyRepository:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def version(self) -> int:
        try:
            entity = await self._table.get_entity(_CONFIG, _VERSION)
        except ResourceNotFoundError:
            return 0
        return _int(entity["version"])

    async def documents(self) -> dict[str, str]:
        entities = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": _DOCUMENT})
        return {e["RowKey"]: _join(e) async for e in entities}

    async def document(self, scope: Scope) -> str | None:
        try:
            return _join(await self._table.get_entity(_DOCUMENT, str(scope)))
        except ResourceNotFoundError:
            return None

    async def put(self, scope: Scope, xml: str) -> int:
        entity: dict[str, Any] = {"PartitionKey": _DOCUMENT, "RowKey": str(scope), "parts": 0}
        for index in range(0, max(len(xml), 1), _CHUNK):
            entity[f"xml{index // _CHUNK}"] = xml[index : index + _CHUNK]
            entity["parts"] = index // _CHUNK + 1
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return await self._bump()

    async def delete(self, scope: Scope) -> int:
        await self._table.delete_entity(_DOCUMENT, str(scope))
        return await self._bump()

    async def _bump(self) -> int:
        for _ in range(50):
            try:
                entity = await self._table.get_entity(_CONFIG, _VERSION)
            except ResourceNotFoundError:
                try:
                    await self._table.create_entity({"PartitionKey": _CONFIG, "RowKey": _VERSION, "version": _int64(1)})
                    return 1
                except ResourceExistsError:
                    continue
            version = _int(entity["version"]) + 1
            try:
                await self._table.update_entity(
                    {"PartitionKey": _CONFIG, "RowKey": _VERSION, "version": _int64(version)},
                    mode=UpdateMode.REPLACE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return version
            except ResourceModifiedError:
                await asyncio.sleep(0.01)
        raise RuntimeError("The policy version row is too contended; try again.")


class PolicyManager:
    """This instance's current policy set, refreshed from storage by a background task.

    The poller runs on its own schedule, not on requests, so a change is in force on every instance at most
    `poll_seconds` (plus one load) after it was written, even on an instance that was idle meanwhile.
    """

    def __init__(self, repository: PolicyRepository, loader: Loader, poll_seconds: float) -> None:
        self._repository = repository
        self._loader = loader
        self._poll_seconds = poll_seconds
        self.current = compile_policy_set({}, -1, loader)
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load once before serving, then keep polling in the background."""
        await self._refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await asyncio.wait_for(self._refresh(), timeout=max(10.0, self._poll_seconds))
                failing = False
            except Exception:
                if not failing:  # once per outage, not once per poll
                    logger.warning("Policy refresh failed; keeping version %s.", self.current.version, exc_info=True)
                failing = True

    async def _refresh(self) -> None:
        version = await self._repository.version()
        if version == self.current.version:
            return
        documents = await self._repository.documents()
        try:
            self.current = compile_policy_set(documents, version, self._loader)
        except ValueError:
            logger.exception("Stored policies (version %s) do not load; keeping version %s.", version, self.current.version)
            self.current.version = version  # do not retry the same broken version on every poll
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


def _int(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)
