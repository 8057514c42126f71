"""Limits that hold across every gateway instance sharing one storage account, without a storage call per request,
and that heal by themselves when an instance vanishes without a goodbye (scale-in, recycle, SIGKILL).

Each counter (a counter key in one window: a minute, an hour, a quota period) is one row of `<prefix>counters`:

* `settled`: what instances have reported as used in the window (reservations not yet settled included);
* `leases`: JSON `{instance: [held, expires]}`: slices of the limit an instance may still spend, each with an
  expiry (epoch seconds, `LEASE_SECONDS` after its last write).

An instance takes a slice with an ETag-checked update and then admits requests from its local balance: a request
reserves its worst case and settles to what it used; refunds go back into the balance. A slice is sized by the
instance's own demand: what it was asked for over the last renewal interval (`LEASE_SECONDS / 3`), at most
`lease_fraction` of the limit, so that with many instances the limit is not parked in the balances of instances
that spend it slowly (docs/scale.md: with fixed 5 % slices, 80 instances sharing a key admitted half its limit).
Every write also *reports* what the instance spent since its previous write (moved into `settled`) and prunes
other instances' expired leases, whose held balance thereby returns to the window. A background task renews leases
in use every `LEASE_SECONDS / 3` (passes jittered between a sixth and a third), reporting spend and giving back
what exceeds twice the demand until the next renewal, and gives back the balance of leases idle for half a lease
lifetime; a graceful shutdown gives everything back at once. A lease is spent locally only while it is valid (its
expiry minus `CLOCK_MARGIN_SECONDS` for clock skew between instances); after that the instance renews before it
admits more.

Bounds, with N instances, limit L, largest lease S = max(ceil(L x lease_fraction), 1), lease lifetime T, and
D_i the tokens instance i is asked for in T/3:

* **Overshoot from leasing: none.** Live leases plus settled usage never exceed L when granted, and a request is
  admitted only when its whole reservation fits in a lease. Usage can exceed L only by what requests used
  *beyond* their reservation (charged as debt; later requests are refused).
* **Under-use while all instances live: at most the sum of min(S, 2 x D_i) per window** may sit in other
  instances' balances while one refuses: never more than N x S (10 % of the limit with the default 5 % and two
  instances), nor than twice the demand of T/3 over all instances; idle balances return after T/2.
* **An instance killed without a goodbye strands nothing for longer than T** (default 30 s): its lease expires
  and its held balance returns to the window with the next write of any instance. What it spent after its last
  report (at most one renewal interval, T/3, of its own traffic, and never more than its lease S) is not charged:
  the bound on under-counting per crash.
* **Storage operations per request: about 2 x reservation / min(S, D_i)**, so per instance and counter about two
  per T/3 (a lease write, a renewal) once D_i < S; once a window is spent, one read per instance per
  `EXHAUSTED_RECHECK_SECONDS` (docs/scale.md). A write that keeps losing its race (`Conflict` after every
  retry: storage answers, other instances are writing) refuses that one request.
* **One hot key holds up to about 150-200 instances** at 8 ms per storage call: its row takes about one
  successful ETag write per read-modify-write round trip, and every instance writes about twice per T/3, all of
  them at the start of a window. Past that, renewals keep losing their races, leases lapse with spend unreported,
  and the window can be exceeded; docs/scale.md measures it (bench/lease_model.py) and names what replaces it.
* **Storage outage** (`GATEWAY_LIMITS_ON_STORAGE_OUTAGE`): `local` (default) keeps admitting from each
  instance's own view, as APIM's per-gateway counters do: its balance, then the headroom the window had at its
  last successful write; what it admits is reported when storage answers again, so the window catches up. The
  window can be exceeded by at most (N - 1) x that headroom during an outage. `refuse` answers 503 instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import Conflict, StorageUnavailable
from gateway.stores.tables import Entity, Row, Table, update_with_retry
from policies.counters import Admission, Window

logger = logging.getLogger(__name__)

#: How long a lease stays valid without a renewal.
LEASE_SECONDS = 30.0
#: Instances' clocks may disagree by this much: a lease is spent locally only until its expiry minus this.
CLOCK_MARGIN_SECONDS = 5.0
#: How long an instance trusts "the shared counter is spent" before asking the table again.
EXHAUSTED_RECHECK_SECONDS = 1.0


@dataclass
class _Lease:
    key: str
    window: Window
    #: What this instance may still admit; negative when it spent beyond its lease (debt, or during an outage).
    balance: int = 0
    #: The held amount in the table as of our last write: `reported - balance` is spent but not yet reported.
    reported: int = 0
    #: `time.monotonic()` until which the table keeps our lease for us.
    valid_until: float = 0.0
    #: The table's settled usage plus every live lease, as of our last write (remaining = limit - shared + balance).
    shared: int = 0
    exhausted_until: float = 0.0
    last_used: float = 0.0
    #: Tokens asked for (admitted or not) since `demand_since`, and the rate of the previous measuring interval.
    demand: int = 0
    demand_since: float = field(default_factory=time.monotonic)
    demand_rate: float = 0.0

    @property
    def unreported(self) -> int:
        return self.reported - self.balance


class SharedCounters:
    """`policies.counters.Counters` backed by Table Storage leases that expire."""

    def __init__(self, table: Table, lease_fraction: float = 0.05, refuse_on_outage: bool = False, lease_seconds: float = LEASE_SECONDS) -> None:
        self._table = table
        self._lease_fraction = lease_fraction
        self._refuse_on_outage = refuse_on_outage
        self._lease_seconds = lease_seconds
        self.instance = uuid.uuid4().hex[:12]
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._limits: dict[tuple[str, str], int] = {}
        #: Each key's lease in its latest window: a new window's first lease is sized by the demand seen in it.
        self._latest: dict[str, _Lease] = {}
        self._maintainer: asyncio.Task[None] | None = None
        #: Table writes made, for benchmarks and tests.
        self.storage_operations = 0

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        lease = self._lease(key, window, limit)
        now = time.monotonic()
        lease.last_used = now
        if amount > limit:  # never admissible: refuse without touching the lease or marking the window spent
            return Admission(False, self._remaining(lease, limit))
        self._count_demand(lease, amount, now)
        if lease.balance < amount or now >= lease.valid_until:
            if now < lease.exhausted_until:
                return Admission(False, self._remaining(lease, limit))
            async with self._lock(lease):
                if time.monotonic() < lease.exhausted_until:  # a request ahead in the lock just found nothing left
                    return Admission(False, self._remaining(lease, limit))
                if lease.balance < amount or time.monotonic() >= lease.valid_until:
                    short = amount - max(lease.balance, 0)
                    wanted = max(short, self._lease_size(lease, limit)) if short > 0 else 0
                    try:
                        await self._write(lease, limit, wanted, minimum=max(short, 0))
                    except Conflict:  # storage answers, and other instances keep winning: they enforce the limit
                        if self._refuse_on_outage:
                            raise StorageUnavailable() from None
                        return Admission(False, self._remaining(lease, limit))
                    except StorageUnavailable:
                        if self._refuse_on_outage:
                            raise
                        allowed = self._admit_during_outage(lease, amount, limit)
                        lease.balance -= amount if allowed else 0
                        return Admission(allowed, self._remaining(lease, limit))
            if lease.balance < amount:
                lease.exhausted_until = time.monotonic() + EXHAUSTED_RECHECK_SECONDS
                return Admission(False, self._remaining(lease, limit))
        lease.balance -= amount
        return Admission(True, self._remaining(lease, limit))

    async def add(self, key: str, window: Window, amount: int, limit: int) -> None:
        """Settle: `amount` more (or back, when negative). Debt is reported at once, so other instances see it."""
        lease = self._lease(key, window, limit)
        lease.balance -= amount
        if lease.balance >= 0:
            return
        async with self._lock(lease):
            if lease.balance < 0:
                with contextlib.suppress(StorageUnavailable, Conflict):  # reported by the next renewal instead
                    await self._write(lease, limit, 0, minimum=0)

    def start(self) -> None:
        """Renew leases in use, give back idle ones, and report spend, in the background."""
        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain_periodically())

    async def release(self) -> None:
        """Give every unused balance of windows still open back to the table, and report what was spent."""
        maintainer, self._maintainer = self._maintainer, None
        if maintainer is not None and not maintainer.done():  # done already if its event loop has shut down
            maintainer.cancel()
            await asyncio.gather(maintainer, return_exceptions=True)
        for ident, lease in list(self._leases.items()):
            if lease.window.end > time.time() and (lease.reported or lease.unreported):
                try:
                    async with self._lock(lease):
                        await self._write(lease, self._limits[ident], 0, minimum=0, release=True)
                except (StorageUnavailable, Conflict):
                    logger.warning("Could not give back %d unused tokens of %s; they return when the lease expires.", lease.balance, lease.key)

    async def maintain(self) -> None:
        """One pass: renew leases in use, release idle ones, forget ended windows."""
        now, wall = time.monotonic(), time.time()
        for ident, lease in list(self._leases.items()):
            if lease.window.end <= wall:  # nothing can be admitted in it any more
                del self._leases[ident]
                self._locks.pop(ident, None)
                self._limits.pop(ident, None)
                if self._latest.get(lease.key) is lease:
                    del self._latest[lease.key]
                continue
            limit = self._limits[ident]
            idle = now - lease.last_used > self._lease_seconds / 2
            renew_due = lease.valid_until - now < self._lease_seconds * 2 / 3
            size = self._lease_size(lease, limit)
            excess = lease.balance > 2 * size
            if not (lease.unreported or (lease.reported and (idle or renew_due or excess))):
                continue
            async with self._lock(lease):
                keep = size if excess else None
                await self._write(lease, limit, 0, minimum=0, release=idle and lease.balance >= 0, keep=keep)

    async def _maintain_periodically(self) -> None:
        failing = False
        while True:
            # Jittered: instances started together (a scale-out) must not renew the same hot row in the same instant.
            await asyncio.sleep(self._lease_seconds / 3 * random.uniform(0.5, 1.0))
            try:
                await self.maintain()
                failing = False
            except (StorageUnavailable, Conflict) as exc:
                if not failing:  # once per outage (or contention spell), not once per pass
                    logger.warning("Renewing token-limit leases failed (%s); will retry.", type(exc).__name__)
                failing = True
            except Exception:
                logger.exception("Renewing token-limit leases failed; will retry.")

    def _admit_during_outage(self, lease: _Lease, amount: int, limit: int) -> bool:
        """Storage is down: admit from this instance's own view (balance, then the headroom it last saw)."""
        headroom = max(0, limit - lease.shared)
        return lease.balance - amount >= -headroom

    def _count_demand(self, lease: _Lease, amount: int, now: float) -> None:
        """Add to the demand of the current measuring interval (one renewal interval); roll it over when it ends."""
        elapsed = now - lease.demand_since
        if elapsed >= self._lease_seconds / 3:
            lease.demand_rate, lease.demand, lease.demand_since = lease.demand / elapsed, 0, now
        lease.demand += amount

    def _lease_size(self, lease: _Lease, limit: int) -> int:
        """What this instance is likely asked for until its next renewal, at most `lease_fraction` of the limit.

        Measured over at least a second, so the first requests of a window ask for about ten of themselves."""
        current = lease.demand / max(time.monotonic() - lease.demand_since, 1.0)
        expected = math.ceil(max(lease.demand_rate, current) * self._lease_seconds / 3)
        return max(min(math.ceil(limit * self._lease_fraction), expected), 1)

    def _remaining(self, lease: _Lease, limit: int) -> int:
        return max(0, limit - lease.shared + lease.balance)

    def _lease(self, key: str, window: Window, limit: int) -> _Lease:
        ident = (key, window.id)
        lease = self._leases.get(ident)
        if lease is None:
            lease = self._leases[ident] = _Lease(key, window)
            previous = self._latest.get(key)
            if previous is not None:  # a new window of a key in use: one lease write at its start, not a slow start
                lease.demand_rate = max(previous.demand_rate, previous.demand / max(lease.demand_since - previous.demand_since, 1.0))
            self._latest[key] = lease
        self._limits[ident] = limit
        return lease

    def _lock(self, lease: _Lease) -> asyncio.Lock:
        return self._locks.setdefault((lease.key, lease.window.id), asyncio.Lock())

    async def _write(self, lease: _Lease, limit: int, wanted: int, minimum: int, release: bool = False, keep: int | None = None) -> None:
        """Report spend, prune expired leases, and set our held amount: up to `wanted` more (at least `minimum`,
        else nothing more), or nothing at all when releasing, or at most `keep` (giving back the rest). Updates
        the local lease from what was written.

        A request that finds nothing left writes nothing while our lease in the row is still valid: the row
        already counts what we spent (as held), and the next renewal reports it. So a spent window costs each
        instance one read per `EXHAUSTED_RECHECK_SECONDS`, never a contended write."""
        snapshot = 0
        written: dict[str, Any] = {}

        def change(row: Row | None) -> Entity | None:
            nonlocal snapshot
            snapshot = lease.balance
            now = time.time()
            settled = _settled(row) + lease.reported - snapshot
            leases = {owner: held_expiry for owner, held_expiry in _leases(row).items() if owner != self.instance and held_expiry[1] > now}
            others = sum(held for held, _ in leases.values())
            base = max(snapshot, 0) if keep is None else min(max(snapshot, 0), keep)
            held = 0 if release else min(base + wanted, max(limit - settled - others, base))
            if not release and held - base < minimum:
                if minimum > 0 and snapshot >= 0 and (lease.reported == 0 or time.monotonic() < lease.valid_until):
                    written.update(settled=settled, held=None, others=others)
                    return None
                held = base
            if held > 0:
                leases[self.instance] = [held, round(now + self._lease_seconds, 3)]
            written.update(settled=settled, held=held, others=others)
            return {
                "PartitionKey": _partition(lease.key),
                "RowKey": lease.window.id,
                "settled": settled,
                "leases": orjson.dumps(leases).decode(),
                "key": lease.key[:512],
                "end": lease.window.end,
            }

        started = time.monotonic()
        await update_with_retry(self._table, _partition(lease.key), lease.window.id, change)
        held = written["held"]
        if held is None:  # nothing granted, nothing written: only the view of the others' use is new
            lease.shared = written["settled"] + written["others"] + snapshot
            return
        self.storage_operations += 1
        lease.balance = held + (lease.balance - snapshot)  # keep what requests did while we awaited the table
        lease.reported = held
        lease.shared = written["settled"] + written["others"] + held
        lease.valid_until = started + self._lease_seconds - CLOCK_MARGIN_SECONDS if held > 0 else 0.0


def _settled(row: Row | None) -> int:
    if row is None:
        return 0
    # Rows written before leases expired hold `leased`: all of it counts as used (nothing can be told apart).
    return int(row.get("settled", row.get("leased", 0)) or 0)


def _leases(row: Row | None) -> dict[str, list[float]]:
    if row is None or not row.get("leases"):
        return {}
    try:
        parsed = orjson.loads(row["leases"])
    except orjson.JSONDecodeError:
        return {}
    return {str(owner): [int(value[0]), float(value[1])] for owner, value in parsed.items() if isinstance(value, list) and len(value) == 2}


def _partition(key: str) -> str:
    """Counter keys are arbitrary text; a hash is always a valid, evenly spread partition key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]
