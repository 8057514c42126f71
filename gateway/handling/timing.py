"""`Server-Timing` for every response: where a request's time went, measured from its arrival.

Time the process spent paused in garbage collection is the gateway's, never a named phase's: a phase measured
with `start()`/`stop()` leaves out the collection pauses that happened meanwhile (gateway/handling/collector.py
counts them), so a pause while waiting for the backend shows as `gateway`, not as `upstream`.
"""

from __future__ import annotations

import time

from gateway.handling.collector import PAUSES

#: Where a phase began: (perf_counter seconds, collection pause seconds so far).
Mark = tuple[float, float]


class ServerTiming:
    """Named durations (auth, upstream, …); whatever time they do not cover is reported as `gateway`."""

    __slots__ = ("arrival", "_durations")

    def __init__(self) -> None:
        self.arrival = self.start()
        self._durations: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.arrival[0]

    def add(self, name: str, seconds: float) -> None:
        """Add to `name` (it accumulates: a retried backend call counts every attempt)."""
        self._durations[name] = self._durations.get(name, 0.0) + seconds

    @staticmethod
    def start() -> Mark:
        return time.perf_counter(), PAUSES.total

    def stop(self, name: str, mark: Mark) -> float:
        """Add the time since `mark` to `name`, less the collection pauses meanwhile; returns that time."""
        began, paused = mark
        seconds = max(0.0, time.perf_counter() - began - (PAUSES.total - paused))
        self.add(name, seconds)
        return seconds

    def header(self) -> tuple[bytes, bytes]:
        total = self.elapsed()
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self._durations.items()]
        parts.append(f"gateway;dur={(total - sum(self._durations.values())) * 1000:.2f}")
        parts.append(f"total;dur={total * 1000:.2f}")
        return b"server-timing", ", ".join(parts).encode()
