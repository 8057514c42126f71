"""Summing the metrics table for `python -m gateway usage`: a partition range per time span, grouped in memory."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.stores.metric_rows import METRIC_FIELDS
from gateway.stores.tables import Query, Table

_SPAN = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    match = _SPAN.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a span like 90m, 24h or 7d.")
    now = now or datetime.now(UTC)
    return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


async def summarize(table: Table, since: datetime, group_by: str, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Totals per group since `since`, largest total first; `progress` hears the rows read so far, every 1,000."""
    totals: dict[str, dict[str, int]] = {}
    read = 0
    async for entity in table.query(Query(partition_from=since.strftime("%Y%m%d%H%M"))):
        read += 1
        if progress is not None and read % 1000 == 0:
            progress(read)
        group = _group_of(entity, group_by)
        row = totals.setdefault(group, dict.fromkeys(METRIC_FIELDS, 0))
        for name in METRIC_FIELDS:
            row[name] += int(entity.get(name) or 0)
    rows = [{"group": group, **values} for group, values in totals.items()]
    return sorted(rows, key=lambda r: (-r["total"], r["group"]))


def _group_of(entity: Any, group_by: str) -> str:
    if group_by.startswith("dimension:"):
        dimensions = orjson.loads(entity.get("dimensions") or "{}")
        return str(dimensions.get(group_by.removeprefix("dimension:"), "(none)"))
    return str(entity.get(group_by) or "(none)")
