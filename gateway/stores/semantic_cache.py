"""The semantic cache's gateway side: embeddings, entries in Table Storage, an in-memory index per partition.

**Embeddings** come from the backend the lookup names (`embeddings-backend-id`), from the deployment that
backend's `embeddings_deployment` names (`POST {url}/openai/deployments/{name}/embeddings?api-version=`
`EMBEDDINGS_API_VERSION`, base64 floats), with that backend's own credentials (its key, or its managed
identity). The call goes through the shared upstream client but not through the request's pipeline, so its
usage is never charged to the client.

**Table** `<prefix>semanticcache`, one entity per cached answer:

* `PartitionKey`: the request's partition (policies/semantic_cache.py) and a tag of the embeddings backend
  and deployment, since vectors of different models cannot be compared;
* `RowKey`: `<milliseconds since the epoch>-<random>`;
* `ExpiresAt` (when the store's `duration` ends), `Status`, `PromptTokens`, `CompletionTokens`, `TotalTokens`;
* `Embedding`: float32 little-endian; `Answer`: the answer body, zlib-compressed. A binary property holds at
  most 64 KiB, so longer values continue in `Embedding1`, `Answer1`, `Answer2`, …; an entity holds at most
  1 MiB, so an answer that still does not fit is not cached.

**Index.** Each instance keeps a `VectorIndex` per partition it has seen a lookup for, loaded on first use
(entries not yet expired) and then refreshed by a lookup that finds it older than
`GATEWAY_SEMANTIC_CACHE_STALENESS_SECONDS` (entities whose `Timestamp` is at least the newest one seen minus
`SYNC_OVERLAP`, for writes that committed out of order). So an entry one instance stores is served by every
other instance once its write completed plus at most the staleness bound; at most one lookup per partition
and bound waits for a table query, the others read memory only. A refresh reads a key range, not the
partition: row keys start with their writer's clock, so it asks only for keys from `ROW_KEY_SLACK` before the
newest `Timestamp` seen. Without that bound every refresh walked the whole partition on the server, N/2 scans of
every entry per second over N instances (docs/scale.md). The price: an entry whose writer's clock lagged by more
than the slack (less the write's own deadline) reaches other instances only when they load the partition anew.
An instance's own entries are in its index
at once; the write to the table happens in the background. Expired entries are skipped by lookups, dropped
from an index when a quarter of it expired, and deleted from the table by `cleanup` (a timer trigger under
Azure Functions, a periodic task in the local host). Partitions unused for `IDLE_PARTITION_SECONDS` are
dropped from memory. All indexes of an instance together stay within `GATEWAY_SEMANTIC_CACHE_MAX_MIB`: past it,
the entries least recently hit (or stored) leave memory, not the table (gateway/vector_index.py).

**Failing open.** A lookup never holds a request longer than `GATEWAY_SEMANTIC_CACHE_TIMEOUT_SECONDS`
(embedding plus, for a partition not yet loaded, its first load): past it, or when the embeddings backend or
the table fails, the answer is BYPASS and the request goes to the backend. An *outage* is what says nothing
about the request at hand: the embeddings backend cannot be reached or answers 5xx (or not an embedding), the
table fails. It is logged once (and its recovery once), and for `RETRY_AFTER_FAILURE` seconds (cache_outages.py) lookups do not
try that dependency again. What is about one request — its embedding is refused (4xx: too long, throttled) or
not there within the timeout — bypasses that request only, so one caller's prompt cannot switch the cache off
for everyone. Prompts too long to embed never get here (`policies.semantic_cache.MAX_PROMPT_CHARS`). An index
already loaded keeps serving while the table is unreachable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from gateway.backends.backend import Backend
from gateway.backends.proxy import UpstreamClient, read_body
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import SemanticCacheSettings
from gateway.errors import BackendError, BackendTimeout, Conflict, GatewayError, StorageError
from gateway.stores.cache_outages import Bypass, Outages
from gateway.stores.semantic_cache_rows import Entry, decode_entity, encode_entity
from gateway.stores.tables import Query, Table, Tables
from gateway.stores.vector_index import VectorIndex, evict
from policies.semantic_cache import CachedAnswer, CacheLookup, CacheQuery

logger = logging.getLogger(__name__)

TABLE = "semanticcache"
EMBEDDINGS_API_VERSION = "2024-10-21"
SYNC_OVERLAP = timedelta(seconds=5)
#: A refresh asks for row keys (their writer's clock) from this long before the newest Timestamp seen: room for
#: clock skew between instances (20 s) and for a write's deadline (5 s) between its key and its commit.
ROW_KEY_SLACK = timedelta(seconds=30)
IDLE_PARTITION_SECONDS = 900.0
MAX_PENDING_WRITES = 256
_STORAGE = "the semantic cache table"
_LOOKUP = "the semantic cache lookup"


class _Partition:
    """One partition's index on this instance and the state of its sync with the table."""

    __slots__ = ("key", "index", "synced", "since", "task", "task_started", "used")

    def __init__(self, key: str) -> None:
        self.key = key
        self.index: VectorIndex | None = None
        #: When the last successful sync started (monotonic seconds).
        self.synced = float("-inf")
        #: The newest entity Timestamp seen; None until one was, so syncs read the whole partition until then.
        self.since: datetime | None = None
        self.task: asyncio.Task[None] | None = None
        self.task_started = 0.0
        self.used = time.monotonic()


@dataclass(frozen=True)
class _Ticket:
    partition: _Partition
    vector: np.ndarray


class SemanticCacheService:
    """Implements `policies.semantic_cache.SemanticCache` over Table Storage, numpy and the embeddings backends."""

    def __init__(
        self, store: Tables, backends: BackendRegistry, upstream: UpstreamClient, settings: SemanticCacheSettings, close_store: bool = False
    ) -> None:
        self._store = store
        self._close_store = close_store
        self._backends = backends
        self._upstream = upstream
        self.scope = settings.scope
        self._staleness = settings.staleness_seconds
        self._timeout = settings.timeout_seconds
        self._max_bytes = int(settings.max_mib * 2**20)
        self._partitions: dict[str, _Partition] = {}
        self._outages = Outages()
        self._writes: set[asyncio.Task[None]] = set()
        self._cleaner: asyncio.Task[None] | None = None

    async def lookup(self, query: CacheQuery, record_time: Callable[[str, float], None]) -> CacheLookup:
        """Embed and search (see `policies.semantic_cache.SemanticCache.lookup`); time spent goes to `record_time`."""
        started = time.perf_counter()
        embedding_seconds = [0.0]
        try:
            result = await self._lookup(query, embedding_seconds)
        except Bypass as bypass:
            if bypass.source is not None:
                self._outages.failed(bypass.source, bypass.message)
            else:
                logger.debug("Semantic cache bypassed for one request: %s.", bypass.message)
            return CacheLookup("BYPASS")
        except Exception as exc:  # the cache must never fail a request
            logger.debug("Semantic cache lookup failed.", exc_info=True)
            self._outages.failed(_LOOKUP, f"a lookup failed unexpectedly ({exc!r})")
            return CacheLookup("BYPASS")
        else:
            self._outages.recovered(_LOOKUP)
            return result
        finally:
            if embedding_seconds[0]:
                record_time("embedding", embedding_seconds[0])
            record_time("cache", time.perf_counter() - started - embedding_seconds[0])

    async def _lookup(self, query: CacheQuery, embedding_seconds: list[float]) -> CacheLookup:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        backend, deployment, source = self._embeddings_target(query.embeddings_backend_id)
        tag = hashlib.sha256(f"{query.embeddings_backend_id}/{deployment}".encode()).hexdigest()[:8]
        partition = self._partition(f"{query.partition}-{tag}")
        sync = self._start_sync(partition)
        if partition.index is None and sync is None:
            raise Bypass(None, "the table is unreachable and this partition was never loaded")
        started = time.perf_counter()
        try:
            vector = await self._embed(backend, deployment, source, query.text, deadline)
        finally:
            embedding_seconds[0] = time.perf_counter() - started
        if sync is not None:
            # A sync that has already run for the whole timeout is not waited for again: one request pays for slow storage.
            wait = min(deadline, partition.task_started + self._timeout) - loop.time()
            if wait > 0 and not sync.done():
                await asyncio.wait((sync,), timeout=wait)
        index = partition.index
        if index is None:
            raise Bypass(None, "the partition is still loading")
        match = index.search(vector, time.time(), query.threshold)
        ticket = _Ticket(partition, vector)
        if match is None:
            return CacheLookup("MISS", ticket=ticket)
        if match.distance <= query.threshold:
            entry: Entry = match.payload
            return CacheLookup("HIT", match.distance, entry.cached_answer())
        return CacheLookup("MISS", match.distance, ticket=ticket)

    def store(self, ticket: object, answer: CachedAnswer, ttl_seconds: float) -> None:
        assert isinstance(ticket, _Ticket)
        if len(self._writes) >= MAX_PENDING_WRITES:
            self._outages.failed(_STORAGE, f"{MAX_PENDING_WRITES} entries are waiting to be written; new ones are dropped")
            return
        row_key = f"{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(4)}"
        expires = time.time() + ttl_seconds
        entry = Entry(answer.status, zlib.compress(answer.body), answer.usage)
        entity = encode_entity(ticket.partition.key, row_key, ticket.vector, entry, expires)
        if entity is None:
            logger.info("Semantic cache: an answer of %d bytes compressed is too large for one table entity; not cached.", len(entry.answer))
            return
        if ticket.partition.index is not None:
            ticket.partition.index.add(row_key, ticket.vector, expires, entry)
            self._cap_memory()
        task = asyncio.get_running_loop().create_task(self._write(entity))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def cleanup(self) -> int:
        """Delete expired entries from the table (every partition) and from this instance's indexes, and drop
        partitions unused for a while from memory; returns how many table entities were deleted."""
        now = time.time()
        for partition in self._partitions.values():
            if partition.index is not None:
                partition.index.remove_expired(now)
        self._drop_idle_partitions()
        table = self._store.table(TABLE)
        deleted = 0
        batches: dict[str, list[str]] = {}
        expired = Query(where=(("ExpiresAt", "lt", datetime.now(UTC)),), select=("PartitionKey", "RowKey"))
        async for entity in table.query(expired):
            rows = batches.setdefault(entity["PartitionKey"], [])
            rows.append(entity["RowKey"])
            if len(rows) == 100:  # a transaction's limit
                deleted += await _delete(table, entity["PartitionKey"], batches.pop(entity["PartitionKey"]))
        for partition_key, rows in batches.items():
            deleted += await _delete(table, partition_key, rows)
        return deleted

    def start_cleanup(self, interval_seconds: float) -> None:
        """Run `cleanup` every `interval_seconds` (the local host; Azure Functions has a timer trigger for it)."""
        self._cleaner = asyncio.get_running_loop().create_task(self._clean_periodically(interval_seconds))

    async def close(self) -> None:
        tasks = [task for task in (self._cleaner, *(p.task for p in self._partitions.values())) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writes:
            await asyncio.wait(self._writes, timeout=5.0)
        if self._close_store:
            await self._store.close()

    def _embeddings_target(self, backend_id: str) -> tuple[Backend, str, str]:
        source = f"embeddings backend {backend_id!r}"
        if self._outages.skipping(source):
            raise Bypass(None, f"{source} failed recently")
        target = self._backends.by_id(backend_id)
        if target is None:
            raise Bypass(source, f"embeddings-backend-id {backend_id!r} is not in GATEWAY_BACKENDS; add it or fix the policy")
        try:
            backend = target if isinstance(target, Backend) else target.select(None, ())
        except GatewayError as exc:
            raise Bypass(source, f"{source} has no available member ({exc.message})") from None
        deployment = backend.config.embeddings_deployment
        if not deployment:
            message = f'backend {backend.id!r} names no embeddings deployment: add "embeddings_deployment" to its entry in GATEWAY_BACKENDS'
            raise Bypass(source, message)
        return backend, deployment, source

    async def _embed(self, backend: Backend, deployment: str, source: str, text: str, deadline: float) -> np.ndarray:
        url = f"{backend.base_url}/openai/deployments/{quote(deployment, safe='')}/embeddings?api-version={EMBEDDINGS_API_VERSION}"
        body = orjson.dumps({"input": text, "encoding_format": "base64"})
        try:
            async with asyncio.timeout_at(deadline):
                headers = [("content-type", "application/json"), *await backend.auth_headers()]
                response = await self._upstream.send("POST", url, headers, body)
                data = await read_body(response)
        except (TimeoutError, BackendTimeout):  # this request's embedding was slow: the next one may not be
            raise Bypass(None, f"{source} gave no embedding within {self._timeout:g} s") from None
        except BackendError as exc:
            raise Bypass(source, f"{source} cannot be reached ({exc.message})") from None
        if 400 <= response.status < 500:  # refused for this prompt (too long, throttled): not an outage
            raise Bypass(None, f"{source} refused this prompt with {response.status}: {data[:300]!r}")
        if response.status != 200:
            raise Bypass(source, f"{source} answered {response.status}: {data[:300]!r}")
        try:
            raw = orjson.loads(data)["data"][0]["embedding"]
            vector = np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str) else np.asarray(raw, dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            raise Bypass(source, f"{source} answered something that is not an embedding: {data[:300]!r}") from None
        self._outages.recovered(source)
        return vector

    def _partition(self, key: str) -> _Partition:
        partition = self._partitions.get(key)
        if partition is None:
            self._drop_idle_partitions()
            partition = self._partitions[key] = _Partition(key)
        partition.used = time.monotonic()
        return partition

    def _drop_idle_partitions(self) -> None:
        cutoff = time.monotonic() - IDLE_PARTITION_SECONDS
        for key in [k for k, p in self._partitions.items() if p.used < cutoff and p.task is None]:
            del self._partitions[key]

    def _start_sync(self, partition: _Partition) -> asyncio.Task[None] | None:
        """The sync this lookup must wait for: None while the index is fresh, or while the table is failing."""
        if partition.index is not None and time.monotonic() - partition.synced < self._staleness:
            return None
        if self._outages.skipping(_STORAGE):
            return None
        if partition.task is None:
            loop = asyncio.get_running_loop()
            partition.task = loop.create_task(self._sync(partition))
            partition.task_started = loop.time()
            partition.task.add_done_callback(partial(self._synced, partition))
        return partition.task

    def _synced(self, partition: _Partition, task: asyncio.Task[None]) -> None:
        partition.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._outages.recovered(_STORAGE)
        else:
            self._outages.failed(_STORAGE, f"reading {_STORAGE} failed ({error!r})")

    async def _sync(self, partition: _Partition) -> None:
        table = self._store.table(TABLE)
        started = time.monotonic()
        if partition.since is None:
            query = Query(partition=partition.key, where=(("ExpiresAt", "gt", datetime.now(UTC)),))
        else:
            first_key = f"{int((partition.since - ROW_KEY_SLACK).timestamp() * 1000):013d}"
            changed = ("Timestamp", "ge", partition.since - SYNC_OVERLAP)
            query = Query(partition=partition.key, where=(("RowKey", "ge", first_key), changed))
        index = partition.index if partition.index is not None else VectorIndex(Entry.nbytes)
        now = time.time()
        newest = partition.since
        keys: list[str] = []
        vectors: list[np.ndarray] = []
        expiries: list[float] = []
        entries: list[Entry] = []
        stored: list[float] = []

        def add() -> None:  # page by page: a large partition never waits in memory as float32
            if keys:
                index.extend(keys, np.stack(vectors), np.array(expiries), entries, np.array(stored))
                self._cap_memory(index)
            for values in (keys, vectors, expiries, entries, stored):
                values.clear()

        async for entity in table.query(query):
            stamp = entity.timestamp
            if isinstance(stamp, datetime) and (newest is None or stamp > newest):
                newest = stamp
            if entity["RowKey"] in index:
                continue
            row_key, vector, expires, entry = decode_entity(entity)
            if expires > now and (not vectors or vector.shape == vectors[0].shape) and (not index.dims or vector.shape[0] == index.dims):
                keys.append(row_key)
                vectors.append(vector)
                expiries.append(expires)
                entries.append(entry)
                stored.append(stamp.timestamp() if isinstance(stamp, datetime) else now)
                if len(keys) == 1000:
                    add()
        add()
        if index.expired_count(now) * 4 > len(index):
            index.remove_expired(now)
        partition.index, partition.synced, partition.since = index, started, newest

    def _cap_memory(self, loading: VectorIndex | None = None) -> None:
        """Keep this instance's indexes (and one being loaded) within `GATEWAY_SEMANTIC_CACHE_MAX_MIB`."""
        indexes = [p.index for p in self._partitions.values() if p.index is not None and p.index is not loading]
        evict([*indexes, loading] if loading is not None else indexes, self._max_bytes)

    async def _write(self, entity: dict[str, Any]) -> None:
        try:
            await self._store.table(TABLE).insert(entity)
        except (StorageError, Conflict) as exc:
            self._outages.failed(_STORAGE, f"writing to {_STORAGE} failed ({exc!r})")
        else:
            self._outages.recovered(_STORAGE)

    async def _clean_periodically(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                deleted = await self.cleanup()
            except Exception:
                logger.warning("Semantic cache cleanup failed; retrying in %.0f s.", interval_seconds, exc_info=True)
            else:
                if deleted:
                    logger.info("Semantic cache cleanup deleted %d expired entries.", deleted)


async def _delete(table: Table, partition_key: str, row_keys: list[str]) -> int:
    try:
        await table.transact([("delete", {"PartitionKey": partition_key, "RowKey": row_key}) for row_key in row_keys])
    except Conflict:  # another instance deleted some of them first: one by one (a missing one is fine)
        for row_key in row_keys:
            await table.delete(partition_key, row_key)
    return len(row_keys)
