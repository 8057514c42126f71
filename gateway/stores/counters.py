"""Limits that hold across every gateway instance sharing one storage account, without a storage call per request.

Each counter (a counter key in one window: a minute, an hour, a quota period) is a row in `<prefix>counters`
holding how much of the limit has been *leased* to instances. An instance takes a lease — a slice of the
limit — with an ETag-checked update, then admits requests from its local balance: a request reserves its
worst case (prompt estimate + max completion tokens, or one call), and settles to what it really used; any
refund goes back into the local balance. Only when the balance runs out does the instance go back to the table.

Bounds, with N instances, limit L, lease size S = max(ceil(L x lease_fraction), 1):

* **Overshoot from leasing: none.** Leases never exceed L in total, and a request is admitted only when its
  whole reservation fits in a lease. Admitted usage can exceed L only by what requests used *beyond* their
  reservation (a prompt estimate that was low, or no max_tokens and a longer answer than the default
  reservation), which is charged as debt and refuses later requests.
* **Under-use: at most N x S per window** may sit unused in other instances' balances while one instance
  refuses. With the default lease fraction (5 %) and 2 instances, at most 10 % of the limit.
* **Storage operations per request: about 2 x reservation / S** (two calls per lease): 0.08 at a 100k TPM
  limit with 200-token requests. Once the table refuses a lease, the instance refuses locally for a second
  before asking again, so a flood of refused requests costs no storage calls either.

A graceful shutdown gives unused balances back, so quotas (kept for their whole period) survive restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient

from policies.counters import Admission, Window

logger = logging.getLogger(__name__)
#: How long an instance trusts "the shared counter is spent" before asking the table again.
EXHAUSTED_RECHECK_SECONDS = 1.0


@dataclass
class _Lease:
    end: float
    balance: int = 0
    #: The table's leased total as of our last update (includes other instances' leases).
    shared: int = 0
    #: After the table refused a lease, refuse locally until then instead of asking again per request.
    exhausted_until: float = 0.0


class SharedCounters:
    """`policies.counters.Counters` backed by Table Storage leases."""

    def __init__(self, table: TableClient, lease_fraction: float = 0.05) -> None:
        self._table = table
        self._lease_fraction = lease_fraction
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: Table round trips made, for benchmarks and tests.
        self.storage_operations = 0

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        lease = self._lease(key, window)
        if amount > limit:  # never admissible: refuse without touching the lease or marking the window spent
            return Admission(False, self._remaining(lease, limit))
        if lease.balance < amount:
            if time.monotonic() < lease.exhausted_until:
                return Admission(False, self._remaining(lease, limit))
            async with self._lock(key, window):
                if lease.balance < amount:
                    wanted = max(amount - lease.balance, math.ceil(limit * self._lease_fraction), 1)
                    granted = await self._take(key, window, lease, wanted, amount - lease.balance, limit)
                    lease.balance += granted  # not `+= await`: that would drop decrements made during the await
            if lease.balance < amount:
                lease.exhausted_until = time.monotonic() + EXHAUSTED_RECHECK_SECONDS
                return Admission(False, self._remaining(lease, limit))
        lease.balance -= amount
        return Admission(True, self._remaining(lease, limit))

    async def add(self, key: str, window: Window, amount: int, limit: int) -> None:
        lease = self._lease(key, window)
        if amount <= lease.balance:
            lease.balance -= amount  # a refund (negative amount) grows the balance
            return
        debt = amount - lease.balance
        lease.balance = 0
        async with self._lock(key, window):
            await self._take(key, window, lease, debt, debt, limit=None)

    async def release(self) -> None:
        """Give unused balances of windows still open back to the table (graceful shutdown)."""
        now = time.time()
        for (key, window_id), lease in list(self._leases.items()):
            if lease.balance > 0 and lease.end > now:
                try:
                    await self._take(key, Window(window_id, lease.end), lease, -lease.balance, -lease.balance, limit=None)
                    lease.balance = 0
                except Exception:
                    logger.warning("Could not give back %s unused tokens of %s.", lease.balance, key, exc_info=True)

    def _remaining(self, lease: _Lease, limit: int) -> int:
        return max(0, limit - lease.shared + lease.balance)

    def _lease(self, key: str, window: Window) -> _Lease:
        lease = self._leases.get((key, window.id))
        if lease is None:
            if len(self._leases) > 4096:
                self._forget_ended()
            lease = self._leases[(key, window.id)] = _Lease(window.end)
        return lease

    def _lock(self, key: str, window: Window) -> asyncio.Lock:
        return self._locks.setdefault((key, window.id), asyncio.Lock())

    def _forget_ended(self) -> None:
        now = time.time()
        for ident in [ident for ident, lease in self._leases.items() if lease.end <= now]:
            del self._leases[ident]
            self._locks.pop(ident, None)

    async def _take(self, key: str, window: Window, lease: _Lease, wanted: int, minimum: int, limit: int | None) -> int:
        """Move up to `wanted` (at least `minimum`, else nothing) from the shared counter; `limit=None` forces it."""
        row = {"PartitionKey": _partition(key), "RowKey": window.id}
        for attempt in range(100):
            self.storage_operations += 1
            try:
                entity = await self._table.get_entity(row["PartitionKey"], row["RowKey"])
                leased, etag = _int(entity["leased"]), entity.metadata["etag"]
            except ResourceNotFoundError:
                leased, etag = 0, None
            granted = wanted if limit is None else min(wanted, limit - leased)
            if limit is not None and granted < minimum:
                lease.shared = leased
                return 0
            values = {**row, "leased": EntityProperty(leased + granted, EdmType.INT64), "key": key[:512], "end": window.end}
            self.storage_operations += 1
            try:
                if etag is None:
                    await self._table.create_entity(values)
                else:
                    await self._table.update_entity(values, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceExistsError):
                await asyncio.sleep(random.uniform(0, 0.005 * min(attempt + 1, 10)))
                continue
            lease.shared = leased + granted
            return granted
        raise RuntimeError(f"Counter {key!r} is too contended to update; try a larger lease fraction.")


def _partition(key: str) -> str:
    """Counter keys are arbitrary text; a hash is always a valid, evenly spread partition key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _int(value: object) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)  # type: ignore[arg-type]
