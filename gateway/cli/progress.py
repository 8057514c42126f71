"""Progress for long CLI operations, on stderr so stdout stays clean for JSON and keys.

Only on a terminal: a spinner turns while the operation runs (from a thread, because the operation itself
blocks in `asyncio.run`), with a detail the operation updates (rows read, …), then one line with the outcome
and the time taken. Piped or in CI logs it stays silent, like `click.progressbar(hidden=…)` below, so
scripts that parse the output (`usage --json`) are not disturbed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def interactive(stream: TextIO | None = None) -> bool:
    return (stream or sys.stderr).isatty()


@contextmanager
def spinner(label: str, stream: TextIO | None = None, interval: float = 0.1) -> Iterator[Callable[[str], None]]:
    """Show `label` while the block runs; the block gets a function that sets the detail shown after it."""
    out = stream or sys.stderr
    detail = [""]

    def set_detail(text: str) -> None:
        detail[0] = text

    if not out.isatty():
        yield set_detail
        return
    started = time.monotonic()
    stop = threading.Event()

    def turn() -> None:
        frame = 0
        while not stop.wait(interval):
            out.write(f"\r{_FRAMES[frame % len(_FRAMES)]} {label} {detail[0]}\033[K")
            out.flush()
            frame += 1

    thread = threading.Thread(target=turn, daemon=True)
    thread.start()
    outcome = "failed"
    try:
        yield set_detail
        outcome = "done"
    finally:
        stop.set()
        thread.join()
        out.write(f"\r\033[K{label}: {outcome} in {time.monotonic() - started:.1f} s {detail[0]}".rstrip() + "\n")
        out.flush()
