"""The cyclic garbage collector in a process that serves requests: tuned once it has started, its pauses counted.

A full collection walks every tracked object of the process (~80k after start-up: modules, classes, the SDKs'
tables) and holds the event loop meanwhile, so every request in flight waits: at c=20 that was a 30–50 ms stall
about once per 1,000 requests (bench/overhead.py). Requests make no reference cycles (the handler breaks the
ones statements' callbacks make), so what they allocate is freed by reference counting and the collector has
little to find. Hence, once the process has started:

* `gc.freeze()` moves everything alive into the permanent generation, which collections never walk: a full
  pass only looks at what was made since (a few thousand objects, ~1 ms).
* The youngest generation's threshold rises from 700 to 10,000 net allocations, so the objects of requests in
  flight are rarely caught by a young collection and promoted toward a full pass. Cyclic garbage, should some
  path make it, is still collected: young passes every 10,000 net allocations, full ones after the usual
  number of those (the other thresholds are unchanged).

`PAUSES` counts the seconds spent in collections so far, so `Server-Timing` books them to the gateway.
"""

from __future__ import annotations

import gc
import time
from typing import Any

YOUNG_THRESHOLD = 10_000


class PauseClock:
    """Seconds this process spent in garbage collection passes, kept by a `gc.callbacks` hook."""

    __slots__ = ("total", "_began")

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


PAUSES = PauseClock()


def count_pauses() -> None:
    """Start counting collection pauses (idempotent)."""
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)


def settle() -> None:
    """After start-up: collect once, freeze what is alive, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
