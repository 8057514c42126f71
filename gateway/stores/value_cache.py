"""The values of `cache-lookup-value` / `cache-store-value` / `cache-remove-value`, in Table Storage.

APIM keeps them in its built-in cache or an external Redis (`caching-type` internal / external /
prefer-external); here every caching type is this one store, shared by all of the gateway's instances.

Table `<prefix>valuecache`: one row per key. The key is hashed (SHA-256) into the RowKey, so any text fits a
key and no key can carry characters Table Storage refuses; PartitionKey is the hash's first two hex digits,
spreading keys over 256 partitions. The table prefix keeps the keys of gateways sharing a storage account apart.
A row holds the value as JSON (type tag included, so a number comes back a number and a JObject a JObject),
split over 64 KiB binary properties, and when it expires.

Bounds: keys up to `MAX_KEY_CHARS` characters, values up to `MAX_VALUE_BYTES` of JSON (what one entity holds,
with room to spare), TTL from 1 second to `MAX_TTL_SECONDS`. A longer key or a larger value is not stored (and
a longer key never hits): logged, never an error, as with APIM's cache.

Storage unavailable: a lookup is a miss (fail open: the request goes on as if nothing were cached), a store or
a removal is dropped; one warning per outage, one line when storage answers again. An expired row is a miss,
and `cleanup` (every `CLEANUP_SECONDS` on each instance) deletes expired rows, each only if unchanged since read.
Each lookup is one point read; each store one upsert, awaited, so a value stored is there for the next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import Conflict, EntityRejected, StorageError
from gateway.stores.tables import MAX_TRANSACTION, Query, Row, Table, Tables

logger = logging.getLogger(__name__)

TABLE = "valuecache"
MAX_KEY_CHARS = 4096
_CHUNK = 64 * 1024
#: 14 binary properties of 64 KiB: under Table Storage's 1 MiB per entity with the other properties.
MAX_CHUNKS = 14
MAX_VALUE_BYTES = MAX_CHUNKS * _CHUNK
MAX_TTL_SECONDS = 366 * 86400
CLEANUP_SECONDS = 600.0


class ValueCacheStore:
    """`policies.services.ValueCache` on Table Storage."""

    def __init__(self, tables: Tables, clock: Callable[[], float] = time.time) -> None:
        self._table: Table = tables.table(TABLE)
        self._clock = clock
        self._degraded = False
        self._cleaner: asyncio.Task[None] | None = None

    async def lookup(self, key: str) -> tuple[bool, Any]:
        address = _address(key)
        if address is None:
            return False, None
        try:
            row = await self._table.get(*address)
        except StorageError as exc:
            self._failed("lookup", exc)
            return False, None
        self._answered()
        if row is None or row.get("expiresAt", 0.0) <= self._clock():
            return False, None
        return _decode(b"".join(row.get(f"v{index}", b"") for index in range(int(row.get("chunks", 0)))))

    async def store(self, key: str, value: Any, ttl_seconds: float) -> None:
        address = _address(key)
        encoded = _encode(value)
        if address is None or len(encoded) > MAX_VALUE_BYTES:
            logger.info("cache-store-value: not stored (key of %d characters, value of %d bytes; at most %d and %d).",
                        len(key), len(encoded), MAX_KEY_CHARS, MAX_VALUE_BYTES)  # fmt: skip
            return
        ttl = min(float(ttl_seconds), MAX_TTL_SECONDS)
        if not ttl > 0:  # also refuses NaN
            return
        chunks = [encoded[start : start + _CHUNK] for start in range(0, len(encoded), _CHUNK)]
        entity = {
            "PartitionKey": address[0], "RowKey": address[1], "expiresAt": self._clock() + ttl, "chunks": len(chunks),
            **{f"v{index}": chunk for index, chunk in enumerate(chunks)},
        }  # fmt: skip
        try:
            await self._table.upsert(entity)
        except EntityRejected as exc:
            logger.warning("cache-store-value: storage refused the value (%s); not stored.", exc.message)
            return
        except StorageError as exc:
            self._failed("store", exc)
            return
        self._answered()

    async def remove(self, key: str) -> None:
        address = _address(key)
        if address is None:
            return
        try:
            await self._table.delete(*address)
        except StorageError as exc:
            self._failed("remove", exc)
            return
        self._answered()

    async def cleanup(self) -> int:
        """Delete every expired row; returns how many."""
        expired = Query(where=(("expiresAt", "lt", self._clock()),), select=("PartitionKey", "RowKey"))
        batches: dict[str, list[Row]] = {}
        async for row in self._table.query(expired):
            batches.setdefault(row["PartitionKey"], []).append(row)
        deleted = 0
        for rows in batches.values():
            for start in range(0, len(rows), MAX_TRANSACTION):
                chunk = rows[start : start + MAX_TRANSACTION]
                try:
                    await self._table.transact([("delete", row) for row in chunk])
                except Conflict:  # a row was stored again since it was read: leave this batch to the next sweep
                    continue
                deleted += len(chunk)
        return deleted

    def start_cleanup(self, interval_seconds: float = CLEANUP_SECONDS) -> None:
        self._cleaner = asyncio.get_running_loop().create_task(self._clean_periodically(interval_seconds))

    async def _clean_periodically(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.cleanup()
            except StorageError as exc:
                logger.info("Deleting expired cached values failed (%s); will retry.", exc.message)

    async def close(self) -> None:
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.gather(self._cleaner, return_exceptions=True)

    def _failed(self, what: str, exc: StorageError) -> None:
        if not self._degraded:
            self._degraded = True
            logger.warning("The value cache is unavailable (%s failed: %s): lookups miss and stores are dropped until storage answers.",
                           what, exc.message)  # fmt: skip

    def _answered(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("The value cache is available again.")


def _address(key: str) -> tuple[str, str] | None:
    """(PartitionKey, RowKey) of a key, or None for a key longer than MAX_KEY_CHARS."""
    if len(key) > MAX_KEY_CHARS:
        logger.info("A cache key of %d characters is longer than %d: never cached.", len(key), MAX_KEY_CHARS)
        return None
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:2], digest


def _encode(value: Any) -> bytes:
    """JSON with the value's kind, so what comes back is what was stored; anything JSON cannot hold (a response
    object, a NaN, an integer beyond 64 bits) is stored as its text, as a string."""
    if value is None or isinstance(value, (bool, int, str, dict, list)) or (isinstance(value, float) and math.isfinite(value)):
        try:
            return orjson.dumps({"json": value})
        except orjson.JSONEncodeError:
            pass
    return orjson.dumps({"json": str(value)})


def _decode(data: bytes) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(data)["json"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        logger.warning("A cached value could not be read; treated as a miss.")
        return False, None
