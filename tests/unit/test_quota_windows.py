"""Token quota periods (`token-quota-period` of `llm-token-limit`): UTC calendar hours, days, Monday-based weeks,
months and years. The token-limit statement's tests are in tests/unit/statements/test_token_limit.py."""

from __future__ import annotations

import datetime as dt

import pytest

from policies.counters import quota_window


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("Hourly", "2026-11-26T10:59:59", "2026-11-26T10:00:00", "2026-11-26T11:00:00"),
        ("Daily", "2026-11-26T23:59:59", "2026-11-26T00:00:00", "2026-11-27T00:00:00"),
        ("Weekly", "2026-11-29T12:00:00", "2026-11-23T00:00:00", "2026-11-30T00:00:00"),  # Sunday → Monday-based week
        ("Monthly", "2026-12-31T23:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("Yearly", "2026-06-15T00:00:00", "2026-01-01T00:00:00", "2027-01-01T00:00:00"),
    ],
)
def test_quota_periods_are_utc_calendar_periods(period: str, now: str, start: str, end: str) -> None:
    parse = lambda text: dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)  # noqa: E731
    window = quota_window(period, parse(now).timestamp())
    assert window.end == parse(end).timestamp()
    assert window.id == quota_window(period, parse(start).timestamp()).id  # the period's first second is in it
    assert window.id != quota_window(period, parse(end).timestamp()).id
