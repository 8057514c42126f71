"""Under Azure Functions, give leases back and write buffered metrics when the worker is stopped or exits.

The Python worker offers no shutdown hook: the host stops a worker with SIGTERM (then SIGKILL after a grace
period), or the worker's event loop ends and the interpreter exits. `install()` runs when `function_app.py` is
imported, and covers both:

* **SIGTERM.** The handler is installed with `signal.signal` before the worker starts the HTTP streaming
  extension's uvicorn server, which then captures SIGTERM itself, drains its open connections (streams run to
  their end), puts the previous handler (this one) back and raises the signal again. This handler then closes
  the gateway on the event loop that runs the functions, within `CLOSE_SECONDS`, and re-raises SIGTERM with the
  disposition it found (by default: the process ends by that signal). `loop.add_signal_handler` would not do:
  its wakeup file descriptor fires at the first signal, before uvicorn has drained the streams.
* **Interpreter exit** (the worker's loop ended), unless the SIGTERM path finished: that loop is closed by then,
  so the tables reconnect on a fresh one (`Tables.reopen`) and only what others need is done
  (`Gateway.hand_back`).

SIGKILL runs neither; what that loses is bounded by lease expiry and the metrics flush interval (README,
gateway/stores/counters.py, gateway/stores/metrics.py).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from gateway.hosts.local import built_gateway

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

logger = logging.getLogger(__name__)

#: The longest a stop waits for leases and metrics to be written before the process ends anyway.
CLOSE_SECONDS = 10.0

_installed = False
_previous: Any = signal.SIG_DFL
#: "running" once a stop has begun, "done" once it finished (or had nothing to do).
_state = "idle"
#: The closing task, referenced so that it is not collected while it runs.
_closing: set[asyncio.Task[None]] = set()


def install() -> None:
    """Chain the SIGTERM handler and register the exit hook (once; signals only from the main thread)."""
    global _installed, _previous
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Not `atexit.register`: by the time those run, concurrent.futures refuses new work, and the storage client
    # needs its thread pool (DNS lookups). threading's exit hooks run earlier, newest first, so this one runs
    # before concurrent.futures shuts its pools (the hook it registered on import).
    getattr(threading, "_register_atexit", atexit.register)(_at_exit)
    _installed = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _state
    if _state != "idle":
        return
    _state = "running"
    gateway = built_gateway()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if gateway is None or loop is None:
        if gateway is not None:
            _hand_back_on_a_new_loop(gateway)
        _finish(signum)
        return
    # A signal handler must not wait: the loop it interrupted does the closing (woken up, if it was idle).
    loop.call_soon_threadsafe(lambda: _closing.add(loop.create_task(_close_then_finish(gateway, signum))))


async def _close_then_finish(gateway: Gateway, signum: int) -> None:
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await gateway.close()
        logger.info("Stopped on SIGTERM: leases given back, metrics written.")
    except TimeoutError:
        logger.warning("Closing the gateway took over %.0f s; stopping anyway (leases expire by themselves).", CLOSE_SECONDS)
    except asyncio.CancelledError:  # the loop is shutting down under us: the exit hook does it instead
        global _state
        _state = "idle"
        raise
    except Exception:
        logger.exception("Closing the gateway on SIGTERM failed; stopping anyway.")
    _finish(signum)


def _finish(signum: int) -> None:
    """Hand the signal to whatever handled it before (by default: end the process by it)."""
    global _state
    _state = "done"
    signal.signal(signum, _previous)
    signal.raise_signal(signum)


def _at_exit() -> None:
    global _state
    gateway = built_gateway()
    if _state == "done" or gateway is None:
        return
    _state = "done"
    _hand_back_on_a_new_loop(gateway)


def _hand_back_on_a_new_loop(gateway: Gateway) -> None:
    async def hand_back() -> None:
        gateway.store.reopen()
        async with asyncio.timeout(CLOSE_SECONDS):
            await gateway.hand_back()

    try:
        asyncio.run(hand_back())
        logger.info("At exit: leases given back, metrics written.")
    except Exception:
        logger.exception("Giving leases back and writing metrics at exit failed.")
