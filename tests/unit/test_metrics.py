"""Token metrics: per-minute aggregation, batched append-only rows in Azurite, and Azure Monitor export."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from gateway.dev import devstack
from gateway.stores.appinsights import AppInsightsExporter
from gateway.stores.metrics import MetricsRecorder
from gateway.stores.tables import Query
from policies.usage import Usage


@pytest.fixture
async def metrics_table(scratch_tables):  # type: ignore[no-untyped-def]
    return await scratch_tables("metrics")


def value(entity: dict, field: str) -> int:
    return int(entity[field])


async def test_series_aggregate_in_memory_and_flush_as_one_row_each(metrics_table) -> None:  # type: ignore[no-untyped-def]
    recorder = MetricsRecorder(metrics_table, instance="inst1")
    dims = [("API ID", "openai")]
    for _ in range(3):
        recorder.record("ns", dims, Usage(prompt=2, completion=3, total=5, cached=1), "sub-a", "gpt-4o")
    recorder.record("ns", dims, Usage(prompt=4, completion=0, total=4, exact=False), "sub-a", "gpt-4o")
    recorder.record("ns", dims, Usage(prompt=9, completion=9, total=18, from_cache=True), "sub-a", "gpt-4o")
    recorder.record("ns", dims, Usage(prompt=1, completion=1, total=2), "sub-b", "gpt-4o")
    assert await recorder.flush() == 2
    rows = {e["subscription"]: e async for e in metrics_table.query(Query())}
    a = rows["sub-a"]
    assert (value(a, "prompt"), value(a, "completion"), value(a, "total"), value(a, "cached")) == (10, 9, 19, 3)
    assert (value(a, "requests"), value(a, "estimated"), value(a, "cacheHits"), value(a, "savedTokens")) == (5, 1, 1, 18)
    assert orjson.loads(a["dimensions"]) == {"API ID": "openai"} and a["RowKey"].startswith("inst1-")
    recorder.record("ns", dims, Usage(prompt=1, completion=1, total=2), "sub-b", "gpt-4o")
    assert await recorder.flush() == 1  # only the series that changed is rewritten, with its new total
    assert await recorder.flush() == 0
    rows = {e["subscription"]: e async for e in metrics_table.query(Query())}
    assert value(rows["sub-b"], "total") == 4 and len(rows) == 2


async def test_two_instances_write_separate_rows(metrics_table) -> None:  # type: ignore[no-untyped-def]
    first, second = MetricsRecorder(metrics_table), MetricsRecorder(metrics_table)
    for recorder in (first, second):
        recorder.record("ns", [], Usage(prompt=1, completion=1, total=2), "sub", "d")
        await recorder.flush()
    rows = [e async for e in metrics_table.query(Query())]
    assert len(rows) == 2 and sum(value(e, "total") for e in rows) == 4


async def test_app_insights_receives_apim_metric_names_as_deltas(metrics_table) -> None:  # type: ignore[no-untyped-def]
    received: list[dict] = []

    async def track(request: web.Request) -> web.Response:
        received.extend(orjson.loads(await request.read()))
        return web.json_response({"itemsReceived": 1, "itemsAccepted": 1})

    app = web.Application()
    app.router.add_post("/v2/track", track)
    runner = web.AppRunner(app)
    await runner.setup()
    port = devstack.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        exporter = AppInsightsExporter(f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:{port}/")
        recorder = MetricsRecorder(metrics_table, exporter=exporter)
        recorder.record("openai", [("Subscription ID", "s1")], Usage(prompt=3, completion=4, total=7), "s1", "gpt-4o")
        await recorder.flush()
        recorder.record("openai", [("Subscription ID", "s1")], Usage(prompt=1, completion=1, total=2), "s1", "gpt-4o")
        await recorder.close()
    finally:
        await runner.cleanup()
    points = [(e["data"]["baseData"]["metrics"][0], e["data"]["baseData"]["properties"], e["iKey"]) for e in received]
    totals: dict[str, int] = {}
    for metric, properties, ikey in points:
        assert metric["ns"] == "openai" and properties == {"Subscription ID": "s1"} and ikey.endswith("0001")
        totals[metric["name"]] = totals.get(metric["name"], 0) + metric["value"]
    assert totals == {"Prompt Tokens": 4, "Completion Tokens": 5, "Total Tokens": 9}
