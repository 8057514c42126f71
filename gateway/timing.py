"""`Server-Timing` for every response: where a request's time went, measured from its arrival."""

from __future__ import annotations

import time


class ServerTiming:
    __slots__ = ("_start", "_last", "_entries")

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._entries: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        """Close the phase `name`: it lasted from the previous mark (or arrival) until now."""
        now = time.perf_counter()
        self._entries.append((name, now - self._last))
        self._last = now

    def header(self) -> tuple[bytes, bytes]:
        total = time.perf_counter() - self._start
        parts = [f"{name};dur={seconds * 1000:.2f}" for name, seconds in self._entries]
        parts.append(f"total;dur={total * 1000:.2f}")
        return b"server-timing", ", ".join(parts).encode()
