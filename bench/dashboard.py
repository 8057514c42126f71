"""Dashboard render time with a month of per-minute metrics, against summing the minute rows directly.

    .venv/bin/python -m bench.dashboard [--days 30] [--subscriptions 20] [--deployments 3] [--per-minute 4]

Seeds the metrics tables through `MetricsRecorder` with a simulated clock, as a month of flushes on Flex
Consumption leaves them: two instances sharing the traffic, replaced by new ones every six hours, each
writing minute rows and minute, hourly and daily rollups. Then it starts a gateway on that storage and times
`GET /ops/dashboard` over HTTP for each window, first as written, then after the rollups of the month were
folded (gateway/rollups.py, which a running gateway does for recent periods as they close). For comparison
it times what the page would cost without rollups: summing a month of minute rows (the query
`python -m gateway usage --since 30d` runs). Azurite scans a whole table for a partition range query, which
Table Storage does not, so reads here cost more than in Azure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
from azure.data.tables.aio import TableClient, TableServiceClient

from bench.harness import local_stack
from gateway.cli.usage_report import summarize as usage_summary
from gateway.stores.metric_rows import ROLLUP_TABLE
from gateway.stores.metrics import MetricsRecorder
from gateway.stores.rollups import RollupCompactor
from policies.usage import Usage

ADMIN_KEY = "bench-admin-" + secrets.token_hex(8)
BLOCK = timedelta(hours=6)
INSTANCES_PER_BLOCK = 2


async def seed(tables: dict[str, TableClient], days: int, subscriptions: int, deployments: int, per_minute: int) -> tuple[int, float]:
    """Write `days` of traffic ending now; returns the number of requests recorded and the seconds it took."""
    series = [(f"sub-{s:03d}", f"deployment-{d}") for s in range(subscriptions) for d in range(deployments)]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(days=days) + timedelta(minutes=1)
    limit = asyncio.Semaphore(8)

    async def block(index: int) -> int:
        clock = [0.0]
        recorders = [
            MetricsRecorder(tables["metrics"], rollups=tables[ROLLUP_TABLE], instance=f"b{index:03d}i{k}", clock=lambda: clock[0])
            for k in range(INSTANCES_PER_BLOCK)
        ]
        rng = random.Random(index)
        start = first + BLOCK * index
        minutes = min(int(BLOCK.total_seconds() // 60), int((now - start).total_seconds() // 60) + 1)
        async with limit:
            for minute in range(minutes):
                clock[0] = (start + timedelta(minutes=minute)).timestamp()
                for subscription, deployment in rng.sample(series, per_minute):
                    prompt, completion = rng.randint(50, 2000), rng.randint(10, 800)
                    usage = Usage(prompt, completion, prompt + completion, from_cache=rng.random() < 0.1)
                    rng.choice(recorders).record("bench", [], usage, subscription, deployment)
                if rng.random() < 0.05:
                    rng.choice(recorders).record_refusal(rng.choice((429, 403)), rng.choice(series)[0], rng.choice(series)[1])
                if minute % 10 == 9 or minute == minutes - 1:  # flushes every 10 simulated minutes (10 s in production)
                    for recorder in recorders:
                        await recorder.flush()
        return minutes * per_minute

    started = time.perf_counter()
    blocks = int(timedelta(days=days) / BLOCK)
    requests = sum(await asyncio.gather(*(block(index) for index in range(blocks))))
    return requests, time.perf_counter() - started


async def with_tables(connection: str, prefix: str, action):  # type: ignore[no-untyped-def]
    service = TableServiceClient.from_connection_string(connection)
    tables = {name: await service.create_table_if_not_exists(prefix + name) for name in ("metrics", ROLLUP_TABLE)}
    try:
        return await action(tables)
    finally:
        for table in tables.values():
            await table.close()
        await service.close()


async def naive_month(tables: dict[str, TableClient], days: int) -> tuple[float, int]:
    """Seconds to sum every minute row of the window, as a page without rollups would have to."""
    started = time.perf_counter()
    groups = await usage_summary(tables["metrics"], datetime.now(UTC) - timedelta(days=days), "subscription")
    return time.perf_counter() - started, len(groups)


async def fold_everything(tables: dict[str, TableClient], days: int) -> int:
    """What running gateways do as periods close, for the whole seeded month at once."""
    compactor = RollupCompactor(tables[ROLLUP_TABLE], lookback=(timedelta(days=days + 1), timedelta(days=days + 1)))
    folded = 0
    while (more := await compactor.compact()) > 0:
        folded += more
    return folded


def time_page(url: str, window: str, repeats: int) -> dict[str, float]:
    with httpx.Client(timeout=300, headers={"x-admin-key": ADMIN_KEY}) as client:
        client.get(url, params={"window": window}).raise_for_status()  # warm: tables opened, code paths loaded
        totals, tables_ms, render_ms = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(url, params={"window": window})
            totals.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
            tables_ms.append(float(timing["tables"]))
            render_ms.append(float(timing["render"]))
        rows = int(response.text.split('data-rows="', 1)[1].split('"', 1)[0])
    return {
        "p50": statistics.median(totals),
        "max": max(totals),
        "tables": statistics.median(tables_ms),
        "render": statistics.median(render_ms),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--subscriptions", type=int, default=20)
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument("--per-minute", type=int, default=4, help="requests recorded per minute (each a random series)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    prefix = "bench" + secrets.token_hex(3)
    # Azurite keeps a month of rows in memory (not on disk, which it would rewrite whole every few seconds),
    # more than Node's default heap holds.
    os.environ.setdefault("NODE_OPTIONS", "--max-old-space-size=8192")
    with local_stack({"GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_TABLE_PREFIX": prefix}, in_memory_storage=True) as stack:
        connection = stack.env["GATEWAY_STORAGE_CONNECTION"]
        requests, seconds = asyncio.run(
            with_tables(connection, prefix, lambda t: seed(t, args.days, args.subscriptions, args.deployments, args.per_minute))
        )
        print(f"seeded {args.days} days: {requests:,} requests of {args.subscriptions} subscriptions x {args.deployments} deployments, "
              f"{INSTANCES_PER_BLOCK} instances replaced every {BLOCK.total_seconds() / 3600:g} h, in {seconds:.0f} s")  # fmt: skip
        url = f"{stack.gateway_url}/ops/dashboard"
        print(f"{'window':14} {'rows read':>10} {'page p50 ms':>12} {'page max ms':>12} {'tables ms':>10} {'render ms':>10}")

        def report(label: str) -> None:
            for window in ("1h", "24h", "30d"):
                r = time_page(url, window, args.repeats)
                print(f"{window + label:14} {r['rows']:>10,} {r['p50']:>12.1f} {r['max']:>12.1f} {r['tables']:>10.1f} {r['render']:>10.1f}")

        report("")
        folded = asyncio.run(with_tables(connection, prefix, lambda t: fold_everything(t, args.days)))
        report(" folded")
        naive, groups = asyncio.run(with_tables(connection, prefix, lambda t: naive_month(t, args.days)))
        print(
            f"({folded:,} instance rollup rows folded.) Without rollups, summing the month's minute rows takes {naive * 1000:,.0f} ms ({groups} subscriptions)."
        )


if __name__ == "__main__":
    main()
