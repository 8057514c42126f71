"""Throttling wrong admin-key guesses per client address, in bounded memory.

After `limit` wrong keys from one address within `window` seconds, that address gets 429 with Retry-After until
the window that began with its first failure ends; a right key does not lift it early (it would tell a guesser
which guess was right). IPv6 addresses count per /64, the block one subscriber usually holds. At most
`max_addresses` are tracked; past that the address whose window began earliest is forgotten, so memory stays
bounded under a flood of addresses. The count is per instance: N instances allow N x `limit` guesses per window.
The throttle stops cheap guessing from one place; what makes guessing hopeless is the admin key's length
(16 characters at least, `GATEWAY_ADMIN_KEY`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable


class FailureThrottle:
    def __init__(self, limit: int = 5, window: float = 300.0, max_addresses: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        #: address -> (start of its window, failures in it); oldest window first.
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may try now."""
        entry = self._current(_bucket(address))
        if entry is None or entry[1] < self.limit:
            return None
        return max(1, math.ceil(entry[0] + self.window - self._clock()))

    def failed(self, address: str) -> None:
        bucket = _bucket(address)
        entry = self._current(bucket)
        if entry is None:
            self._failures[bucket] = (self._clock(), 1)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures[bucket] = (entry[0], entry[1] + 1)

    def _current(self, bucket: str) -> tuple[float, int] | None:
        entry = self._failures.get(bucket)
        if entry is not None and entry[0] + self.window <= self._clock():
            del self._failures[bucket]
            return None
        return entry


def _bucket(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
