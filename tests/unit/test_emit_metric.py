"""`emit-metric`: the statement over a fake, the custom series of the metrics recorder, and their export."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.stores.appinsights import AppInsightsExporter
from gateway.stores.custom_metrics import TABLE
from gateway.stores.memory import MemoryTables
from gateway.stores.metrics import MetricsRecorder
from policies.errors import PolicyLoadError
from tests.policy_helpers import doc, pipeline_of, run_document

EMIT = """<emit-metric name="Requests by tier" value="@(context.Request.Headers.GetValueOrDefault(&quot;x-n&quot;, &quot;2.5&quot;))" namespace="contoso">
    <dimension name="Subscription ID" />
    <dimension name="Tier" value='@(context.Request.Headers.GetValueOrDefault("x-tier", "free"))' />
</emit-metric>"""


async def test_value_and_dimensions_are_evaluated_when_it_runs() -> None:
    _, _, services = await run_document(doc(outbound=EMIT), headers=[("x-tier", "gold")])
    assert services.metrics.custom == [("contoso", "Requests by tier", 2.5, [("Subscription ID", "sub-1"), ("Tier", "gold")])]


async def test_defaults_are_value_one_and_apims_namespace() -> None:
    _, _, services = await run_document(doc(inbound='<emit-metric name="Calls" />'))
    assert services.metrics.custom == [("API Management", "Calls", 1.0, [])]


async def test_a_value_that_is_not_a_number_fails_like_an_expression() -> None:
    result, context, services = await run_document(doc(inbound=EMIT), headers=[("x-n", "many")])
    assert result is not None and result.status == 500 and "is not a number" in context.LastError.Message
    assert services.metrics.custom == []


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<emit-metric value="1" />', "'name' is required"),
        ('<emit-metric name="@(&quot;x&quot;)" />', "does not accept policy expressions"),
        ('<emit-metric name="m" value="lots" />', "expected a number"),
        ('<emit-metric name="m"><dimension name="Client IP" /></emit-metric>', "needs a value"),
        ('<emit-metric name="m"><dimension name="API ID" /><dimension name="API ID" /></emit-metric>', "appears twice"),
        ('<emit-metric name="m">' + "".join(f'<dimension name="d{i}" value="v" />' for i in range(11)) + "</emit-metric>", "at most 10"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement))


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
