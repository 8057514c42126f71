"""Folding closed rollup partitions: fewer rows for the dashboard, the same totals, safe against late writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from gateway.ops.dashboard_data import WINDOWS, summarize
from gateway.stores.metric_rows import METRIC_FIELDS, ROLLUP_LATE_SECONDS
from gateway.stores.metrics import MetricsRecorder
from gateway.stores.rollups import RollupCompactor
from gateway.stores.tables import Query, Table
from policies.usage import Usage

NOW = datetime.now(UTC)
#: Three hours ago: its hour is closed, its day is closed only if that was yesterday.
PAST = NOW - timedelta(hours=3)


@pytest.fixture
async def tables(scratch_tables):  # type: ignore[no-untyped-def]
    """A metrics table and a rollup table."""
    return [await scratch_tables("fm"), await scratch_tables("fr")]


async def traffic(minutes: Table, rollups: Table, instance: str, count: int) -> MetricsRecorder:
    recorder = MetricsRecorder(minutes, rollups=rollups, instance=instance, clock=PAST.timestamp)
    for i in range(count):
        recorder.record("ns", [("Client IP", f"10.0.0.{i}")], Usage(prompt=i, completion=1, total=i + 1), f"sub-{i % 2}", "gpt-4o")
    recorder.record_refusal(429, "sub-0", "gpt-4o")
    await recorder.flush()
    return recorder


async def hour_rows(rollups: Table) -> list[dict]:
    partition = PAST.strftime("h%Y%m%d%H")
    return [dict(e) async for e in rollups.query(Query(partition=partition))]


def totals(summary_totals: dict[str, int]) -> tuple[int, ...]:
    return tuple(summary_totals[name] for name in METRIC_FIELDS)


async def test_instance_rows_of_a_closed_hour_fold_into_one_row_per_series(tables) -> None:  # type: ignore[no-untyped-def]
    minutes, rollups = tables
    for instance in ("one", "two", "three"):
        await traffic(minutes, rollups, instance, 5)
    assert len(await hour_rows(rollups)) == 3 * 2  # per instance: sub-0 and sub-1 (dimensions are summed away)
    before = await summarize(rollups, WINDOWS["24h"], NOW)
    folded = await RollupCompactor(rollups).compact()
    assert folded >= 6
    rows = await hour_rows(rollups)
    assert sorted(r["RowKey"].split("-")[0] for r in rows) == ["all", "all"]
    after = await summarize(rollups, WINDOWS["24h"], NOW)
    assert totals(after.totals) == totals(before.totals) and after.totals["refused429"] == 3
    assert await RollupCompactor(rollups).compact() == 0  # nothing left to fold

    await traffic(minutes, rollups, "four", 2)  # an instance row next to the folded one: folded into it
    assert await RollupCompactor(rollups).compact() >= 2
    final = await summarize(rollups, WINDOWS["24h"], NOW)
    assert final.totals["requests"] == before.totals["requests"] + 2 and len(await hour_rows(rollups)) == 2


async def test_a_late_write_during_a_fold_makes_it_wait_for_the_next_run(tables, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    minutes, rollups = tables
    late = await traffic(minutes, rollups, "late", 4)
    await traffic(minutes, rollups, "other", 4)
    compactor = RollupCompactor(rollups)
    fold: Callable[..., Awaitable[int]] = compactor._fold
    late_requests = 0

    async def racing(*arguments: object) -> int:
        nonlocal late_requests
        late.record("ns", [], Usage(prompt=100, completion=0, total=100), "sub-0", "gpt-4o")  # rewrites its rows
        await late.flush()
        late_requests += 1
        return await fold(*arguments)

    monkeypatch.setattr(compactor, "_fold", racing)
    assert await compactor.compact() < 4 * 2  # the folds that met a rewritten row did nothing
    monkeypatch.undo()
    await RollupCompactor(rollups).compact()
    summary = await summarize(rollups, WINDOWS["24h"], NOW)
    assert late_requests > 0 and summary.totals["requests"] == 4 + 4 + late_requests  # nothing lost, nothing counted twice
    hour = await hour_rows(rollups)
    assert all(r["RowKey"].startswith("all-") for r in hour) and len(hour) == 2


async def test_a_rollup_row_is_never_written_once_its_period_may_have_been_folded(tables) -> None:  # type: ignore[no-untyped-def]
    minutes, rollups = tables
    clock = [PAST.timestamp()]
    recorder = MetricsRecorder(minutes, rollups=rollups, instance="slow", clock=lambda: clock[0])
    recorder.record("ns", [], Usage(prompt=1, completion=1, total=2), "sub-0", "gpt-4o")
    clock[0] += ROLLUP_LATE_SECONDS + 3600  # its flushes kept failing until long after the hour ended
    assert await recorder.flush() == 1  # the minute row is still written ...
    assert await hour_rows(rollups) == []  # ... but not the hour's rollup, which a fold may have counted
