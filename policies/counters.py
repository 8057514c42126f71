"""Window counters behind `rate-limit`, `rate-limit-by-key` (and the token limits): admit or refuse an amount.

A window is a fixed period with an id (e.g. the epoch-aligned minute) and an end time. The counter store is
an interface so the gateway can keep counts in this process or share them across instances.
"""

from __future__ import annotations

import datetime as _dt
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
    """Reserve-then-settle counting: `acquire` before the work, `add` the difference once it is known."""

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        """Count `amount` against `limit` if it fits; otherwise count nothing and refuse."""

    async def add(self, key: str, window: Window, amount: int, limit: int) -> None:
        """Count `amount` more (negative to give back) whatever the limit: settling a reservation."""


class LocalCounters:
    """Counters kept in this process: exact for one instance; windows that have ended are dropped."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        used = self._counts.get((key, window.id), (window.end, 0))[1]
        if used + amount > limit:
            return Admission(False, max(0, limit - used))
        await self.add(key, window, amount, limit)
        return Admission(True, max(0, limit - used - amount))

    async def add(self, key: str, window: Window, amount: int, limit: int) -> None:
        self._expire()
        total = self._counts.get((key, window.id), (window.end, 0))[1] + amount
        self._counts[(key, window.id)] = (window.end, total)

    def _expire(self) -> None:
        if len(self._counts) < 1024:
            return
        now = time.time()
        self._counts = {k: v for k, v in self._counts.items() if v[0] > now}


QUOTA_PERIODS = ("Hourly", "Daily", "Weekly", "Monthly", "Yearly")


#: The last window computed for each period, with its start: a request in the same period reuses it.
_CURRENT: dict[str, tuple[float, Window]] = {}


def quota_window(period: str, now: float | None = None) -> Window:
    """The calendar period containing `now`, in UTC: hours, days, ISO weeks (from Monday), months, years."""
    moment = time.time() if now is None else now
    current = _CURRENT.get(period)
    if current is not None and current[0] <= moment < current[1].end:
        return current[1]
    start, window = _calendar_window(period, moment)
    _CURRENT[period] = (start, window)
    return window


def _calendar_window(period: str, moment: float) -> tuple[float, Window]:
    current = _dt.datetime.fromtimestamp(moment, _dt.UTC)
    if period == "Hourly":
        start = current.replace(minute=0, second=0, microsecond=0)
        end = start + _dt.timedelta(hours=1)
    elif period == "Daily":
        start = current.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + _dt.timedelta(days=1)
    elif period == "Weekly":
        start = (current - _dt.timedelta(days=current.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + _dt.timedelta(weeks=1)
    elif period == "Monthly":
        start = current.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    elif period == "Yearly":
        start = current.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"Unknown quota period {period!r}; use one of {', '.join(QUOTA_PERIODS)}.")
    return start.timestamp(), Window(f"q{period}:{start:%Y%m%dT%H}", end.timestamp())
