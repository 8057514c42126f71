"""DateTime, DateTimeOffset and TimeSpan. Every date is UTC: the gateway runs in UTC, so `DateTime.Now` is
`DateTime.UtcNow` and `ToLocalTime()` changes nothing. Ticks are 100 ns; Python keeps microseconds."""

from __future__ import annotations

import calendar
import datetime as _dt
import enum
import re
from collections.abc import Callable
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._format import format_datetime, format_timespan, parse_exact
from policies.expressions._library import CONSTRUCTORS, constant, enum_type, instance, method, prop, same, static
from policies.expressions._runtime import MAX_DATE, MIN_DATE, UTC, parse_datetime
from policies.expressions._types import BOOL, DATETIME, DATETIMEOFFSET, DOUBLE, INT, LONG, STRING, TIMESPAN

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)


class DayOfWeek(enum.Enum):
    Sunday = 0
    Monday = 1
    Tuesday = 2
    Wednesday = 3
    Thursday = 4
    Friday = 5
    Saturday = 6


class DateTimeKind(enum.Enum):
    Unspecified = 0
    Utc = 1
    Local = 2


DAY_OF_WEEK = enum_type(DayOfWeek, ("DayOfWeek", "System.DayOfWeek"))
KIND = enum_type(DateTimeKind, ("DateTimeKind", "System.DateTimeKind"))


def _now() -> _dt.datetime:
    return _dt.datetime.now(UTC)


def shift(value: _dt.datetime, delta: _dt.timedelta) -> _dt.datetime:
    """`value + delta`, refused outside DateTime's range as .NET refuses it."""
    try:
        result = value + delta
    except OverflowError:
        result = None
    if result is None or not MIN_DATE <= result <= MAX_DATE:
        raise DotNetError("ArgumentOutOfRangeException", "The added or subtracted value results in an un-representable DateTime.")
    return result


def _adder(unit: str) -> Any:
    def add(value: _dt.datetime, amount: int | float) -> _dt.datetime:
        try:
            delta = _dt.timedelta(**{unit: amount})
        except OverflowError:
            raise DotNetError("ArgumentOutOfRangeException", "Value to add was out of range.") from None
        return shift(value, delta)

    return add


def _add_months(value: _dt.datetime, months: int) -> _dt.datetime:
    index = value.year * 12 + value.month - 1 + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise DotNetError("ArgumentOutOfRangeException", "The added or subtracted value results in an un-representable DateTime.")
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _subtract(value: _dt.datetime, other: Any) -> Any:
    return value - other if type(other) is _dt.datetime else shift(value, -other)


def _new_datetime(year: int, month: int, day: int, *rest: Any) -> _dt.datetime:
    numbers = [r for r in rest if type(r) is int]
    hour, minute, second, millisecond = (numbers + [0, 0, 0, 0])[:4]
    try:
        return _dt.datetime(year, month, day, hour, minute, second, millisecond * 1000, tzinfo=UTC)
    except ValueError as exc:
        raise DotNetError("ArgumentOutOfRangeException", str(exc)) from None


def _parse_exact(value: str, form: Any, *ignored: Any) -> _dt.datetime:
    """`ParseExact(text, format)` or with several formats (the first that fits)."""
    for candidate in form if type(form) is list else [form]:
        try:
            return parse_exact(value, candidate)
        except DotNetError:
            continue
    raise DotNetError("FormatException", f"String '{value[:40]}' was not recognized as a valid DateTime.")


def _try(parse: Any) -> Any:
    def attempt(*arguments: Any) -> tuple[bool, Any]:
        try:
            return True, parse(*arguments)
        except DotNetError:
            return False, None

    return attempt


def _from_unix(scale: float) -> Any:
    def convert(amount: int | float) -> _dt.datetime:
        return shift(_EPOCH, _dt.timedelta(seconds=amount * scale))

    return convert


def _unix(scale: int) -> Any:
    return lambda value: (value - _EPOCH) // _dt.timedelta(microseconds=1_000_000 // scale)


def _ticks(value: Any) -> int:
    delta = value - MIN_DATE if type(value) is _dt.datetime else value
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def _span(*numbers: int) -> _dt.timedelta:
    """`new TimeSpan(ticks)`, `(h, m, s)`, `(d, h, m, s)`, `(d, h, m, s, ms)`."""
    if len(numbers) == 1:
        return _from_ticks(numbers[0])
    if len(numbers) == 3:
        numbers = (0, *numbers)
    days, hours, minutes, seconds, milliseconds = (*numbers, 0)[:5]
    return _from("milliseconds")(((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000 + milliseconds)


def _from_ticks(ticks: int) -> _dt.timedelta:
    return _from("microseconds")(ticks // 10)


_SPAN_TEXT = re.compile(r"\s*(-)?(?:([0-9]{1,8})\.)?([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2})(?:\.([0-9]{1,7}))?)?\s*|\s*(-)?([0-9]{1,8})\s*")


def _parse_span(value: str) -> _dt.timedelta:
    """`TimeSpan.Parse`: `[-][d.]hh:mm[:ss[.fffffff]]` or a number of days."""
    match = _SPAN_TEXT.fullmatch(value)
    if match is None:
        raise DotNetError("FormatException", "String was not recognized as a valid TimeSpan.")
    if match.group(8) is not None:
        return _dt.timedelta(days=int(match.group(8))) * (-1 if match.group(7) else 1)
    days, hours, minutes, seconds = (int(match.group(i) or 0) for i in (2, 3, 4, 5))
    fraction = int((match.group(6) or "0").ljust(7, "0")) // 10
    total = _dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds, microseconds=fraction)
    return -total if match.group(1) else total


def _parts(value: _dt.timedelta) -> tuple[int, int, int, int, int]:
    """A span's days, hours, minutes, seconds and milliseconds, each with the span's sign."""
    micro = value // _dt.timedelta(microseconds=1)
    sign, micro = (-1, -micro) if micro < 0 else (1, micro)
    seconds, micro = divmod(micro, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return days * sign, hours * sign, minutes * sign, seconds * sign, micro // 1000 * sign


_DATE = dict(
    Year=prop(lambda v: v.year, INT),
    Month=prop(lambda v: v.month, INT),
    Day=prop(lambda v: v.day, INT),
    Hour=prop(lambda v: v.hour, INT),
    Minute=prop(lambda v: v.minute, INT),
    Second=prop(lambda v: v.second, INT),
    Millisecond=prop(lambda v: v.microsecond // 1000, INT),
    DayOfWeek=prop(lambda v: DayOfWeek((v.weekday() + 1) % 7), DAY_OF_WEEK),
    DayOfYear=prop(lambda v: v.timetuple().tm_yday, INT),
    Date=prop(lambda v: v.replace(hour=0, minute=0, second=0, microsecond=0), same),
    TimeOfDay=prop(lambda v: v - v.replace(hour=0, minute=0, second=0, microsecond=0), TIMESPAN),
    Ticks=prop(_ticks, LONG),
    Kind=prop(lambda v: DateTimeKind.Utc, KIND),
    UtcDateTime=prop(lambda v: v, DATETIME),
    DateTime=prop(lambda v: v, DATETIME),
    LocalDateTime=prop(lambda v: v, DATETIME),
    Offset=prop(lambda v: _dt.timedelta(0), TIMESPAN),
    AddYears=method(lambda v, n: _add_months(v, 12 * n), same, 1),
    AddMonths=method(_add_months, same, 1),
    AddDays=method(_adder("days"), same, 1),
    AddHours=method(_adder("hours"), same, 1),
    AddMinutes=method(_adder("minutes"), same, 1),
    AddSeconds=method(_adder("seconds"), same, 1),
    AddMilliseconds=method(_adder("milliseconds"), same, 1),
    AddTicks=method(lambda v, n: shift(v, _from_ticks(n)), same, 1),
    Add=method(shift, same, 1),
    Subtract=method(_subtract, lambda receiver, arguments, t: TIMESPAN if arguments and arguments[0].family == "datetime" else receiver, 1),
    ToString=method(format_datetime, STRING, 0, 1),
    ToUniversalTime=method(lambda v: v, same, 0),
    ToLocalTime=method(lambda v: v, same, 0),
    ToUnixTimeSeconds=method(_unix(1), LONG, 0),
    ToUnixTimeMilliseconds=method(_unix(1000), LONG, 0),
    ToShortDateString=method(lambda v: format_datetime(v, "d"), STRING, 0),
    ToShortTimeString=method(lambda v: format_datetime(v, "t"), STRING, 0),
    CompareTo=method(lambda v, other: (v > other) - (v < other), INT, 1),
)
instance("datetime", **_DATE)
_DATE_STATICS = dict(
    UtcNow=prop(_now, DATETIME),
    Now=prop(_now, DATETIME),
    MinValue=constant(MIN_DATE, DATETIME),
    MaxValue=constant(MAX_DATE, DATETIME),
    Parse=method(parse_datetime, DATETIME, 1),
    TryParse=method(_try(parse_datetime), BOOL, 1, out=DATETIME),
    ParseExact=method(_parse_exact, DATETIME, 2, 3),
    TryParseExact=method(_try(_parse_exact), BOOL, 2, 4, out=DATETIME),
)
static(
    "DateTime",
    ("System.DateTime",),
    **_DATE_STATICS,
    Today=prop(lambda: _now().replace(hour=0, minute=0, second=0, microsecond=0), DATETIME),
    UtcToday=prop(lambda: _now().replace(hour=0, minute=0, second=0, microsecond=0), DATETIME),
    SpecifyKind=method(lambda value, kind: value, DATETIME, 2),
    DaysInMonth=method(lambda year, month: calendar.monthrange(year, month)[1], INT, 2),
    IsLeapYear=method(calendar.isleap, BOOL, 1),
    Compare=method(lambda a, b: (a > b) - (a < b), INT, 2),
)
static(
    "DateTimeOffset",
    ("System.DateTimeOffset",),
    **{name: builtin for name, builtin in _DATE_STATICS.items() if name not in ("ParseExact", "TryParseExact")},
    FromUnixTimeSeconds=method(_from_unix(1), DATETIMEOFFSET, 1),
    FromUnixTimeMilliseconds=method(_from_unix(0.001), DATETIMEOFFSET, 1),
)
CONSTRUCTORS["DateTime"] = method(_new_datetime, DATETIME, 3, 8)
CONSTRUCTORS["DateTimeOffset"] = method(
    lambda value, *offset: value if type(value) is _dt.datetime else _new_datetime(value, *offset), DATETIMEOFFSET, 1, 8
)


def _from(unit: str) -> Callable[[int | float], _dt.timedelta]:
    def make(amount: int | float) -> _dt.timedelta:
        try:
            return _dt.timedelta(**{unit: amount})
        except OverflowError:
            raise DotNetError("OverflowException", "TimeSpan overflowed because the duration is too long.") from None

    return make


def _total(unit: _dt.timedelta) -> Any:
    return lambda value: value / unit


instance(
    "timespan",
    Days=prop(lambda v: _parts(v)[0], INT),
    Hours=prop(lambda v: _parts(v)[1], INT),
    Minutes=prop(lambda v: _parts(v)[2], INT),
    Seconds=prop(lambda v: _parts(v)[3], INT),
    Milliseconds=prop(lambda v: _parts(v)[4], INT),
    Ticks=prop(_ticks, LONG),
    TotalDays=prop(_total(_dt.timedelta(days=1)), DOUBLE),
    TotalHours=prop(_total(_dt.timedelta(hours=1)), DOUBLE),
    TotalMinutes=prop(_total(_dt.timedelta(minutes=1)), DOUBLE),
    TotalSeconds=prop(_total(_dt.timedelta(seconds=1)), DOUBLE),
    TotalMilliseconds=prop(_total(_dt.timedelta(milliseconds=1)), DOUBLE),
    Add=method(lambda v, other: v + other, TIMESPAN, 1),
    Subtract=method(lambda v, other: v - other, TIMESPAN, 1),
    Negate=method(lambda v: -v, TIMESPAN, 0),
    Duration=method(abs, TIMESPAN, 0),
    ToString=method(format_timespan, STRING, 0, 1),
    CompareTo=method(lambda v, other: (v > other) - (v < other), INT, 1),
)
static(
    "TimeSpan",
    ("System.TimeSpan",),
    Zero=constant(_dt.timedelta(0), TIMESPAN),
    MaxValue=constant(_dt.timedelta.max, TIMESPAN),
    MinValue=constant(_dt.timedelta.min, TIMESPAN),
    FromDays=method(_from("days"), TIMESPAN, 1),
    FromHours=method(_from("hours"), TIMESPAN, 1),
    FromMinutes=method(_from("minutes"), TIMESPAN, 1),
    FromSeconds=method(_from("seconds"), TIMESPAN, 1),
    FromMilliseconds=method(_from("milliseconds"), TIMESPAN, 1),
    FromTicks=method(_from_ticks, TIMESPAN, 1),
    Parse=method(_parse_span, TIMESPAN, 1),
    TryParse=method(_try(_parse_span), BOOL, 1, out=TIMESPAN),
)
CONSTRUCTORS["TimeSpan"] = method(_span, TIMESPAN, 1, 5)
