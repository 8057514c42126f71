"""What the dashboard shows, read from the metrics tables: token use, refusals and cache hits per time bucket.

Each window reads the coarsest rows that still give its buckets, so a page costs a bounded number of rows
however much history the tables hold:

* `1h`: the minute rollups of the last 60 minutes, `24h`: the hourly rollups of the last 24 hours, `30d`: the
  daily rollups of the last 30 days (table `<prefix>metricsrollup`, written by the metrics flush, one row per
  subscription, deployment and instance in each partition; see gateway/stores/metric_rows.py).

Rows are summed over instances: a bucket's tokens are what every gateway instance recorded for it, over every
namespace and dimension. The current bucket is partial (it fills as instances flush).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.stores.metric_rows import METRIC_FIELDS, ROLLUP_DAY_PARTITION, ROLLUP_HOUR_PARTITION, ROLLUP_MINUTE_PARTITION
from gateway.stores.tables import Query, Table

_SELECT = ("PartitionKey", "subscription", "deployment", *METRIC_FIELDS)


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    partition_format: str
    bucket: timedelta
    buckets: int

    @property
    def bucket_minutes(self) -> float:
        return self.bucket.total_seconds() / 60

    def periods(self, now: datetime) -> list[tuple[str, datetime]]:
        """The window's buckets, oldest first: (PartitionKey, start) for each, the last one holding `now`."""
        seconds = int(self.bucket.total_seconds())
        last = datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
        starts = [last - self.bucket * back for back in range(self.buckets - 1, -1, -1)]
        return [(start.strftime(self.partition_format), start) for start in starts]


WINDOWS: dict[str, Window] = {
    window.name: window
    for window in (
        Window("1h", "last hour", ROLLUP_MINUTE_PARTITION, timedelta(minutes=1), 60),
        Window("24h", "last 24 hours", ROLLUP_HOUR_PARTITION, timedelta(hours=1), 24),
        Window("30d", "last 30 days", ROLLUP_DAY_PARTITION, timedelta(days=1), 30),
    )
}
DEFAULT_WINDOW = "24h"


@dataclass
class Breakdown:
    """Totals of every metric field per group (subscription or deployment), and total tokens per bucket."""

    buckets: int
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=dict)

    def add(self, group: str, bucket: int, values: Mapping[str, int]) -> None:
        row = self.totals.get(group)
        if row is None:
            row = self.totals[group] = dict.fromkeys(METRIC_FIELDS, 0)
            self.tokens[group] = [0] * self.buckets
        for name, value in values.items():
            row[name] += value
        self.tokens[group][bucket] += values["total"]

    def ranked(self) -> list[str]:
        """Groups by tokens, then by refusals and requests (a refused-only subscription still shows), then name."""
        return sorted(self.totals, key=lambda g: (-self.totals[g]["total"], -refusals(self.totals[g]), -self.totals[g]["requests"], g))


@dataclass
class Summary:
    window: Window
    periods: list[tuple[str, datetime]]
    totals: dict[str, int]
    subscriptions: Breakdown
    deployments: Breakdown
    rows_read: int

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of metered requests answered from the semantic cache (None without metered requests)."""
        requests = self.totals["requests"]
        return self.totals["cacheHits"] / requests if requests else None


def refusals(values: Mapping[str, int]) -> int:
    return values["refused429"] + values["refused403"]


async def summarize(table: Table, window: Window, now: datetime | None = None) -> Summary:
    """Read the window's rows (one partition range, only the needed columns) and sum them per bucket and group."""
    periods = window.periods(now or datetime.now(UTC))
    query = Query(partition_from=periods[0][0], partition_through=periods[-1][0], select=_SELECT)
    return aggregate(window, periods, [entity async for entity in table.query(query)])


def aggregate(window: Window, periods: list[tuple[str, datetime]], entities: Iterable[Mapping[str, Any]]) -> Summary:
    index = {partition: position for position, (partition, _) in enumerate(periods)}
    totals = dict.fromkeys(METRIC_FIELDS, 0)
    subscriptions, deployments = Breakdown(len(periods)), Breakdown(len(periods))
    rows = 0
    for entity in entities:
        bucket = index.get(entity["PartitionKey"])
        if bucket is None:
            continue
        rows += 1
        values = {name: int(entity.get(name) or 0) for name in METRIC_FIELDS}
        for name, value in values.items():
            totals[name] += value
        subscriptions.add(str(entity.get("subscription") or ""), bucket, values)
        deployments.add(str(entity.get("deployment") or ""), bucket, values)
    return Summary(window, periods, totals, subscriptions, deployments, rows)
