"""Load-balanced backend pools: priority groups, weights, and failover around tripped or throttled members.

Selection for one forward, as APIM documents it plus two gateway extensions (marked *):

1. members serving the request's deployment;
2. minus those tripped or waiting (`BackendHealth.available_at`) — none left: 503 `PoolIsInactive`;
3. * members this request has not tried yet, when there are any (so a `<retry>` fails over instead of
   hammering the member that just failed);
4. * with predictive routing, members whose last response showed headroom, when there are any;
5. the lowest priority number among those left ("lower-priority groups are used only when every member of
   higher groups is unavailable");
6. within that group, smooth weighted round-robin (nginx's algorithm): exact shares over any run of requests,
   interleaved rather than bursty; equal weights are plain round-robin. A weight of 0 makes a member a
   standby of its group, used only when no positive-weight member of the group is left.

Pure in-memory work on at most 30 members; `bench/pool_selection.py` measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from gateway.backends.backend import Backend
from gateway.backends.health import BackendHealth
from gateway.errors import DeploymentNotFound, PoolUnavailable


class PoolMember:
    __slots__ = ("backend", "health", "priority", "weight", "current")

    def __init__(self, backend: Backend, priority: int, weight: int) -> None:
        self.backend = backend
        self.health: BackendHealth = backend.health
        self.priority = priority
        self.weight = weight
        #: Smooth weighted round-robin state: grows by `weight` each round, drops by the total when chosen.
        self.current = 0


class Pool:
    """A pool as `set-backend-service backend-id` and deployment routing see it: `select` yields a member."""

    def __init__(
        self,
        pool_id: str,
        deployments: frozenset[str],
        members: Sequence[PoolMember],
        predictive: bool,
        clock: Callable[[], float],
    ) -> None:
        self.id = pool_id
        self.deployments = deployments
        self.members = tuple(members)
        self._predictive = predictive
        self._clock = clock

    def select(self, deployment: str | None, tried: Collection[str]) -> Backend:
        """The member to send this attempt to; raises `PoolUnavailable` (503) or `DeploymentNotFound` (404)."""
        now = self._clock()
        members = self.members
        if deployment is not None:
            members = tuple(m for m in members if m.backend.serves(deployment))
            if not members:
                raise DeploymentNotFound()
        available = [m for m in members if m.health.available_at <= now]
        if not available:
            raise PoolUnavailable(min(m.health.available_at for m in members) - now)
        if tried:
            available = [m for m in available if m.backend.id not in tried] or available
        if self._predictive:
            available = [m for m in available if m.health.low_until <= now] or available
        if len(available) > 1:
            best = min(m.priority for m in available)
            available = [m for m in available if m.priority == best]
        return (available[0] if len(available) == 1 else _smooth_weighted(available)).backend


def _smooth_weighted(group: list[PoolMember]) -> PoolMember:
    weighted = [m for m in group if m.weight > 0]
    if not weighted:  # only standbys left: share evenly
        weighted = group
    total = 0
    chosen = weighted[0]
    for member in weighted:
        weight = member.weight or 1
        member.current += weight
        total += weight
        if member.current > chosen.current:
            chosen = member
    chosen.current -= total
    return chosen
