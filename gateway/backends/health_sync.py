"""Backend health shared between gateway instances through Table Storage, and the health view built from it.

Table `<prefix>backendhealth` holds one row per backend per gateway instance (PartitionKey = backend id,
RowKey = instance id), so instances never overwrite each other; readers take the latest trip and the latest
wait over all rows.

* **Writes**: a trip or a longer wait (`BackendHealth.on_change`) starts a background write that the request
  never awaits. Writes coalesce: one in flight per instance, whatever changed meanwhile is written right after.
  Failure counts and latency ride along once per sync interval, when there was traffic.
* **Reads**: a background task lists the table every `GATEWAY_HEALTH_SYNC_SECONDS` (default 2), never on the
  request path, and merges what the other instances wrote. A new instance reads once before it serves.

**Bound**: after one instance received the response that trips a backend or tells it to wait, every other
instance skips that backend within **sync interval + one table write + one table read** (the write starts at
once; each takes tens of milliseconds against Table Storage, so about 2.1 s by default). Until then other
instances may still send it requests, as every APIM instance does for good (APIM instances never synchronize).

Rows of instances that stopped writing an hour ago, and whose trips and waits have passed, are deleted by the
next instance that reads them, so scale-in leaves nothing behind for long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from gateway.backends.health import BackendHealth, HealthSnapshot
from gateway.backends.backend import Backend
from gateway.backends.config import BackendConfig, Config, PoolConfig
from gateway.errors import StorageError
from gateway.stores.tables import Query, Table, Tables

logger = logging.getLogger(__name__)

TABLE = "backendhealth"
#: A row not written for this long no longer counts toward "recent" failures, requests and latency.
RECENT_SECONDS = 300.0
#: A row not written for this long, whose trip and wait have passed, is deleted.
STALE_SECONDS = 3600.0


@dataclass(frozen=True)
class HealthRow(HealthSnapshot):
    """One instance's last word about one backend: its snapshot, and whose and when."""

    backend: str
    instance: str
    updated: float

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> HealthRow:
        number = entity.get
        return cls(
            backend=unquote(entity["PartitionKey"]),
            instance=entity["RowKey"],
            open_until=float(number("OpenUntil") or 0),
            wait_until=float(number("WaitUntil") or 0),
            failures=int(number("Failures") or 0),
            requests=int(number("Requests") or 0),
            latency_p50_ms=number("LatencyP50Ms"),
            remaining_tokens=number("RemainingTokens"),
            remaining_requests=number("RemainingRequests"),
            updated=float(number("Updated") or 0),
        )


def _entity(backend_id: str, instance: str, snapshot: HealthSnapshot, now: float) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": quote(backend_id, safe=""),  # '/', '\\', '#', '?' are not allowed in keys
        "RowKey": instance,
        "OpenUntil": snapshot.open_until,
        "WaitUntil": snapshot.wait_until,
        "Failures": snapshot.failures,
        "Requests": snapshot.requests,
        "Updated": now,
    }
    optional = {
        "LatencyP50Ms": snapshot.latency_p50_ms,
        "RemainingTokens": snapshot.remaining_tokens,
        "RemainingRequests": snapshot.remaining_requests,
    }
    entity.update((name, value) for name, value in optional.items() if value is not None)
    return entity


async def read_rows(table: Table) -> list[HealthRow]:
    return [HealthRow.from_entity(entity) async for entity in table.query(Query())]


class HealthSync:
    """Publishes this instance's backend health and merges the other instances' (see the module docstring)."""

    def __init__(
        self,
        store: Tables,
        backends: Sequence[Backend],
        sync_seconds: float,
        gateway_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: Unique per process: several processes may share a GATEWAY_ID (locally, all are "local").
        self.instance = f"{gateway_id}-{secrets.token_hex(4)}"
        self._store = store
        self._health = {backend.id: backend.health for backend in backends}
        self._sync_seconds = sync_seconds
        self._clock = clock
        self._dirty: set[str] = set()
        #: `outcomes` of each backend when its row was last written: traffic since means new stats to write.
        self._written: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        """Learn current trips before serving (best effort), then keep syncing in the background."""
        if not self._health or self._poller is not None:
            return
        for health in self._health.values():
            health.on_change = self._changed
        try:
            async with asyncio.timeout(max(5.0, self._sync_seconds)):
                await self._pull()
        except (StorageError, TimeoutError):
            logger.warning("Could not read shared backend health; starting with local state only.")
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _changed(self, health: BackendHealth) -> None:
        self._dirty.add(health.id)
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._dirty:
            ids, self._dirty = self._dirty, set()
            try:
                table = self._store.table(TABLE)
                for backend_id in ids:
                    health = self._health[backend_id]
                    self._written[backend_id] = health.outcomes
                    await table.upsert(_entity(backend_id, self.instance, health.snapshot(), self._clock()))
            except StorageError:
                self._dirty |= ids  # the next poll tries again
                self._log_failure("write")
                return

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            try:
                async with asyncio.timeout(max(10.0, self._sync_seconds)):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._pull()
                self._failing = False
            except (StorageError, TimeoutError):
                self._log_failure("read")
            self._dirty.update(i for i, h in self._health.items() if h.outcomes != self._written.get(i, 0))
            if self._dirty:
                self._kick()

    async def _pull(self) -> None:
        table = self._store.table(TABLE)
        now = self._clock()
        latest: dict[str, tuple[float, float]] = {}
        for row in await read_rows(table):
            if row.instance == self.instance:
                continue
            if now - row.updated > STALE_SECONDS and max(row.open_until, row.wait_until) < now:
                await table.delete(quote(row.backend, safe=""), row.instance)
                continue
            open_until, wait_until = latest.get(row.backend, (0.0, 0.0))
            latest[row.backend] = (max(open_until, row.open_until), max(wait_until, row.wait_until))
        for backend_id, health in self._health.items():
            health.merge_remote(*latest.get(backend_id, (0.0, 0.0)))

    def _log_failure(self, what: str) -> None:
        if not self._failing:  # once per outage, not once per poll
            logger.warning("Shared backend health: %s failed (storage unavailable); local state stays in force.", what)
        self._failing = True

    async def close(self) -> None:
        for task in (self._poller, self._flusher):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._poller, self._flusher) if t is not None), return_exceptions=True)


async def backend_status(store: Tables, configs: Sequence[Config]) -> list[dict[str, Any]]:
    """The health view (`backends status`, `GET /ops/backends`): configured backends and pools, from the table."""
    rows = await read_rows(store.table(TABLE))
    return status_report(configs, rows, time.time())


def status_report(configs: Sequence[Config], rows: Iterable[HealthRow], now: float) -> list[dict[str, Any]]:
    by_backend: dict[str, list[HealthRow]] = {}
    for row in rows:
        by_backend.setdefault(row.backend, []).append(row)
    backends: dict[str, dict[str, Any]] = {}
    report = []
    for config in configs:
        if isinstance(config, BackendConfig):
            backends[config.id] = entry = _backend_entry(config, by_backend.get(config.id, []), now)
            report.append(entry)
    for config in configs:
        if isinstance(config, PoolConfig):
            members = [
                {"id": m.id, "priority": m.priority, "weight": m.weight, "available": backends[m.id]["available"]}
                for m in config.members
            ]
            active = any(member["available"] for member in members)
            report.append({"id": config.id, "type": "pool", "state": "active" if active else "inactive", "members": members})
    return report


def _backend_entry(config: BackendConfig, rows: list[HealthRow], now: float) -> dict[str, Any]:
    open_until = max((row.open_until for row in rows), default=0.0)
    wait_until = max((row.wait_until for row in rows), default=0.0)
    recent = [row for row in rows if now - row.updated <= RECENT_SECONDS]
    latencies = [row.latency_p50_ms for row in recent if row.latency_p50_ms is not None]
    tokens = [row.remaining_tokens for row in recent if row.remaining_tokens is not None]
    return {
        "id": config.id,
        "type": "backend",
        "state": "open" if open_until > now else "closed",
        "openUntil": _iso(open_until) if open_until > now else None,
        "waitUntil": _iso(wait_until) if wait_until > now else None,
        "available": open_until <= now and wait_until <= now,
        "recentFailures": sum(row.failures for row in recent),
        "recentRequests": sum(row.requests for row in recent),
        #: The median of the instances' own p50s: approximate, but needs no raw samples in the table.
        "latencyP50Ms": round(statistics.median(latencies), 2) if latencies else None,
        "remainingTokens": min(tokens) if tokens else None,
        "instances": len(recent),
        "breaker": config.circuit_breaker.name if config.circuit_breaker else None,
    }


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
