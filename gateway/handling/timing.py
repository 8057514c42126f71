"""`Server-Timing` for every response: where a request's time went, measured from its arrival."""

from __future__ import annotations

import time


class ServerTiming:
    """Named durations (auth, upstream, …); whatever time they do not cover is reported as `gateway`."""

    __slots__ = ("_start", "_durations")

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._durations: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def add(self, name: str, seconds: float) -> None:
        """Add to `name` (it accumulates: a retried backend call counts every attempt)."""
        self._durations[name] = self._durations.get(name, 0.0) + seconds

    def header(self) -> tuple[bytes, bytes]:
        total = self.elapsed()
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self._durations.items()]
        parts.append(f"gateway;dur={(total - sum(self._durations.values())) * 1000:.2f}")
        parts.append(f"total;dur={total * 1000:.2f}")
        return b"server-timing", ", ".join(parts).encode()
