"""`emit-metric`'s custom series in the metrics recorder, and their export (the statement's tests are in
tests/unit/statements/test_emit_metric.py)."""

from __future__ import annotations

from typing import Any

from gateway.stores.appinsights import AppInsightsExporter
from gateway.stores.custom_metrics import TABLE
from gateway.stores.memory import MemoryTables
from gateway.stores.metrics import MetricsRecorder


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CapturingExporter(AppInsightsExporter):
    def __init__(self) -> None:
        super().__init__("InstrumentationKey=k;IngestionEndpoint=http://127.0.0.1:9")
        self.posted: list[dict[str, Any]] = []

    async def _post(self, envelopes: list[dict[str, Any]]) -> None:
        self.posted.extend(envelopes)


async def test_recorder_sums_custom_values_per_minute_writes_them_apart_and_exports_deltas() -> None:
    tables, clock, exporter = MemoryTables(), Clock(), CapturingExporter()
    recorder = MetricsRecorder(tables.table("metrics"), exporter=exporter, clock=clock, custom=tables.table(TABLE))
    recorder.record_custom("contoso", "Latency", 10.0, [("Tier", "gold")])
    recorder.record_custom("contoso", "Latency", 30.0, [("Tier", "gold")])
    recorder.record_custom("contoso", "Latency", 5.0, [("Tier", "free")])
    await recorder.flush()
    rows = {row["dimensions"]: row for row in tables.rows(TABLE)}
    gold = rows['{"Tier":"gold"}']
    assert (gold["sum"], gold["count"], gold["min"], gold["max"], gold["name"], gold["namespace"]) == (40.0, 2, 10.0, 30.0, "Latency", "contoso")
    assert tables.rows("metrics") == []  # token metric rows are untouched
    recorder.record_custom("contoso", "Latency", 2.0, [("Tier", "gold")])
    await recorder.flush()
    metrics = [(e["data"]["baseData"]["metrics"][0], e["data"]["baseData"]["properties"]) for e in exporter.posted]
    values = [(m["ns"], m["name"], m["value"], m["count"], p) for m, p in metrics]
    assert values == [
        ("contoso", "Latency", 40.0, 2, {"Tier": "gold"}),
        ("contoso", "Latency", 5.0, 1, {"Tier": "free"}),
        ("contoso", "Latency", 2.0, 1, {"Tier": "gold"}),  # only what the series gained
    ]


async def test_custom_series_are_bounded_per_minute_and_in_size() -> None:
    tables = MemoryTables()
    recorder = MetricsRecorder(tables.table("metrics"), clock=Clock(), custom=tables.table(TABLE), max_series=3)
    for user in range(10):
        recorder.record_custom("ns", "Calls", 1.0, [("User", f"user-{user}" + "x" * 1000)])
    recorder.record_custom("ns", "Calls", float("nan"), [("User", "nan")])
    await recorder.flush()
    rows = tables.rows(TABLE)
    assert len(rows) == 4
    overflow = next(row for row in rows if row["dimensions"] == '{"overflow":"true"}')
    assert overflow["count"] == 7
    assert all(len(row["dimensions"]) < 400 for row in rows)
