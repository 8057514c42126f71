"""Token metrics: aggregated per minute in memory, flushed to Table Storage (and Azure Monitor) in batches.

Table `<prefix>metrics`, one row per (minute, instance, namespace, dimensions, subscription, deployment):

* PartitionKey: the UTC minute, `YYYYMMDDHHMM`, so a time range is a partition range;
* RowKey: `<instance id>-<hash of the rest>`. Each process has its own instance id (new on every start), so
  instances never write the same row and a restart never overwrites earlier totals: rows are append-only
  per instance. A row is rewritten (REPLACE) only by its own instance, with its growing totals.

Metrics are APIM's: Prompt Tokens, Completion Tokens, Total Tokens, plus Cached Tokens and Reasoning Tokens
when reported; alongside, the request count, how many counts were estimated, and semantic-cache hits with
the tokens they saved. With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, the same metric names are sent to
Application Insights as custom metrics in the policy's namespace, so APIM workbooks keep working.

Refusals: when a policy refuses a request with 429 (rate or token limit) or 403 (quota), the gateway counts
it as `refused429` / `refused403` in its own series (namespace "", no dimensions), whether or not an
emit-token-metric policy ran, so the dashboard can show who is being turned away.

Rollups: with a rollup table, the same traffic is also kept by subscription and deployment only (namespace and
dimensions summed away), per minute (PartitionKey `m` + `YYYYMMDDHHMM`), hour (`h` + `YYYYMMDDHH`) and day
(`d` + `YYYYMMDD`), written by the same flush. Reading a day or a month (the dashboard) then takes 24 or 30
partitions instead of 1,440 or 43,200, and a partition holds one row per subscription, deployment and instance
however many dimension values there are. They are exact: the same in-memory totals, written at the same time,
append-only per instance like the minute rows. Traffic from before rollups existed has no rollup rows.

Flushes run every `flush_seconds` in the background and on shutdown; what a crashed process had not flushed
(at most `flush_seconds` of its traffic) is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient

from policies.usage import Usage

if TYPE_CHECKING:
    from gateway.stores.rollups import RollupCompactor

logger = logging.getLogger(__name__)

METRIC_FIELDS = (
    "prompt", "completion", "total", "cached", "reasoning", "requests", "estimated", "cacheHits", "savedTokens",
    "refused429", "refused403",
)  # fmt: skip
#: Policy refusals the gateway counts, by status.
REFUSAL_FIELDS = {429: "refused429", 403: "refused403"}
#: The table (after the prefix) holding the rollups: per minute, hour and day, by subscription and deployment.
ROLLUP_TABLE = "metricsrollup"
MINUTE_PARTITION = "%Y%m%d%H%M"
ROLLUP_MINUTE_PARTITION = "m%Y%m%d%H%M"
ROLLUP_HOUR_PARTITION = "h%Y%m%d%H"
ROLLUP_DAY_PARTITION = "d%Y%m%d"
#: A rollup row is never written once its period ended this long ago (see `_drop_late_rollups`).
ROLLUP_LATE_SECONDS = 1800
#: APIM's metric names for the fields that are token counts.
METRIC_NAMES = {
    "prompt": "Prompt Tokens", "completion": "Completion Tokens", "total": "Total Tokens",
    "cached": "Prompt Cached Tokens", "reasoning": "Reasoning Tokens",
}  # fmt: skip
_BATCH = 100


def field_value(value: Any) -> int:
    """A metric field as read back from the table (an Int64 `EntityProperty`, or a plain int)."""
    return int(value.value if isinstance(value, EntityProperty) else value or 0)


@dataclass(frozen=True)
class SeriesKey:
    #: The PartitionKey: a minute `YYYYMMDDHHMM`, or a minute, hour or day of a rollup (`m…`, `h…`, `d…`).
    minute: str
    namespace: str
    dimensions: tuple[tuple[str, str], ...]
    subscription: str
    deployment: str

    def row_key(self, instance: str) -> str:
        digest = hashlib.sha1(orjson.dumps([self.namespace, self.dimensions, self.subscription, self.deployment])).hexdigest()
        return f"{instance}-{digest[:20]}"


@dataclass
class _Totals:
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRIC_FIELDS, 0))
    dirty: bool = True
    #: `values` when last added to the rollups (minute series only).
    rolled: dict[str, int] = field(default_factory=dict)


@dataclass
class _Level:
    """One granularity of the series: minutes in the metrics table, or minutes, hours or days in the rollup table."""

    table: TableClient
    #: A prefix, then a leading part of MINUTE_PARTITION: a period's key is a cut of the minute's.
    partition_format: str
    series: dict[SeriesKey, _Totals] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._prefix, _, rest = self.partition_format.partition("%")
        assert MINUTE_PARTITION.startswith("%" + rest), self.partition_format
        self._length = len(datetime(2000, 1, 1).strftime("%" + rest))

    def period(self, minute: str) -> str:
        """The partition of the period holding `minute` (`YYYYMMDDHHMM`)."""
        return self._prefix + minute[: self._length]


class MetricsRecorder:
    def __init__(
        self,
        table: TableClient,
        flush_seconds: float = 10.0,
        exporter: AppInsightsExporter | None = None,
        instance: str | None = None,
        rollups: TableClient | None = None,
        clock: Callable[[], float] = time.time,
        compactor: RollupCompactor | None = None,
    ) -> None:
        self._flush_seconds = flush_seconds
        self._compactor = compactor
        self._exporter = exporter
        self._clock = clock
        self.instance = instance or uuid.uuid4().hex[:12]
        self._minutes = _Level(table, MINUTE_PARTITION)
        self._rollups = [
            _Level(rollups, partition) for partition in (ROLLUP_MINUTE_PARTITION, ROLLUP_HOUR_PARTITION, ROLLUP_DAY_PARTITION)
        ] if rollups is not None else []  # fmt: skip
        #: Minute rows first: `flush` returns their count and exports them.
        self._levels = [self._minutes, *self._rollups]
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record(
        self, namespace: str, dimensions: Iterable[tuple[str, str]], usage: Usage, subscription: str, deployment: str
    ) -> None:
        increments = {"requests": 1}
        if usage.from_cache:
            increments.update(cacheHits=1, savedTokens=usage.total)
        else:
            increments.update((name, getattr(usage, name)) for name in ("prompt", "completion", "total", "cached", "reasoning"))
            increments["estimated"] = 0 if usage.exact else 1
        self._add(namespace, tuple(dimensions), subscription, deployment, increments)

    def record_refusal(self, status: int, subscription: str, deployment: str) -> None:
        """Count a policy's 429 or 403 answer in the gateway's own series (other statuses are not refusals)."""
        name = REFUSAL_FIELDS.get(status)
        if name is not None:
            self._add("", (), subscription, deployment, {name: 1})

    def _add(
        self, namespace: str, dimensions: tuple[tuple[str, str], ...], subscription: str, deployment: str, increments: dict[str, int]
    ) -> None:
        minute = datetime.fromtimestamp(self._clock(), timezone.utc).strftime(MINUTE_PARTITION)
        totals = self._minutes.series.setdefault(SeriesKey(minute, namespace, dimensions, subscription, deployment), _Totals())
        for name, value in increments.items():
            totals.values[name] += value
        totals.dirty = True

    def _roll_up(self) -> None:
        """Add what each minute series gained since the last flush to its rollups: once per flush, not per request."""
        if not self._rollups:
            return
        for key, totals in self._minutes.series.items():
            if not totals.dirty:
                continue
            gained = {name: value - totals.rolled.get(name, 0) for name, value in totals.values.items()}
            totals.rolled = dict(totals.values)
            for level in self._rollups:
                rollup = level.series.setdefault(SeriesKey(level.period(key.minute), "", (), key.subscription, key.deployment), _Totals())
                for name, value in gained.items():
                    rollup.values[name] += value
                rollup.dirty = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                logger.warning("Flushing token metrics failed; will retry.", exc_info=True)
            if self._compactor is not None:
                try:
                    await self._compactor.run_if_due()
                except Exception:
                    logger.warning("Folding closed metric rollups failed; will retry.", exc_info=True)

    async def flush(self) -> int:
        """Write every changed series (minutes and rollups); returns how many minute rows were written."""
        async with self._flush_lock:
            self._roll_up()
            self._drop_late_rollups()
            dirty = [[(key, totals) for key, totals in level.series.items() if totals.dirty] for level in self._levels]
            for series in dirty:
                for _, totals in series:
                    totals.dirty = False
            try:
                for level, series in zip(self._levels, dirty):
                    await self._write(level.table, series)
            except Exception:
                for series in dirty:
                    for _, totals in series:
                        totals.dirty = True  # try again on the next flush
                raise
            minutes = dirty[0]
            if self._exporter is not None and minutes:
                await self._exporter.export([(key, dict(totals.values)) for key, totals in minutes])
            self._forget_old()
            return len(minutes)

    async def _write(self, table: TableClient, dirty: list[tuple[SeriesKey, _Totals]]) -> None:
        """Upsert in transactions, which Table Storage allows within one partition and up to 100 rows."""
        by_partition: dict[str, list[tuple[SeriesKey, _Totals]]] = {}
        for key, totals in dirty:
            by_partition.setdefault(key.minute, []).append((key, totals))
        for series in by_partition.values():
            for start in range(0, len(series), _BATCH):
                chunk = series[start : start + _BATCH]
                operations = [("upsert", self._entity(key, totals), {"mode": UpdateMode.REPLACE}) for key, totals in chunk]
                await table.submit_transaction(operations)  # type: ignore[arg-type]

    def _entity(self, key: SeriesKey, totals: _Totals) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": key.minute,
            "RowKey": key.row_key(self.instance),
            "instance": self.instance,
            "namespace": key.namespace,
            "dimensions": orjson.dumps(dict(key.dimensions)).decode(),
            "subscription": key.subscription,
            "deployment": key.deployment,
        }
        for name, value in totals.values.items():
            entity[name] = EntityProperty(value, EdmType.INT64)
        return entity

    def _drop_late_rollups(self) -> None:
        """Never write a rollup row of a period that ended ROLLUP_LATE_SECONDS ago: it may be folded already
        (gateway/rollups.py folds only later), and rewriting it would count it twice. Only a flush that kept
        failing for that long gets here; its minute rows are still written."""
        late = datetime.fromtimestamp(self._clock() - ROLLUP_LATE_SECONDS, timezone.utc)
        for level in self._rollups:
            cutoff = late.strftime(level.partition_format)
            stale = [key for key, totals in level.series.items() if key.minute < cutoff and totals.dirty]
            for key in stale:
                del level.series[key]
            if stale:
                logger.warning("Dropped %d unwritten rollup rows of periods that closed over %d s ago.", len(stale), ROLLUP_LATE_SECONDS)

    def _forget_old(self) -> None:
        """Series of periods that ended two minutes ago and are flushed cannot change any more."""
        past = datetime.fromtimestamp(self._clock() - 120, timezone.utc)
        for level in self._levels:
            cutoff = past.strftime(level.partition_format)
            for key in [k for k, totals in level.series.items() if k.minute < cutoff and not totals.dirty]:
                del level.series[key]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        if self._exporter is not None:
            await self._exporter.close()


class AppInsightsExporter:
    """Sends the same metrics to Application Insights' ingestion endpoint as pre-aggregated custom metrics."""

    def __init__(self, connection_string: str) -> None:
        parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        self._ikey = parts.get("InstrumentationKey", "")
        endpoint = parts.get("IngestionEndpoint", "https://dc.services.visualstudio.com").rstrip("/")
        self._url = endpoint + "/v2/track"
        self._client: Any = None
        self._sent: dict[tuple[SeriesKey, str], int] = {}

    async def export(self, series: list[tuple[SeriesKey, dict[str, int]]]) -> None:
        """Send what each series gained since the last export (totals are cumulative per minute)."""
        import httpx

        envelopes = []
        for key, values in series:
            for name, metric in METRIC_NAMES.items():
                delta = values[name] - self._sent.get((key, name), 0)
                if delta <= 0:
                    continue
                self._sent[(key, name)] = values[name]
                envelopes.append(self._envelope(key, metric, delta))
        self._forget_before(min(key.minute for key, _ in series) if series else "")
        if not envelopes:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        response = await self._client.post(self._url, content=orjson.dumps(envelopes), headers={"content-type": "application/json"})
        if response.status_code >= 300:
            logger.warning("Application Insights refused %d metrics: HTTP %s.", len(envelopes), response.status_code)

    def _forget_before(self, minute: str) -> None:
        """Minutes older than any series still being flushed will not grow again: drop what was sent for them."""
        for sent in [sent for sent in self._sent if sent[0].minute < minute]:
            del self._sent[sent]

    def _envelope(self, key: SeriesKey, metric: str, value: int) -> dict[str, Any]:
        minute = datetime.strptime(key.minute, "%Y%m%d%H%M").replace(tzinfo=timezone.utc)
        return {
            "name": "Microsoft.ApplicationInsights.Metric",
            "time": minute.isoformat().replace("+00:00", "Z"),
            "iKey": self._ikey,
            "data": {
                "baseType": "MetricData",
                "baseData": {
                    "ver": 2,
                    "metrics": [{"ns": key.namespace, "name": metric, "kind": 1, "value": value, "count": 1}],
                    "properties": dict(key.dimensions),
                },
            },
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
