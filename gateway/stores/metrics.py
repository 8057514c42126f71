"""Token metrics: aggregated per minute in memory, flushed to Table Storage (and Azure Monitor) in batches.

Row layout: `gateway/stores/metric_rows.py`. Each process has its own instance id (new on every start), so
instances never write the same row and a restart never overwrites earlier totals: rows are append-only per
instance; a row is rewritten (REPLACE) only by its own instance, with its growing totals.

Metrics are APIM's: Prompt Tokens, Completion Tokens, Total Tokens, plus Cached Tokens and Reasoning Tokens
when reported; alongside, the request count, how many counts were estimated, and semantic-cache hits with
the tokens they saved. With `APPLICATIONINSIGHTS_CONNECTION_STRING` set, the same metric names are sent to
Application Insights as custom metrics in the policy's namespace (`gateway/stores/appinsights.py`).

Custom metrics (`emit-metric`) are a series kind of their own, recorded and flushed by the same recorder with
the same bounds, in their own table (gateway/stores/custom_metrics.py).

Refusals: when a policy refuses a request with 429 (rate or token limit) or 403 (quota), the gateway counts
it as `refused429` / `refused403` in its own series (namespace "", no dimensions), whether or not an
emit-token-metric policy ran, so the dashboard can show who is being turned away.

Rollups: the same traffic is also kept by subscription and deployment only, per minute, hour and day, written
by the same flush (see metric_rows.py); they are exact: the same in-memory totals, written at the same time.

No request can blind the others:

* every name and value of a series is bounded (`metric_rows.bounded`) before it is recorded;
* at most `max_series` series per minute per instance: what comes beyond goes to one overflow series per
  subscription (dimension `overflow=true`, deployment `(overflow)`), so a flood of distinct names costs neither
  memory nor rows;
* a row storage refuses is logged and dropped, and the rest of its batch is written;
* while storage is down, totals keep accumulating and are written when it answers again (exactly, since rows
  are rewritten with their totals); at most `MAX_UNWRITTEN_SERIES` series wait, beyond that the oldest minutes
  are dropped (logged).

Bound on a hard kill: flushes run every `flush_seconds` (default 5 s) in the background, and on a graceful
stop; a process killed with SIGKILL loses what it recorded since its last flush: at most `flush_seconds` of
its traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.errors import EntityRejected, StorageUnavailable
from gateway.stores.appinsights import AppInsightsExporter
from gateway.stores.custom_metrics import CustomSeries
from gateway.stores.metric_rows import (
    METRIC_FIELDS,
    MINUTE_PARTITION,
    ROLLUP_DAY_PARTITION,
    ROLLUP_HOUR_PARTITION,
    ROLLUP_LATE_SECONDS,
    ROLLUP_MINUTE_PARTITION,
    SeriesKey,
)
from gateway.stores.tables import MAX_TRANSACTION, Table
from policies.usage import Usage

if TYPE_CHECKING:
    from gateway.stores.rollups import RollupCompactor

logger = logging.getLogger(__name__)

#: Policy refusals the gateway counts, by status.
REFUSAL_FIELDS = {429: "refused429", 403: "refused403"}
#: Distinct series one instance records per minute before the rest goes to the overflow series.
MAX_SERIES_PER_MINUTE = 2000
#: Unwritten minute series kept while storage is unavailable (about 0.5 KiB each); the oldest go first.
MAX_UNWRITTEN_SERIES = 50_000
OVERFLOW_DIMENSIONS = (("overflow", "true"),)
OVERFLOW_DEPLOYMENT = "(overflow)"


@dataclass
class _Totals:
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRIC_FIELDS, 0))
    dirty: bool = True
    #: `values` when last added to the rollups (minute series only).
    rolled: dict[str, int] = field(default_factory=dict)


@dataclass
class _Level:
    """One granularity of the series: minutes in the metrics table, or minutes, hours or days in the rollup table."""

    table: Table
    #: A prefix, then a leading part of MINUTE_PARTITION: a period's key is a cut of the minute's.
    partition_format: str
    series: dict[SeriesKey, _Totals] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._prefix, _, rest = self.partition_format.partition("%")
        self._length = len(datetime(2000, 1, 1).strftime("%" + rest))

    def period(self, minute: str) -> str:
        """The partition of the period holding `minute` (`YYYYMMDDHHMM`)."""
        return self._prefix + minute[: self._length]


class MetricsRecorder:
    def __init__(
        self,
        table: Table,
        flush_seconds: float = 5.0,
        exporter: AppInsightsExporter | None = None,
        instance: str | None = None,
        rollups: Table | None = None,
        clock: Callable[[], float] = time.time,
        compactor: RollupCompactor | None = None,
        max_series: int = MAX_SERIES_PER_MINUTE,
        custom: Table | None = None,
    ) -> None:
        self._flush_seconds = flush_seconds
        self._compactor = compactor
        self._exporter = exporter
        self._clock = clock
        self._max_series = max_series
        self.instance = instance or uuid.uuid4().hex[:12]
        self._minutes = _Level(table, MINUTE_PARTITION)
        self._rollups = [
            _Level(rollups, partition) for partition in (ROLLUP_MINUTE_PARTITION, ROLLUP_HOUR_PARTITION, ROLLUP_DAY_PARTITION)
        ] if rollups is not None else []  # fmt: skip
        #: Minute rows first: `flush` returns their count and exports them.
        self._levels = [self._minutes, *self._rollups]
        #: Series recorded per minute, for the cap.
        self._series_per_minute: dict[str, int] = {}
        #: emit-metric's series; None: the recorder has no table for them and drops them.
        self._custom = CustomSeries(custom, max_series) if custom is not None else None
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._minute_start = float("-inf")
        self._minute = ""

    def record(self, namespace: str, dimensions: Iterable[tuple[str, str]], usage: Usage, subscription: str, deployment: str) -> None:
        increments = {"requests": 1}
        if usage.from_cache:
            increments.update(cacheHits=1, savedTokens=usage.total)
        else:
            increments.update((name, getattr(usage, name)) for name in ("prompt", "completion", "total", "cached", "reasoning"))
            increments["estimated"] = 0 if usage.exact else 1
        self._add(namespace, tuple(dimensions), subscription, deployment, increments)

    def record_custom(self, namespace: str, name: str, value: float, dimensions: Iterable[tuple[str, str]]) -> None:
        """One `emit-metric` value, summed per minute in its own series (gateway/stores/custom_metrics.py)."""
        if self._custom is not None:
            self._custom.add(self._minute_key(), namespace, name, value, dimensions)

    def record_refusal(self, status: int, subscription: str, deployment: str) -> None:
        """Count a policy's 429 or 403 answer in the gateway's own series (other statuses are not refusals)."""
        name = REFUSAL_FIELDS.get(status)
        if name is not None:
            self._add("", (), subscription, deployment, {name: 1})

    def _add(self, namespace: str, dimensions: tuple[tuple[str, str], ...], subscription: str, deployment: str, increments: dict[str, int]) -> None:
        minute = self._minute_key()
        key = SeriesKey.of(minute, namespace, dimensions, subscription, deployment)
        series = self._minutes.series
        totals = series.get(key)
        if totals is None:
            recorded = self._series_per_minute.get(minute, 0)
            if recorded >= self._max_series:
                key = SeriesKey.of(minute, namespace, OVERFLOW_DIMENSIONS, subscription, OVERFLOW_DEPLOYMENT)
                totals = series.get(key)
            if totals is None:
                totals = series[key] = _Totals()
                self._series_per_minute[minute] = recorded + 1
        for name, value in increments.items():
            totals.values[name] += value
        totals.dirty = True

    def _minute_key(self) -> str:
        """The current minute's partition key, formatted once per minute rather than once per request."""
        now = self._clock()
        if not self._minute_start <= now < self._minute_start + 60:
            self._minute_start = now - now % 60
            self._minute = datetime.fromtimestamp(self._minute_start, UTC).strftime(MINUTE_PARTITION)
        return self._minute

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
        failing = False
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
                failing = False
            except StorageUnavailable:
                if not failing:  # once per outage; the totals wait in memory
                    logger.warning("Flushing token metrics failed: storage is unavailable; will retry.")
                failing = True
            except Exception:
                logger.exception("Flushing token metrics failed; will retry.")
            if self._compactor is not None and not failing:
                try:
                    await self._compactor.run_if_due()
                except Exception:
                    logger.warning("Folding closed metric rollups failed; will retry.", exc_info=True)

    async def flush(self) -> int:
        """Write every changed series (minutes and rollups); returns how many minute rows were written."""
        async with self._flush_lock:
            self._roll_up()
            self._drop_late_rollups()
            self._drop_unflushable_minutes()
            dirty = [[(key, totals) for key, totals in level.series.items() if totals.dirty] for level in self._levels]
            for series in dirty:
                for _, totals in series:
                    totals.dirty = False
            try:
                for level, series in zip(self._levels, dirty):
                    await self._write(level, series)
            except Exception:
                for series in dirty:
                    for _, totals in series:
                        totals.dirty = True  # try again on the next flush
                raise
            minutes = [(key, totals) for key, totals in dirty[0] if key in self._minutes.series]
            if self._exporter is not None and minutes:
                await self._exporter.export([(key, dict(totals.values)) for key, totals in minutes])
            if self._custom is not None:
                custom = await self._custom.flush(self.instance)
                if self._exporter is not None and custom:
                    await self._exporter.export_custom([(key, totals.sum, totals.count) for key, totals in custom])
            self._forget_old()
            return len(minutes)

    async def _write(self, level: _Level, dirty: list[tuple[SeriesKey, _Totals]]) -> None:
        """Upsert in transactions (one partition, up to 100 rows); a row storage refuses is dropped, not retried."""
        by_partition: dict[str, list[tuple[SeriesKey, _Totals]]] = {}
        for key, totals in dirty:
            by_partition.setdefault(key.minute, []).append((key, totals))
        for series in by_partition.values():
            for start in range(0, len(series), MAX_TRANSACTION):
                chunk = series[start : start + MAX_TRANSACTION]
                while chunk:
                    try:
                        await level.table.transact([("upsert", key.entity(self.instance, totals.values)) for key, totals in chunk])
                        break
                    except EntityRejected as exc:
                        key = chunk.pop(min(exc.index, len(chunk) - 1))[0]
                        level.series.pop(key, None)
                        logger.error("Dropped a metric series that storage refuses (%s): %s.", exc.message, key.row_key(self.instance))

    def _drop_late_rollups(self) -> None:
        """Never write a rollup row of a period that ended ROLLUP_LATE_SECONDS ago: it may be folded already
        (gateway/stores/rollups.py folds only later), and rewriting it would count it twice. Only a flush that
        kept failing for that long gets here; its minute rows are still written."""
        late = datetime.fromtimestamp(self._clock() - ROLLUP_LATE_SECONDS, UTC)
        for level in self._rollups:
            cutoff = late.strftime(level.partition_format)
            stale = [key for key, totals in level.series.items() if key.minute < cutoff and totals.dirty]
            for key in stale:
                del level.series[key]
            if stale:
                logger.warning("Dropped %d unwritten rollup rows of periods that closed over %d s ago.", len(stale), ROLLUP_LATE_SECONDS)

    def _drop_unflushable_minutes(self) -> None:
        """Bound memory during a long storage outage: at most MAX_UNWRITTEN_SERIES minute series, oldest dropped first."""
        series = self._minutes.series
        excess = len(series) - MAX_UNWRITTEN_SERIES
        if excess <= 0:
            return
        for key in sorted(series, key=lambda key: key.minute)[:excess]:
            del series[key]
        logger.error("Dropped the %d oldest unwritten metric series: storage has been unavailable too long.", excess)

    def _forget_old(self) -> None:
        """Series of periods that ended two minutes ago and are flushed cannot change any more."""
        past = datetime.fromtimestamp(self._clock() - 120, UTC)
        for level in self._levels:
            cutoff = past.strftime(level.partition_format)
            for key in [k for k, totals in level.series.items() if k.minute < cutoff and not totals.dirty]:
                del level.series[key]
        minute_cutoff = past.strftime(MINUTE_PARTITION)
        for minute in [minute for minute in self._series_per_minute if minute < minute_cutoff]:
            del self._series_per_minute[minute]
        if self._custom is not None:
            self._custom.forget_before(minute_cutoff)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():  # done already if its event loop has shut down
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()
        if self._exporter is not None:
            await self._exporter.close()
