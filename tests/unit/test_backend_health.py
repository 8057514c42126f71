"""The circuit breaker and throttle waits of one backend, on a fake clock: counting within the interval,
status ranges and error reasons, trip and reset on time, Retry-After, and the retry hints' formats."""

from __future__ import annotations

import email.utils

import pytest

from gateway.backends.backend import Backend
from gateway.backends.config import BackendConfig
from gateway.backends.health import (
    DEFAULT_THROTTLE_WAIT,
    BackendHealth,
    BreakerRule,
    reset_seconds,
    retry_after_seconds,
)
from gateway.errors import BackendUnavailable

NOW = 2_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def health(clock: FakeClock, **rule: object) -> BackendHealth:
    defaults: dict[str, object] = {"name": "r", "interval": 60.0, "trip_duration": 30.0, "count": 3, "status_ranges": ((500, 599),)}
    return BackendHealth("b", BreakerRule(**{**defaults, **rule}), clock=clock)  # type: ignore[arg-type]


def fail(h: BackendHealth, times: int = 1, status: int = 500, headers: dict[str, str] | None = None) -> None:
    for _ in range(times):
        h.record_response(status, headers or {}, 0.01)


def tripped(h: BackendHealth, clock: FakeClock) -> bool:
    return h.tripped_until > clock.now


def test_count_trips_only_with_enough_failures_within_the_interval() -> None:
    clock = FakeClock()
    h = health(clock)
    fail(h, 2)
    clock.now += 61  # those two age out
    fail(h, 2)
    assert not tripped(h, clock)
    clock.now += 30
    fail(h)
    assert tripped(h, clock)


def test_successes_do_not_count_and_status_ranges_decide_what_fails() -> None:
    clock = FakeClock()
    h = health(clock, count=1, status_ranges=((429, 429),))
    fail(h, 3, status=500)
    fail(h, 3, status=200)
    assert not tripped(h, clock)
    fail(h, status=429, headers={"retry-after": "1"})
    assert tripped(h, clock)


def test_percentage_of_requests_with_count_as_floor() -> None:
    clock = FakeClock()
    h = health(clock, count=2, percentage=50.0)
    fail(h, 1)  # 100 % but below the count floor
    assert not tripped(h, clock)
    fail(h, 4, status=200)  # 1 of 5 failed
    fail(h, 1)  # 2 of 6: 33 %
    assert not tripped(h, clock)
    fail(h, 2)  # 4 of 8: 50 %
    assert tripped(h, clock)


def test_percentage_alone() -> None:
    clock = FakeClock()
    h = health(clock, count=None, percentage=25.0)
    fail(h, 3, status=200)
    fail(h, 1)  # 1 of 4 = 25 %
    assert tripped(h, clock)


def test_error_reasons_count_transport_failures_and_server_errors() -> None:
    clock = FakeClock()
    timeouts = health(clock, count=2, status_ranges=(), error_reasons=frozenset({"timeout"}))
    timeouts.record_failure("connection failure")
    timeouts.record_failure("connection failure")
    assert not tripped(timeouts, clock)
    timeouts.record_failure("timeout")
    timeouts.record_failure("timeout")
    assert tripped(timeouts, clock)
    server = health(clock, count=2, status_ranges=(), error_reasons=frozenset({"server errors"}))
    fail(server, 1, status=503)
    fail(server, 1, status=429)
    assert not tripped(server, clock)
    fail(server, 1, status=502)
    assert tripped(server, clock)


def test_trip_lasts_trip_duration_then_resets_and_counts_afresh() -> None:
    clock = FakeClock()
    backend = Backend(
        BackendConfig("b", "https://b.example", frozenset({"*"}), None, BreakerRule("r", 60.0, 30.0, count=2, status_ranges=((500, 599),))),
        clock=clock,
    )
    fail(backend.health, 2)
    with pytest.raises(BackendUnavailable) as raised:
        backend.select("gpt-4o", set())
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "30"
    clock.now += 29.9
    with pytest.raises(BackendUnavailable):
        backend.select("gpt-4o", set())
    clock.now += 0.1
    assert backend.select("gpt-4o", set()) is backend
    fail(backend.health, 1)  # the failures before the trip no longer count
    assert backend.select("gpt-4o", set()) is backend


@pytest.mark.parametrize(
    ("headers", "open_for"),
    [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "2500", "retry-after": "3"}, 2.5), ({}, 30.0)],
)
def test_accept_retry_after_takes_the_backends_word_for_the_trip(headers: dict[str, str], open_for: float) -> None:
    clock = FakeClock()
    h = health(clock, count=1, status_ranges=((429, 429),), accept_retry_after=True)
    fail(h, status=429, headers=headers)
    assert h.open_until == pytest.approx(NOW + open_for)


def test_without_accept_retry_after_the_trip_duration_holds() -> None:
    clock = FakeClock()
    h = health(clock, count=1, status_ranges=((429, 429),))
    fail(h, status=429, headers={"retry-after": "7"})
    assert h.open_until == NOW + 30
    assert h.wait_until == NOW + 7  # the wait is kept separately either way


def test_throttle_waits_without_any_breaker_rule() -> None:
    clock = FakeClock()
    h = BackendHealth("b", clock=clock)
    h.record_response(429, {"x-ratelimit-reset-requests": "1m30s"}, 0.01)
    assert h.available_at == NOW + 90 and h.tripped_until == 0
    h2 = BackendHealth("b", clock=clock)
    h2.record_response(429, {}, 0.01)
    assert h2.available_at == NOW + DEFAULT_THROTTLE_WAIT
    h3 = BackendHealth("b", clock=clock)
    h3.record_response(503, {}, 0.01)  # no hint: no wait
    h3.record_response(500, {"retry-after": "60"}, 0.01)  # only 429 and 503 ask us to wait
    assert h3.available_at == 0


def test_changes_are_announced_only_for_trips_and_longer_waits() -> None:
    clock = FakeClock()
    h = health(clock, count=2)
    seen: list[float] = []
    h.on_change = lambda changed: seen.append(changed.available_at)
    fail(h, 1)
    h.record_response(200, {}, 0.01)
    assert seen == []
    fail(h, 1)  # trips
    h.record_response(429, {"retry-after": "5"}, 0.01)  # shorter than the trip: nothing new
    h.record_response(429, {"retry-after": "45"}, 0.01)
    assert seen == [NOW + 30, NOW + 45]


def test_remote_state_merges_with_local() -> None:
    clock = FakeClock()
    h = BackendHealth("b", clock=clock)
    h.merge_remote(NOW + 10, NOW + 20)
    assert (h.tripped_until, h.available_at) == (NOW + 10, NOW + 20)
    h.merge_remote(0.0, 0.0)
    assert h.available_at == 0


def test_snapshot_reports_window_failures_latency_and_headroom() -> None:
    clock = FakeClock()
    h = health(clock, count=10)
    for seconds in (0.020, 0.030, 0.040):
        h.record_response(200, {"x-ratelimit-remaining-tokens": "900", "x-ratelimit-remaining-requests": "9"}, seconds)
    fail(h, 2)  # at 10 ms each, without rate-limit headers
    snapshot = h.snapshot()
    assert (snapshot.failures, snapshot.requests) == (2, 5)
    assert snapshot.latency_p50_ms == 20.0  # of 10, 10, 20, 30, 40
    assert (snapshot.remaining_tokens, snapshot.remaining_requests) == (900, 9)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": email.utils.formatdate(NOW + 40, usegmt=True)}, 40.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_formats(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, NOW) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"x-ratelimit-reset-requests": "6"}, 6.0),
        ({"x-ratelimit-reset-requests": "250ms"}, 0.25),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "9s"}, 2.0),
        ({"x-ratelimit-reset-tokens": "3 days"}, None),
    ],
)
def test_rate_limit_reset_formats(headers: dict[str, str], seconds: float | None) -> None:
    assert reset_seconds(headers) == (pytest.approx(seconds) if seconds is not None else None)
