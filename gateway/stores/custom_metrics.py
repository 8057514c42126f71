"""The custom metrics of `emit-metric`: a series kind of its own beside the token metrics, same recorder.

APIM sends each value to Application Insights as a custom metric (a double, pre-aggregated). Here values are
summed per minute in memory — sum, count, minimum, maximum per (namespace, name, dimensions) — and the
recorder of gateway/stores/metrics.py writes them with its flushes to table `<prefix>custommetrics`
(PartitionKey the UTC minute `YYYYMMDDHHMM`, RowKey `<instance>-<hash>`: append-only per instance, like the
token rows) and sends what they gained to Application Insights with the token metrics' exporter.

Bounded like the token metrics: names and dimension values cut by `metric_rows.bounded`, at most
`MAX_DIMENSIONS` dimensions, at most `max_series` series per minute per instance (what comes beyond goes to
one overflow series per metric, dimension `overflow=true`), at most `MAX_UNWRITTEN_SERIES` waiting while
storage is down (the oldest minutes go first, logged).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import EntityRejected
from gateway.stores.metric_rows import MAX_DIMENSIONS, bounded
from gateway.stores.tables import MAX_TRANSACTION, Table

logger = logging.getLogger(__name__)

TABLE = "custommetrics"
MAX_SERIES_PER_MINUTE = 2000
MAX_UNWRITTEN_SERIES = 20_000
OVERFLOW_DIMENSIONS = (("overflow", "true"),)


@dataclass(frozen=True)
class CustomKey:
    minute: str
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, minute: str, namespace: str, name: str, dimensions: Iterable[tuple[str, str]]) -> CustomKey:
        kept = tuple((bounded(key), bounded(value)) for key, value in list(dimensions)[:MAX_DIMENSIONS])
        return cls(minute, bounded(namespace), bounded(name), kept)

    def row_key(self, instance: str) -> str:
        digest = hashlib.sha1(orjson.dumps([self.namespace, self.name, self.dimensions])).hexdigest()
        return f"{instance}-{digest[:20]}"


@dataclass
class CustomTotals:
    sum: float = 0.0
    count: int = 0
    min: float = math.inf
    max: float = -math.inf
    dirty: bool = True

    def add(self, value: float) -> None:
        self.sum += value
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.dirty = True

    def entity(self, key: CustomKey, instance: str) -> dict[str, Any]:
        return {
            "PartitionKey": key.minute, "RowKey": key.row_key(instance), "instance": instance, "namespace": key.namespace,
            "name": key.name, "dimensions": orjson.dumps(dict(key.dimensions)).decode(),
            "sum": self.sum, "count": self.count, "min": self.min, "max": self.max,
        }  # fmt: skip


class CustomSeries:
    """This instance's custom-metric series, by minute, until they are written and can no longer change."""

    def __init__(self, table: Table, max_series: int = MAX_SERIES_PER_MINUTE) -> None:
        self._table = table
        self._max_series = max_series
        self.series: dict[CustomKey, CustomTotals] = {}
        self._per_minute: dict[str, int] = {}

    def add(self, minute: str, namespace: str, name: str, value: float, dimensions: Iterable[tuple[str, str]]) -> None:
        if not math.isfinite(value):
            return
        key = CustomKey.of(minute, namespace, name, dimensions)
        totals = self.series.get(key)
        if totals is None:
            recorded = self._per_minute.get(minute, 0)
            if recorded >= self._max_series:
                key = CustomKey.of(minute, namespace, name, OVERFLOW_DIMENSIONS)
                totals = self.series.get(key)
            if totals is None:
                totals = self.series[key] = CustomTotals()
                self._per_minute[minute] = recorded + 1
        totals.add(value)

    async def flush(self, instance: str) -> list[tuple[CustomKey, CustomTotals]]:
        """Write every changed series; returns them (for the exporter). A storage failure leaves them dirty."""
        self._drop_unflushable()
        dirty = [(key, totals) for key, totals in self.series.items() if totals.dirty]
        for _, totals in dirty:
            totals.dirty = False
        try:
            await self._write(dirty, instance)
        except Exception:
            for _, totals in dirty:
                totals.dirty = True
            raise
        return [(key, totals) for key, totals in dirty if key in self.series]

    async def _write(self, dirty: list[tuple[CustomKey, CustomTotals]], instance: str) -> None:
        by_minute: dict[str, list[tuple[CustomKey, CustomTotals]]] = {}
        for key, totals in dirty:
            by_minute.setdefault(key.minute, []).append((key, totals))
        for rows in by_minute.values():
            for start in range(0, len(rows), MAX_TRANSACTION):
                chunk = rows[start : start + MAX_TRANSACTION]
                while chunk:
                    try:
                        await self._table.transact([("upsert", totals.entity(key, instance)) for key, totals in chunk])
                        break
                    except EntityRejected as exc:
                        key = chunk.pop(min(exc.index, len(chunk) - 1))[0]
                        self.series.pop(key, None)
                        logger.error("Dropped a custom metric series that storage refuses (%s): %s.", exc.message, key.row_key(instance))

    def forget_before(self, minute: str) -> None:
        """Series of minutes before `minute` that are written cannot change any more."""
        for key in [key for key, totals in self.series.items() if key.minute < minute and not totals.dirty]:
            del self.series[key]
        for old in [old for old in self._per_minute if old < minute]:
            del self._per_minute[old]

    def _drop_unflushable(self) -> None:
        excess = len(self.series) - MAX_UNWRITTEN_SERIES
        if excess > 0:
            for key in sorted(self.series, key=lambda key: key.minute)[:excess]:
                del self.series[key]
            logger.error("Dropped the %d oldest unwritten custom metric series: storage has been unavailable too long.", excess)
