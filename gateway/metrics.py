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

Flushes run every `flush_seconds` in the background and on shutdown; what a crashed process had not flushed
(at most `flush_seconds` of its traffic) is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient

from policies.usage import Usage

logger = logging.getLogger(__name__)

METRIC_FIELDS = ("prompt", "completion", "total", "cached", "reasoning", "requests", "estimated", "cacheHits", "savedTokens")
#: APIM's metric names for the fields that are token counts.
METRIC_NAMES = {
    "prompt": "Prompt Tokens", "completion": "Completion Tokens", "total": "Total Tokens",
    "cached": "Prompt Cached Tokens", "reasoning": "Reasoning Tokens",
}  # fmt: skip
_BATCH = 100


@dataclass(frozen=True)
class SeriesKey:
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


class MetricsRecorder:
    def __init__(
        self, table: TableClient, flush_seconds: float = 10.0, exporter: AppInsightsExporter | None = None, instance: str | None = None
    ) -> None:
        self._table = table
        self._flush_seconds = flush_seconds
        self._exporter = exporter
        self.instance = instance or uuid.uuid4().hex[:12]
        self._series: dict[SeriesKey, _Totals] = {}
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record(
        self, namespace: str, dimensions: Iterable[tuple[str, str]], usage: Usage, subscription: str, deployment: str
    ) -> None:
        minute = datetime.now(timezone.utc).strftime("%Y%m%d%H%M")
        key = SeriesKey(minute, namespace, tuple(dimensions), subscription, deployment)
        totals = self._series.setdefault(key, _Totals())
        values = totals.values
        values["requests"] += 1
        if usage.from_cache:
            values["cacheHits"] += 1
            values["savedTokens"] += usage.total
        else:
            for name in ("prompt", "completion", "total", "cached", "reasoning"):
                values[name] += getattr(usage, name)
            values["estimated"] += 0 if usage.exact else 1
        totals.dirty = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:
                logger.warning("Flushing token metrics failed; will retry.", exc_info=True)

    async def flush(self) -> int:
        """Write every changed series; returns how many rows were written."""
        async with self._flush_lock:
            dirty = [(key, totals) for key, totals in self._series.items() if totals.dirty]
            by_minute: dict[str, list[tuple[SeriesKey, _Totals]]] = {}
            for key, totals in dirty:
                by_minute.setdefault(key.minute, []).append((key, totals))
                totals.dirty = False
            written = 0
            try:
                for minute, series in by_minute.items():
                    for start in range(0, len(series), _BATCH):
                        chunk = series[start : start + _BATCH]
                        operations = [("upsert", self._entity(key, totals), {"mode": UpdateMode.REPLACE}) for key, totals in chunk]
                        await self._table.submit_transaction(operations)  # type: ignore[arg-type]
                        written += len(chunk)
            except Exception:
                for _, totals in dirty:
                    totals.dirty = True  # try again on the next flush
                raise
            if self._exporter is not None and dirty:
                await self._exporter.export([(key, dict(totals.values)) for key, totals in dirty])
            self._forget_old()
            return written

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

    def _forget_old(self) -> None:
        """Series of minutes that ended two minutes ago and are flushed cannot change any more."""
        cutoff = datetime.fromtimestamp(time.time() - 120, timezone.utc).strftime("%Y%m%d%H%M")
        for key in [k for k, totals in self._series.items() if k.minute < cutoff and not totals.dirty]:
            del self._series[key]

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
        if not envelopes:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        response = await self._client.post(self._url, content=orjson.dumps(envelopes), headers={"content-type": "application/json"})
        if response.status_code >= 300:
            logger.warning("Application Insights refused %d metrics: HTTP %s.", len(envelopes), response.status_code)

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
