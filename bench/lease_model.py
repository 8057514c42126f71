"""The shared token counters at 8 to 500 instances, in one process: where gateway processes cannot go on 2 cores.

    .venv/bin/python -m bench.lease_model [--instances 8 50 80 200 500] [--rate 2] [--latency-ms 8] [--demand 2]

N `SharedCounters` (the gateway's own class, production constants) share one in-memory counters table whose
every call takes `latency-ms` before it takes effect, as a round trip to Table Storage does, so read-modify-writes
race as they do there. A paced load of `rate` requests per second per instance (spread evenly) shares one hot
counter key: each request reserves 31 tokens and settles to 19, as bench/scale.py's do; the limit per window is
the demand divided by `demand`. The load starts 5 s before a window boundary and is measured over the next
`windows` whole windows.

Prints per N: calls/s on the hot counter row (reads and writes) and ETag conflicts per second (and the share of
them in the first 5 s of a window, when every instance needs a new lease), how long
`acquire` took (p50/p99/max: lease writes and lock waits), and per window the tokens admitted against the limit
(overshoot, under-use). docs/scale.md reads these. In memory, bounded: `rate x N x window x windows` requests.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from gateway.stores.counters import SharedCounters
from gateway.stores.memory import MemoryTables
from policies.counters import Window

#: What one request reserves (prompt estimate and max_tokens) and what it then uses (the simulator's answer).
RESERVATION, USED = 31, 19
KEY = "tpm:hot-subscription"
#: How often the load generator wakes to start the requests that are due.
TICK_SECONDS = 0.01
ROLLOVER_SECONDS = 5.0


@dataclass
class Result:
    instances: int
    limit: int
    seconds: float
    reads: int
    writes: int
    conflicts: int
    #: Conflicts in the first ROLLOVER_SECONDS of each measured window, when every instance needs a new lease.
    rollover_conflicts: int = 0
    acquire_ms: list[float] = field(default_factory=list)
    admitted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


async def model(instances: int, rate: float, latency: float, window: float, windows: int, demand: float) -> Result:
    tables = MemoryTables(latency=latency)
    fleet = [SharedCounters(tables.table("counters")) for _ in range(instances)]
    for counters in fleet:
        counters.start()
    total_rate = rate * instances
    limit = int(total_rate * window * USED / demand)
    measured_from = (time.time() // window + 1) * window
    measured_to = measured_from + window * windows
    result = Result(instances, limit, measured_to - measured_from, 0, 0, 0)
    pending: set[asyncio.Task[None]] = set()

    async def request(counters: SharedCounters) -> None:
        started = time.perf_counter()
        window_now = Window.fixed(window)
        admission = await counters.acquire(KEY, window_now, RESERVATION, limit)
        if measured_from <= time.time() < measured_to:
            result.acquire_ms.append((time.perf_counter() - started) * 1000)
        if window_now.end - window >= measured_from:  # decided for a measured window
            (result.admitted if admission.allowed else result.refused)[window_now.id] += USED if admission.allowed else 1
        if admission.allowed:
            await counters.add(KEY, window_now, USED - RESERVATION, limit)

    await asyncio.sleep(max(0.0, measured_from - 5 - time.time()))
    before = None
    rollover_start: int | None = None
    sent = 0
    start = time.monotonic()
    while time.time() < measured_to:
        now = time.time()
        if before is None and now >= measured_from:
            before = (tables.stats.calls["counters"], sum(c.storage_operations for c in fleet), tables.stats.conflicts["counters"])
        if now >= measured_from:
            in_rollover = (now - measured_from) % window < ROLLOVER_SECONDS
            if in_rollover and rollover_start is None:
                rollover_start = tables.stats.conflicts["counters"]
            elif not in_rollover and rollover_start is not None:
                result.rollover_conflicts += tables.stats.conflicts["counters"] - rollover_start
                rollover_start = None
        due = int((time.monotonic() - start) * total_rate)
        for index in range(sent, due):
            task = asyncio.get_running_loop().create_task(request(fleet[index % instances]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        sent = due
        await asyncio.sleep(TICK_SECONDS)
    assert before is not None
    calls, writes, conflicts = tables.stats.calls["counters"], sum(c.storage_operations for c in fleet), tables.stats.conflicts["counters"]
    result.writes, result.conflicts = writes - before[1], conflicts - before[2]
    result.reads = calls - before[0] - result.writes - result.conflicts  # the rest of the calls are ETag-checked writes
    await asyncio.gather(*pending)
    for counters in fleet:
        await counters.release()
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(results: list[Result], latency_ms: float) -> None:
    print(f"\nhot counter row, {latency_ms:g} ms per storage call")
    print(
        f"{'N':>4} {'req/s':>6} {'reads/s':>8} {'writes/s':>8} {'conflicts/s':>11} {'in rollover':>11} {'acquire p50':>11} {'p99':>7} {'max':>7}  window: admitted/limit (refused)"
    )
    for r in results:
        requests = len(r.acquire_ms)
        windows = ", ".join(f"{r.admitted[w] / r.limit:.3f} ({r.refused[w]})" for w in sorted(set(r.admitted) | set(r.refused)))
        print(
            f"{r.instances:>4} {requests / r.seconds:>6.0f} {r.reads / r.seconds:>8.1f} {r.writes / r.seconds:>8.1f}"
            f" {r.conflicts / r.seconds:>11.2f} {r.rollover_conflicts / max(r.conflicts, 1):>11.0%} {pct(r.acquire_ms, 0.5):>9.2f}ms {pct(r.acquire_ms, 0.99):>5.0f}ms"
            f" {max(r.acquire_ms, default=0):>5.0f}ms  {windows}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=[8, 50, 80, 200, 500])
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second per instance")
    parser.add_argument("--latency-ms", type=float, default=8.0, help="per storage call (Table Storage in-region: ~5-10 ms)")
    parser.add_argument("--window", type=float, default=60.0, help="token window, seconds")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--demand", type=float, default=2.0, help="demand / limit: above 1 the counter runs out")
    args = parser.parse_args()
    if max(args.instances) > 2000 or max(args.instances) * args.rate > 5000 or args.window * args.windows > 600:
        parser.error("bounded: at most 2000 instances, 5000 requests/s in all, 600 s per N")
    results = []
    for count in args.instances:
        results.append(asyncio.run(model(count, args.rate, args.latency_ms / 1000, args.window, args.windows, args.demand)))
        print(f"N={count} done", flush=True)
    report(results, args.latency_ms)


if __name__ == "__main__":
    main()
