"""The live health of one backend: circuit breaker, throttle waits, latency and rate-limit headroom.

Two different things keep a backend out of pool selection for a while, as in APIM's AI-gateway patterns:

* **Tripped** (circuit breaker open): the backend's one rule counted enough failures within its interval.
  It stays open for `tripDuration`, or for the backend's `Retry-After` when the rule accepts it, then resets
  on time (APIM has no half-open state). A single backend named directly answers 503 while open.
* **Waiting**: a 429 or 503 said when to come back (`retry-after-ms`, `Retry-After`, then
  `x-ratelimit-reset-requests` / `-tokens`; a bare 429 waits `DEFAULT_THROTTLE_WAIT` seconds). Pools skip a
  waiting member whether or not it has a breaker rule; a single backend named directly is still called.

Times are wall-clock seconds (`time.time()`), because instances share them through Table Storage
(`gateway.health_sync`). Recording an outcome is O(1) and never touches storage: a trip or a new wait only
calls `on_change`, which the sync module turns into a write in the background.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: Failure reasons a breaker rule may count besides status codes (`errorReasons`), normalized.
TIMEOUT = "timeout"
CONNECTION_FAILURE = "connection failure"
SERVER_ERRORS = "server errors"
ERROR_REASONS = frozenset({TIMEOUT, CONNECTION_FAILURE, SERVER_ERRORS})

#: How long a 429 without any retry hint keeps a member out of selection (APIM's AI-gateway samples use 10 s).
DEFAULT_THROTTLE_WAIT = 10.0
#: Failure window of backends without a breaker rule, for the health view only.
DEFAULT_WINDOW = 60.0
#: How long a low `x-ratelimit-remaining-*` reading keeps a member out under predictive routing; short, because
#: quota refills continuously and the member is probed again (one request) once the hold ends.
PREDICTIVE_HOLD = 2.0
#: Buckets per failure window: counts age out in steps of interval / 20.
_BUCKETS = 20
_LATENCY_SAMPLES = 100


@dataclass(frozen=True)
class BreakerRule:
    """APIM's circuit-breaker rule (one per backend). With both `count` and `percentage`, both must hold."""

    name: str
    interval: float
    trip_duration: float
    count: int | None = None
    percentage: float | None = None
    status_ranges: tuple[tuple[int, int], ...] = ()
    error_reasons: frozenset[str] = frozenset()
    accept_retry_after: bool = False

    def counts_status(self, status: int) -> bool:
        if SERVER_ERRORS in self.error_reasons and 500 <= status <= 599:
            return True
        return any(low <= status <= high for low, high in self.status_ranges)

    def trips(self, failures: int, requests: int) -> bool:
        if failures == 0 or (self.count is not None and failures < self.count):
            return False
        return self.percentage is None or failures * 100 >= self.percentage * requests


@dataclass(frozen=True)
class PredictiveRouting:
    """Route away from a member whose last response left less headroom than this (`GATEWAY_PREDICTIVE_*`)."""

    min_tokens: int = 1000
    min_requests: int = 1


@dataclass(frozen=True)
class HealthSnapshot:
    """What one instance knows about one backend, as written to the shared health table."""

    open_until: float
    wait_until: float
    failures: int
    requests: int
    latency_p50_ms: float | None
    remaining_tokens: int | None
    remaining_requests: int | None


class _Window:
    """Requests and failures over the last `interval` seconds, in buckets so memory stays constant under load."""

    __slots__ = ("_width", "_ids", "_requests", "_failures")

    def __init__(self, interval: float) -> None:
        self._width = interval / _BUCKETS
        self.clear()

    def clear(self) -> None:
        self._ids = [-1] * _BUCKETS
        self._requests = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS

    def add(self, now: float, failed: bool) -> None:
        bucket = int(now / self._width)
        slot = bucket % _BUCKETS
        if self._ids[slot] != bucket:
            self._ids[slot], self._requests[slot], self._failures[slot] = bucket, 0, 0
        self._requests[slot] += 1
        if failed:
            self._failures[slot] += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(failures, requests) in the buckets that overlap the last interval."""
        oldest = int(now / self._width) - _BUCKETS + 1
        failures = requests = 0
        for slot, bucket in enumerate(self._ids):
            if bucket >= oldest:
                failures += self._failures[slot]
                requests += self._requests[slot]
        return failures, requests


class BackendHealth:
    """One backend's state on this instance, plus what other instances reported (`merge_remote`)."""

    def __init__(
        self,
        backend_id: str,
        rule: BreakerRule | None = None,
        predictive: PredictiveRouting | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = backend_id
        self.rule = rule
        self.clock = clock
        self._predictive = predictive
        self._window = _Window(rule.interval if rule else DEFAULT_WINDOW)
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.open_until = 0.0
        self.wait_until = 0.0
        self.remote_open_until = 0.0
        self.remote_wait_until = 0.0
        #: max(open_until, remote_open_until): until then a direct call answers 503.
        self.tripped_until = 0.0
        #: Until then pools skip this backend (tripped or waiting, here or on another instance).
        self.available_at = 0.0
        #: Until then predictive routing prefers other members (last response showed too little headroom).
        self.low_until = 0.0
        self.remaining_tokens: int | None = None
        self.remaining_requests: int | None = None
        #: Outcomes recorded so far; the sync module writes stats only when this moved.
        self.outcomes = 0
        #: Called on a trip or a longer wait, so the state reaches other instances (set by the sync module).
        self.on_change: Callable[[BackendHealth], None] | None = None

    def record_response(self, status: int, headers: Mapping[str, str], seconds: float) -> None:
        """The backend answered (any status) after `seconds` to response headers."""
        now = self.clock()
        self.outcomes += 1
        self._latencies.append(seconds)
        rule = self.rule
        failed = rule.counts_status(status) if rule else (status == 429 or status >= 500)
        self._window.add(now, failed)
        changed = False
        throttled = status == 429 or status == 503
        retry_after = retry_after_seconds(headers, now) if failed or throttled else None
        if throttled:
            wait = retry_after if retry_after is not None else reset_seconds(headers)
            if wait is None and status == 429:
                wait = DEFAULT_THROTTLE_WAIT
            if wait is not None and now + wait > self.wait_until:
                self.wait_until = now + wait
                changed = True
        if failed and rule is not None:
            changed = self._maybe_trip(rule, now, retry_after) or changed
        self._read_headroom(headers, now)
        if changed:
            self._changed()

    def record_failure(self, reason: str) -> None:
        """The backend could not be reached (`CONNECTION_FAILURE`) or sent no headers in time (`TIMEOUT`)."""
        now = self.clock()
        self.outcomes += 1
        rule = self.rule
        failed = rule is None or reason in rule.error_reasons
        self._window.add(now, failed)
        if failed and rule is not None and self._maybe_trip(rule, now, None):
            self._changed()

    def merge_remote(self, open_until: float, wait_until: float) -> None:
        """What other instances wrote (the latest of each); replaces the previous remote view."""
        self.remote_open_until, self.remote_wait_until = open_until, wait_until
        self._refresh()

    def snapshot(self) -> HealthSnapshot:
        failures, requests = self._window.counts(self.clock())
        latencies = sorted(self._latencies)
        p50 = round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None
        return HealthSnapshot(self.open_until, self.wait_until, failures, requests, p50, self.remaining_tokens, self.remaining_requests)

    def _maybe_trip(self, rule: BreakerRule, now: float, retry_after: float | None) -> bool:
        failures, requests = self._window.counts(now)
        if not rule.trips(failures, requests):
            return False
        duration = retry_after if rule.accept_retry_after and retry_after is not None else rule.trip_duration
        self.open_until = max(self.open_until, now + duration)
        self._window.clear()  # after the reset, failures count afresh
        return True

    def _read_headroom(self, headers: Mapping[str, str], now: float) -> None:
        tokens = _int_header(headers, "x-ratelimit-remaining-tokens")
        requests = _int_header(headers, "x-ratelimit-remaining-requests")
        if tokens is None and requests is None:  # e.g. an error from a proxy in front: no news, keep the last reading
            return
        self.remaining_tokens, self.remaining_requests = tokens, requests
        predictive = self._predictive
        if predictive is None:
            return
        low = (tokens is not None and tokens < predictive.min_tokens) or (requests is not None and requests < predictive.min_requests)
        self.low_until = now + PREDICTIVE_HOLD if low else 0.0

    def _changed(self) -> None:
        """Announce only what extends a trip or the time out of selection: a shorter wait inside either is no news."""
        tripped_until, available_at = self.tripped_until, self.available_at
        self._refresh()
        if self.on_change is not None and (self.tripped_until > tripped_until or self.available_at > available_at):
            self.on_change(self)

    def _refresh(self) -> None:
        self.tripped_until = max(self.open_until, self.remote_open_until)
        self.available_at = max(self.tripped_until, self.wait_until, self.remote_wait_until)


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """`retry-after-ms` (Azure OpenAI's precise form), else `Retry-After` in seconds or as an HTTP date."""
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def reset_seconds(headers: Mapping[str, str]) -> float | None:
    """`x-ratelimit-reset-requests`, else `-tokens`: plain seconds, or OpenAI's "1m30s" / "250ms" form."""
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = headers.get(name)
        if value is None:
            continue
        seconds = _non_negative(value)
        if seconds is None:
            parts = _DURATION_PART.findall(value)
            if parts and "".join(n + u for n, u in parts) == value.strip():
                seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)
        if seconds is not None:
            return seconds
    return None


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
