"""Backend health shared between gateway instances through Table Storage, and the health view built from it.

Two tables, so that what every instance polls stays one entity however many instances there are:

* `<prefix>backendtrips`: **one row** holding, per backend, the latest trip and the latest wait any instance
  announced (JSON `{backend: [open_until, wait_until]}`; entries that have passed are pruned on every write).
  This is what instances poll.
* `<prefix>backendhealth`: one row per backend per gateway instance (PartitionKey = backend id, RowKey =
  instance id), so instances never overwrite each other: its trip, wait, failure counts, latency and headroom,
  for the health view (`backends status`, `GET /ops/backends`). No instance polls it.

* **Writes**: a trip or a longer wait (`BackendHealth.on_change`) starts a background write that the request
  never awaits: an ETag-checked merge into the summary row (skipped when the row already says as much, within
  `ANNOUNCE_SLACK_SECONDS`), then the instance's own row. Writes coalesce: one in flight per instance, whatever
  changed meanwhile is written right after. Failure counts and latency ride along in the instance's own row
  once per sync interval, when there was traffic.
* **Reads**: a background task reads the summary row every `GATEWAY_HEALTH_SYNC_SECONDS` (default 2), never on
  the request path: one point read, where listing every instance's rows cost N entities per read, N²/2
  entities per second per backend partition over N instances (docs/scale.md). A new instance reads once
  before it serves.

**Bound**: after one instance received the response that trips a backend or tells it to wait, every other
instance skips that backend within **sync interval + one table write + one table read** (the write starts at
once; each takes tens of milliseconds against Table Storage, so about 2.1 s by default; a write that loses a
race to another instance's announcement retries at once). Until then other instances may still send it
requests, as every APIM instance does for good (APIM instances never synchronize).

Rows of instances that stopped writing an hour ago, and whose trips and waits have passed, are deleted by a
sweep each instance runs every `SWEEP_SECONDS` (and the first time at a random point within that), so scale-in
leaves nothing behind for long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import secrets
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

from gateway.backends.backend import Backend
from gateway.backends.config import BackendConfig, Config, PoolConfig
from gateway.backends.health import BackendHealth, HealthSnapshot
from gateway.errors import StorageError
from gateway.stores.tables import Entity, Query, Row, Table, Tables, update_with_retry

logger = logging.getLogger(__name__)

TABLE = "backendhealth"
SUMMARY_TABLE = "backendtrips"
_SUMMARY_KEY = ("summary", "trips")
#: A trip or wait that ends less than this after what the summary row already says is not worth a (contended) write.
ANNOUNCE_SLACK_SECONDS = 0.5
#: How often each instance deletes the rows of instances gone for STALE_SECONDS.
SWEEP_SECONDS = 600.0
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
        #: Backends whose trip or wait changed: announced in the summary row, then written to our own row.
        self._announce: set[str] = set()
        #: Backends whose stats changed: written to our own row only.
        self._dirty: set[str] = set()
        #: `outcomes` of each backend when its row was last written: traffic since means new stats to write.
        self._written: dict[str, int] = {}
        self._next_sweep = time.monotonic() + random.uniform(0, SWEEP_SECONDS)  # instances started together spread out
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
        self._announce.add(health.id)
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._announce or self._dirty:
            announce, self._announce = self._announce, set()
            ids, self._dirty = self._dirty | announce, set()
            try:
                if announce:
                    merged = self._merged  # awaited right here: the lambda never outlives this pass
                    await update_with_retry(self._store.table(SUMMARY_TABLE), *_SUMMARY_KEY, lambda row: merged(row, announce))  # noqa: B023
                table = self._store.table(TABLE)
                for backend_id in ids:
                    health = self._health[backend_id]
                    self._written[backend_id] = health.outcomes
                    await table.upsert(_entity(backend_id, self.instance, health.snapshot(), self._clock()))
            except StorageError:
                self._announce |= announce  # the next poll tries again
                self._dirty |= ids
                self._log_failure("write")
                return

    def _merged(self, row: Row | None, announce: Iterable[str]) -> Entity | None:
        """The summary row with our trips and waits in it (passed ones pruned), or None if it says as much already."""
        now = self._clock()
        trips = {backend: times for backend, times in _trips(row).items() if max(times) > now}
        news = False
        for backend_id in announce:
            health = self._health[backend_id]
            open_until, wait_until = trips.get(backend_id, (0.0, 0.0))
            if max(health.open_until - open_until, health.wait_until - wait_until) > ANNOUNCE_SLACK_SECONDS:
                trips[backend_id] = (max(open_until, health.open_until), max(wait_until, health.wait_until))
                news = True
        if not news:
            return None
        return {"PartitionKey": _SUMMARY_KEY[0], "RowKey": _SUMMARY_KEY[1], "trips": orjson.dumps(trips).decode()}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            try:
                async with asyncio.timeout(max(10.0, self._sync_seconds)):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._pull()
                    if time.monotonic() >= self._next_sweep:
                        self._next_sweep = time.monotonic() + SWEEP_SECONDS
                        await self.sweep()
                self._failing = False
            except (StorageError, TimeoutError):
                self._log_failure("read")
            self._dirty.update(i for i, h in self._health.items() if h.outcomes != self._written.get(i, 0))
            if self._dirty:
                self._kick()

    async def _pull(self) -> None:
        trips = _trips(await self._store.table(SUMMARY_TABLE).get(*_SUMMARY_KEY))
        for backend_id, health in self._health.items():
            health.merge_remote(*trips.get(backend_id, (0.0, 0.0)))

    async def sweep(self) -> None:
        """Delete the rows of instances that stopped writing STALE_SECONDS ago and whose trips and waits passed."""
        table = self._store.table(TABLE)
        now = self._clock()
        for row in await read_rows(table):
            if row.instance != self.instance and now - row.updated > STALE_SECONDS and max(row.open_until, row.wait_until) < now:
                await table.delete(quote(row.backend, safe=""), row.instance)

    def _log_failure(self, what: str) -> None:
        if not self._failing:  # once per outage, not once per poll
            logger.warning("Shared backend health: %s failed (storage unavailable); local state stays in force.", what)
        self._failing = True

    async def close(self) -> None:
        for task in (self._poller, self._flusher):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._poller, self._flusher) if t is not None), return_exceptions=True)


def _trips(row: Row | None) -> dict[str, tuple[float, float]]:
    """The summary row's `{backend: (open_until, wait_until)}`; anything unreadable counts as no news."""
    if row is None or not isinstance(row.get("trips"), str):
        return {}
    try:
        parsed = orjson.loads(row["trips"])
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        str(backend): (float(times[0]), float(times[1]))
        for backend, times in parsed.items()
        if isinstance(times, list) and len(times) == 2 and all(isinstance(t, (int, float)) for t in times)
    }


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
            members = [{"id": m.id, "priority": m.priority, "weight": m.weight, "available": backends[m.id]["available"]} for m in config.members]
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
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
