"""Folding closed hourly and daily rollup partitions into one row per subscription and deployment.

Every gateway instance writes its own rollup rows (append-only, so instances never conflict): a day's
partition holds a row per series *and instance*, and on Flex Consumption, where instances come and go, that
grows with every scale-out. Once a period is closed — it ended `CLOSED_AFTER_SECONDS` ago, twice as long as
any instance may still write it (`ROLLUP_LATE_SECONDS`, after which the recorder drops a late write) — its
instance rows are folded into one row per series, RowKey `all-<series>`, so the dashboard's day and month
views read about one row per series and bucket however many instances there were.

Each fold is one entity-group transaction in the partition: replace the folded row (checked against its
ETag, or created if absent) and delete the instance rows it added (each checked against its ETag). So a
fold happens completely or not at all: a concurrent fold by another instance, or a late flush rewriting an
instance row, makes the transaction fail and a later run try again. Totals never double and never vanish.

Folding is best effort: every instance looks at the last `HOURS_BACK` hours and `DAYS_BACK` days every
`EVERY_SECONDS` (starting at a random offset, so instances spread out). A partition closed while no
instance ran stays unfolded — correct, only a few rows larger.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.errors import Conflict
from gateway.stores.metric_rows import METRIC_FIELDS, ROLLUP_DAY_PARTITION, ROLLUP_HOUR_PARTITION, ROLLUP_LATE_SECONDS
from gateway.stores.tables import Operation, Query, Row, Table

logger = logging.getLogger(__name__)

FOLDED = "all"
CLOSED_AFTER_SECONDS = 2.0 * ROLLUP_LATE_SECONDS
EVERY_SECONDS = 600.0
HOURS_BACK = 6
DAYS_BACK = 3
#: A transaction holds at most 100 operations: the folded row and 99 deletions.
_PER_FOLD = 99


class RollupCompactor:
    def __init__(
        self,
        table: Table,
        clock: Callable[[], float] = time.time,
        every: float = EVERY_SECONDS,
        lookback: tuple[timedelta, timedelta] = (timedelta(hours=HOURS_BACK), timedelta(days=DAYS_BACK)),
    ) -> None:
        self._table = table
        self._clock = clock
        self._every = every
        #: How far back hourly and daily partitions are looked at.
        self._lookback = lookback
        self._due = clock() + random.uniform(0, every)

    async def run_if_due(self) -> int:
        if self._clock() < self._due:
            return 0
        self._due = self._clock() + self._every
        return await self.compact()

    async def compact(self) -> int:
        """Fold the closed partitions looked at; returns how many instance rows were folded."""
        closed_before = datetime.fromtimestamp(self._clock() - CLOSED_AFTER_SECONDS, UTC)
        folded = 0
        for partition_format, back in zip((ROLLUP_HOUR_PARTITION, ROLLUP_DAY_PARTITION), self._lookback):
            first, current = (closed_before - back).strftime(partition_format), closed_before.strftime(partition_format)
            series: dict[tuple[str, str], list[Row]] = {}
            async for entity in self._table.query(Query(partition_from=first, partition_before=current)):
                _, _, digest = entity["RowKey"].partition("-")
                series.setdefault((entity["PartitionKey"], digest), []).append(entity)
            for (_, digest), rows in series.items():
                existing = next((row for row in rows if row["RowKey"] == f"{FOLDED}-{digest}"), None)
                instance_rows = [row for row in rows if row is not existing][:_PER_FOLD]
                if instance_rows:
                    folded += await self._fold(digest, existing, instance_rows)
        return folded

    async def _fold(self, digest: str, existing: Row | None, rows: list[Row]) -> int:
        template = existing or rows[0]
        entity: dict[str, Any] = {
            "PartitionKey": template["PartitionKey"], "RowKey": f"{FOLDED}-{digest}", "instance": FOLDED,
            **{name: template.get(name, "") for name in ("namespace", "dimensions", "subscription", "deployment")},
        }  # fmt: skip
        for name in METRIC_FIELDS:
            entity[name] = sum(int(row.get(name) or 0) for row in ([existing] if existing is not None else []) + rows)
        write: tuple[Operation, Row | dict[str, Any]] = ("replace", Row(entity, existing.etag, None)) if existing is not None else ("insert", entity)
        try:
            await self._table.transact([write, *(("delete", row) for row in rows)])
        except Conflict:  # changed meanwhile: nothing happened, a later run folds it
            logger.info("Rollup fold of %s in %s skipped (changed meanwhile); will retry.", digest, template["PartitionKey"])
            return 0
        return len(rows)
