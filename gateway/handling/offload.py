"""CPU-heavy request work off the event loop, in one small pool per process.

One event loop serves every request of the process, so a 25 MiB prompt tokenized on it stalls them all for
seconds. Work on large inputs (tokenizing, parsing big JSON bodies) runs here instead. tiktoken's encoder
releases the GIL while it runs, so the loop keeps serving; orjson and the Python parts hold it, but the
interpreter hands it back to the loop thread every switch interval (5 ms), so the loop slows, never stops.

The pool is bounded: by default one thread fewer than the machine has cores (at least one), which leaves a
core to the loop. Jobs beyond that wait their turn in the pool's queue, which holds only references to bodies
the waiting requests hold anyway; a job whose request went away before it started never runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class Offload:
    """A bounded thread pool for CPU work; threads start on first use."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gateway-cpu")

    async def run(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
