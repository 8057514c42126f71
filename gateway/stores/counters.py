"""Limits that hold across every gateway instance sharing one storage account, without a storage call per request,
and that heal by themselves when an instance vanishes without a goodbye (scale-in, recycle, SIGKILL).

Each counter (a counter key in one window: a minute, an hour, a quota period) is one row of `<prefix>counters`:

* `settled`: what instances have reported as used in the window (reservations not yet settled included);
* `leases`: JSON `{instance: [held, expires]}`: slices of the limit an instance may still spend, each with an
  expiry (epoch seconds, `LEASE_SECONDS` after its last write).

An instance takes a slice (`lease_fraction` of the limit) with an ETag-checked update and then admits requests
from its local balance: a request reserves its worst case and settles to what it used; refunds go back into the
balance. Every write also *reports* what the instance spent since its previous write (moved into `settled`) and
prunes other instances' expired leases, whose held balance thereby returns to the window. A background task
renews leases in use every `LEASE_SECONDS / 3`, reporting spend, and gives back the balance of leases idle for
half a lease lifetime; a graceful shutdown gives everything back at once. A lease is spent locally only while
it is valid (its expiry minus `CLOCK_MARGIN_SECONDS` for clock skew between instances); after that the
instance renews before it admits more.

Bounds, with N instances, limit L, lease size S = max(ceil(L x lease_fraction), 1), lease lifetime T:

* **Overshoot from leasing: none.** Live leases plus settled usage never exceed L when granted, and a request is
  admitted only when its whole reservation fits in a lease. Usage can exceed L only by what requests used
  *beyond* their reservation (charged as debt; later requests are refused).
* **Under-use while all instances live: at most N x S per window** may sit in other instances' balances while
  one refuses (10 % of the limit with the default 5 % and two instances); idle balances return after T/2.
* **An instance killed without a goodbye strands nothing for longer than T** (default 30 s): its lease expires
  and its held balance returns to the window with the next write of any instance. What it spent after its last
  report (at most one renewal interval, T/3, of its own traffic, and never more than its lease S) is not charged:
  the bound on under-counting per crash.
* **Storage operations per request: about 2 x reservation / S** plus one renewal per active counter per T/3;
  once a window is spent, one read per instance per `EXHAUSTED_RECHECK_SECONDS` (docs/scale.md).
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
import time
import uuid
from dataclasses import dataclass
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

    @property
    def unreported(self) -> int:
        return self.reported - self.balance


class SharedCounters:
    """`policies.counters.Counters` backed by Table Storage leases that expire."""

    def __init__(
        self, table: Table, lease_fraction: float = 0.05, refuse_on_outage: bool = False, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._table = table
        self._lease_fraction = lease_fraction
        self._refuse_on_outage = refuse_on_outage
        self._lease_seconds = lease_seconds
        self.instance = uuid.uuid4().hex[:12]
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._limits: dict[tuple[str, str], int] = {}
        self._maintainer: asyncio.Task[None] | None = None
        #: Table writes made, for benchmarks and tests.
        self.storage_operations = 0

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        lease = self._lease(key, window, limit)
        now = time.monotonic()
        lease.last_used = now
        if lease.balance < amount or now >= lease.valid_until:
            if now < lease.exhausted_until:
                return Admission(False, self._remaining(lease, limit))
            async with self._lock(lease):
                if time.monotonic() < lease.exhausted_until:  # a request ahead in the lock just found nothing left
                    return Admission(False, self._remaining(lease, limit))
                if lease.balance < amount or time.monotonic() >= lease.valid_until:
                    short = amount - max(lease.balance, 0)
                    wanted = max(short, math.ceil(limit * self._lease_fraction), 1) if short > 0 else 0
                    try:
                        await self._write(lease, limit, wanted, minimum=max(short, 0))
                    except (StorageUnavailable, Conflict) as exc:
                        if self._refuse_on_outage:
                            if isinstance(exc, Conflict):
                                raise StorageUnavailable() from exc
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
                with contextlib.suppress(StorageUnavailable):  # reported by the next renewal instead
                    await self._write(lease, limit, 0, minimum=0)

    def start(self) -> None:
        """Renew leases in use, give back idle ones, and report spend, in the background."""
        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain_periodically())

    async def release(self) -> None:
        """Give every unused balance of windows still open back to the table, and report what was spent."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
            self._maintainer = None
        for ident, lease in list(self._leases.items()):
            if lease.window.end > time.time() and (lease.reported or lease.unreported):
                try:
                    async with self._lock(lease):
                        await self._write(lease, self._limits[ident], 0, minimum=0, release=True)
                except StorageUnavailable:
                    logger.warning("Could not give back %d unused tokens of %s; they return when the lease expires.", lease.balance, lease.key)

    async def maintain(self) -> None:
        """One pass: renew leases in use, release idle ones, forget ended windows."""
        now, wall = time.monotonic(), time.time()
        for ident, lease in list(self._leases.items()):
            if lease.window.end <= wall:  # nothing can be admitted in it any more
                del self._leases[ident]
                self._locks.pop(ident, None)
                self._limits.pop(ident, None)
                continue
            idle = now - lease.last_used > self._lease_seconds / 2
            renew_due = lease.valid_until - now < self._lease_seconds * 2 / 3
            if not (lease.unreported or (lease.reported and (idle or renew_due))):
                continue
            async with self._lock(lease):
                await self._write(lease, self._limits[ident], 0, minimum=0, release=idle and lease.balance >= 0)

    async def _maintain_periodically(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self.maintain()
                failing = False
            except StorageUnavailable:
                if not failing:
                    logger.warning("Renewing token-limit leases failed (storage unavailable); will retry.")
                failing = True
            except Exception:
                logger.exception("Renewing token-limit leases failed; will retry.")

    def _admit_during_outage(self, lease: _Lease, amount: int, limit: int) -> bool:
        """Storage is down: admit from this instance's own view (balance, then the headroom it last saw)."""
        headroom = max(0, limit - lease.shared)
        return lease.balance - amount >= -headroom

    def _remaining(self, lease: _Lease, limit: int) -> int:
        return max(0, limit - lease.shared + lease.balance)

    def _lease(self, key: str, window: Window, limit: int) -> _Lease:
        ident = (key, window.id)
        lease = self._leases.get(ident)
        if lease is None:
            lease = self._leases[ident] = _Lease(key, window)
        self._limits[ident] = limit
        return lease

    def _lock(self, lease: _Lease) -> asyncio.Lock:
        return self._locks.setdefault((lease.key, lease.window.id), asyncio.Lock())

    async def _write(self, lease: _Lease, limit: int, wanted: int, minimum: int, release: bool = False) -> None:
        """Report spend, prune expired leases, and set our held amount: up to `wanted` more (at least `minimum`,
        else nothing more), or nothing at all when releasing. Updates the local lease from what was written.

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
            leases = {
                owner: held_expiry for owner, held_expiry in _leases(row).items() if owner != self.instance and held_expiry[1] > now
            }
            others = sum(held for held, _ in leases.values())
            base = max(snapshot, 0)
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
