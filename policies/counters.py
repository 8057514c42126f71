"""Window counters behind `rate-limit`, `rate-limit-by-key` (and the token limits): admit or refuse an amount.

A window is a fixed period with an id (e.g. the epoch-aligned minute) and an end time. The counter store is
an interface so the gateway can keep counts in this process or share them across instances.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Window:
    id: str
    end: float

    @classmethod
    def fixed(cls, period_seconds: float, now: float | None = None) -> Window:
        """The epoch-aligned window of `period_seconds` containing `now`."""
        now = time.time() if now is None else now
        start = math.floor(now / period_seconds) * period_seconds
        return cls(f"{int(period_seconds)}s:{int(start)}", start + period_seconds)

    def seconds_left(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return max(1, math.ceil(self.end - now))


@dataclass(frozen=True)
class Admission:
    allowed: bool
    #: What is left in the window after this decision (never negative).
    remaining: int


class Counters(Protocol):
    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        """Count `amount` against `limit` if it fits; otherwise count nothing and refuse."""

    async def add(self, key: str, window: Window, amount: int) -> int:
        """Count `amount` (negative to give back) whatever the limit; returns the new total."""

    async def used(self, key: str, window: Window) -> int: ...


class LocalCounters:
    """Counters kept in this process: exact for one instance; windows that have ended are dropped."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        used = await self.used(key, window)
        if used + amount > limit:
            return Admission(False, max(0, limit - used))
        total = await self.add(key, window, amount)
        return Admission(True, max(0, limit - total))

    async def add(self, key: str, window: Window, amount: int) -> int:
        self._expire()
        total = self._counts.get((key, window.id), (window.end, 0))[1] + amount
        self._counts[(key, window.id)] = (window.end, total)
        return total

    async def used(self, key: str, window: Window) -> int:
        return self._counts.get((key, window.id), (window.end, 0))[1]

    def _expire(self) -> None:
        if len(self._counts) < 1024:
            return
        now = time.time()
        self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
