"""The scale model you can run: N gateway processes sharing one Azurite and one hot token-limit counter.

    .venv/bin/python -m bench.scale [--instances 1 2 4 8] [--rate 120] [--window 15] [--windows 2]

For each N: a fresh table prefix, one subscription with `llm-token-limit` (counter key = the subscription,
demand about twice the limit), `emit-token-metric`, and N `gateway serve` processes. After a warm-up, a paced
load of `rate` requests per second in total, spread round-robin over the instances, runs for `windows` whole
token windows (`GATEWAY_TOKEN_RATE_WINDOW_SECONDS` = `window`, aligned to the epoch). Every instance's
`GET /ops/storage` is read before and after, so start-up is not counted.

Prints per N: latency of admitted requests (p50/p99), answers other than 200 and 429 (errors: on a starved
machine the backend may not answer in time), limit accuracy per window (admitted tokens vs the limit:
overshoot and under-use, from the clients' view of `usage.total_tokens`), ETag conflicts per second, and per
table the storage calls per second, per request, and entities read per second. docs/scale.md extrapolates these
to 50 and 500 instances. Loopback only; bounded by `rate x window x windows` requests per N.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.harness import API_VERSION, Services, apply_policy, create_subscription, services
from gateway.dev import devstack

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
ADMIN_KEY = secrets.token_urlsafe(24)
#: The tables this load touches, in the order printed; any other that shows up is printed after them.
TABLES = ("counters", "subscriptions", "policies", "backendtrips", "backendhealth", "metrics", "metricsrollup")
#: Requests in flight at most: the load stays bounded however slow the stack gets.
MAX_IN_FLIGHT = 64
POLICY = """<policies><inbound><base />
  <llm-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="{limit}" estimate-prompt-tokens="true" />
  <llm-emit-token-metric namespace="scale"><dimension name="Subscription ID" /></llm-emit-token-metric>
</inbound></policies>"""
#: What the simulator reports as used for BODY, every time (measured).
TOKENS_PER_REQUEST = 19
BODY = orjson.dumps({"messages": [{"role": "user", "content": "Summarise the plot of a short story please"}], "max_tokens": 16})


@dataclass
class Outcome:
    sent: float
    milliseconds: float
    status: int
    tokens: int


@dataclass
class Run:
    instances: int
    seconds: float
    limit: int
    window: float
    outcomes: list[Outcome]
    calls: Counter[str] = field(default_factory=Counter)
    rows_read: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)

    def admitted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def per_window(self) -> list[tuple[int, int, int]]:
        """(admitted tokens, of which possibly charged to the next window, refusals) of each whole window measured.

        A request is charged to the window in which the gateway admitted it, somewhere between its sending and its
        answer: one whose answer came in the next window may belong to either."""
        tokens: Counter[int] = Counter()
        straddling: Counter[int] = Counter()
        refused: Counter[int] = Counter()
        for outcome in self.outcomes:
            index = int(outcome.sent // self.window)
            if outcome.status == 429:
                refused[index] += 1
            if outcome.status != 200:
                continue
            tokens[index] += outcome.tokens
            if int((outcome.sent + outcome.milliseconds / 1000) // self.window) != index:
                straddling[index] += outcome.tokens
        first = int(min(o.sent for o in self.outcomes) // self.window)
        return [(tokens[i], straddling[i], refused[i]) for i in range(first, first + round(self.seconds / self.window))]

    def accuracy(self) -> tuple[float, float]:
        """(overshoot, under-use) as fractions of the limit, worst over the windows where some were refused: counting
        requests that straddled a boundary against the limit only where that cannot hide an error."""
        windows = self.per_window()
        overshoot = under = 0.0
        for i, (tokens, straddling, refused) in enumerate(windows):
            if not refused:
                continue
            arrived_late = windows[i - 1][1] if i else 0  # may have been charged to this window
            overshoot = max(overshoot, (tokens - straddling - self.limit) / self.limit)
            under = max(under, (self.limit - tokens - arrived_late) / self.limit)
        return max(overshoot, 0.0), max(under, 0.0)


@contextmanager
def gateways(count: int, env: dict[str, str]) -> Iterator[list[str]]:
    """`count` gateway processes on loopback; stopped (gracefully: leases given back) on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for _ in range(count):
            port = devstack.free_port()
            processes.append(devstack.start_python(["gateway", "serve", "--port", str(port)], env, port))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            devstack.stop(process)


async def storage_stats(session: aiohttp.ClientSession, urls: Sequence[str]) -> dict[str, Counter[str]]:
    """Every instance's `/ops/storage`, summed."""
    totals: dict[str, Counter[str]] = {"calls": Counter(), "rowsRead": Counter(), "conflicts": Counter()}
    for url in urls:
        async with session.get(url + "/ops/storage", headers={"x-admin-key": ADMIN_KEY}) as response:
            response.raise_for_status()
            stats = await response.json()
        for name, counts in totals.items():
            counts.update(stats[name])
    return totals


async def drive(session: aiohttp.ClientSession, urls: Sequence[str], key: str, rate: float, seconds: float) -> list[Outcome]:
    """`rate` requests per second for `seconds`, round-robin over `urls`, at most MAX_IN_FLIGHT at once."""
    loop = asyncio.get_running_loop()
    headers = {"api-key": key, "content-type": "application/json"}
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    outcomes: list[Outcome] = []

    async def one(url: str) -> None:
        try:
            sent, started = time.time(), time.perf_counter()
            async with session.post(url + CHAT, data=BODY, headers=headers) as response:
                data = await response.read()
            milliseconds = (time.perf_counter() - started) * 1000
            tokens = orjson.loads(data)["usage"]["total_tokens"] if response.status == 200 else 0
            outcomes.append(Outcome(sent, milliseconds, response.status, tokens))
        finally:
            slots.release()

    tasks = []
    start = loop.time()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(loop.create_task(one(urls[i % len(urls)])))
    await asyncio.gather(*tasks)
    return outcomes


async def measure(urls: Sequence[str], key: str, rate: float, window: float, windows: int, limit: int) -> Run:
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        await drive(session, urls, key, min(rate, 50.0), 2.0)  # policies, subscription cache, first leases
        await asyncio.sleep(math.ceil(time.time() / window) * window - time.time() + 0.01)  # a window boundary
        before = await storage_stats(session, urls)
        started = time.perf_counter()
        outcomes = await drive(session, urls, key, rate, window * windows)
        seconds = time.perf_counter() - started
        after = await storage_stats(session, urls)
    return Run(len(urls), seconds, limit, window, outcomes, after["calls"] - before["calls"],
               after["rowsRead"] - before["rowsRead"], after["conflicts"] - before["conflicts"])  # fmt: skip


def run_one(backing: Services, count: int, rate: float, window: float, windows: int, limit: int) -> Run:
    env = {
        **backing.env,
        "GATEWAY_TABLE_PREFIX": f"scale{count}x{secrets.token_hex(3)}",
        "GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "GATEWAY_TOKEN_RATE_WINDOW_SECONDS": str(window),
        "GATEWAY_LOCAL_QUEUE_WORKER": "false",
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
    key = create_subscription(env, "scale")
    apply_policy(env, POLICY.format(limit=limit))
    with gateways(count, env) as urls:
        return asyncio.run(measure(urls, key, rate, window, windows, limit))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(runs: Sequence[Run]) -> None:
    print(f"\n{'N':>3} {'req/s':>6} {'admitted':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'conflicts/s':>11} {'overshoot':>9} {'under-use':>9}")
    for run in runs:
        admitted = run.admitted()
        latencies = [o.milliseconds for o in admitted]
        overshoot, under = run.accuracy()
        print(
            f"{run.instances:>3} {len(run.outcomes) / run.seconds:>6.0f} {len(admitted) / len(run.outcomes):>8.0%}"
            f" {sum(o.status not in (200, 429) for o in run.outcomes):>6}"
            f" {pct(latencies, 0.5):>7.2f} {pct(latencies, 0.99):>7.2f} {sum(run.conflicts.values()) / run.seconds:>11.2f}"
            f" {overshoot:>9.1%} {under:>9.1%}"
        )
    seen = set().union(*(run.calls for run in runs))
    tables = [name for name in TABLES if name in seen] + sorted(seen - set(TABLES))
    print("\nstorage per table: calls/s | calls per request | entities read/s")
    for run in runs:
        requests = len(run.outcomes)
        print(f"N={run.instances}")
        for name in tables:
            calls = run.calls[name]
            print(f"  {name:<14} {calls / run.seconds:>8.2f} | {calls / requests:>7.4f} | {run.rows_read[name] / run.seconds:>8.1f}")
    print("\nper window (admitted tokens / limit, refusals):")
    for run in runs:
        cells = ", ".join(f"{tokens / run.limit:.3f} ({refused})" for tokens, _, refused in run.per_window())
        print(f"{run.instances:>3}: {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rate", type=float, default=120.0, help="requests per second over all instances")
    parser.add_argument("--window", type=float, default=15.0, help="token-limit window, seconds")
    parser.add_argument("--windows", type=int, default=2, help="windows measured per N")
    parser.add_argument("--limit", type=int, default=0, help="tokens per window (default: half the demand)")
    args = parser.parse_args()
    if not 1 <= max(args.instances) <= 16 or not 1 <= args.rate <= 1000 or not 1 <= args.window * args.windows <= 600:
        parser.error("bounded: at most 16 instances, 1000 requests/s, 600 s per N")
    limit = args.limit or int(args.rate * args.window * TOKENS_PER_REQUEST / 2)  # demand twice the limit: a hot counter
    print(f"{args.rate:g} req/s over N instances, {args.windows} windows of {args.window:g} s, limit {limit} tokens per window")
    runs = []
    with services(in_memory_storage=True) as backing:
        for count in args.instances:
            runs.append(run_one(backing, count, args.rate, args.window, args.windows, limit))
            print(f"N={count}: {len(runs[-1].outcomes)} requests in {runs[-1].seconds:.1f} s", flush=True)
    report(runs)
    print(f"\nlatency p50 over all N: {statistics.median(o.milliseconds for r in runs for o in r.admitted()):.2f} ms")


if __name__ == "__main__":
    main()
