""".NET format strings, invariant culture: numbers (`N2`, `D4`, `X`, `0.00`), dates (`yyyy-MM-ddTHH:mm:ss`, `o`,
`R`), time spans (`c`, `hh\\:mm`), Guids (`N`, `D`, `B`, `P`), and composite formatting (`String.Format`)."""

from __future__ import annotations

import datetime as _dt
import decimal
import re
import uuid
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._limits import sized
from policies.expressions._runtime import UTC, text, timespan_text

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
_STANDARD_DATES = {
    "o": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK", "O": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK",
    "s": "yyyy'-'MM'-'dd'T'HH':'mm':'ss", "u": "yyyy'-'MM'-'dd HH':'mm':'ss'Z'",
    "r": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'", "R": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
    "d": "MM/dd/yyyy", "D": "dddd, dd MMMM yyyy", "t": "HH:mm", "T": "HH:mm:ss", "f": "dddd, dd MMMM yyyy HH:mm",
    "F": "dddd, dd MMMM yyyy HH:mm:ss", "g": "MM/dd/yyyy HH:mm", "G": "MM/dd/yyyy HH:mm:ss", "M": "MMMM dd",
    "m": "MMMM dd", "Y": "yyyy MMMM", "y": "yyyy MMMM",
}  # fmt: skip
_DATE_TOKEN = re.compile(
    r"'[^']*'|\"[^\"]*\"|\\.|%.|yyyy+|yy|y|MMMM+|MMM|MM|M|dddd+|ddd|dd|d|HH|H|hh|h|mm|m|ss|s|f{1,7}|F{1,7}|tt|t|zzz|zz|z|K|.", re.S
)


def format_datetime(value: _dt.datetime, form: str | None = None) -> str:
    """`DateTime.ToString(format)` with the invariant culture; every value is UTC."""
    if not form:
        return text(value)
    pattern = _STANDARD_DATES.get(form, form) if len(form) == 1 else form
    value = value.astimezone(UTC)
    return "".join(_date_part(token, value) for token in _DATE_TOKEN.findall(pattern))


def _date_part(token: str, value: _dt.datetime) -> str:
    head, size = token[0], len(token)
    if head in "'\"" and size >= 2 and token[-1] == head:
        return token[1:-1]
    if head in "\\%" and size == 2:
        return token[1] if head == "\\" else _date_part(token[1], value)
    numbers = {"y": value.year, "M": value.month, "d": value.day, "H": value.hour, "h": value.hour % 12 or 12,
               "m": value.minute, "s": value.second}  # fmt: skip
    if head == "y":
        return f"{value.year % 100:0{size}}" if size <= 2 else f"{value.year:0{size}}"
    if head == "M" and size >= 3:
        return _MONTHS[value.month - 1] if size >= 4 else _MONTHS[value.month - 1][:3]
    if head == "d" and size >= 3:
        return _DAYS[value.weekday()] if size >= 4 else _DAYS[value.weekday()][:3]
    if head in numbers:
        return f"{numbers[head]:0{size}}"
    if head in "fF":
        digits = f"{value.microsecond:06}0"[:size]
        return digits.rstrip("0") if head == "F" else digits
    if head == "t":
        return ("AM" if value.hour < 12 else "PM")[:size]
    if head == "z":
        return "+00:00" if size == 3 else "+00"
    if head == "K":
        return "Z"
    return token


_PARSE_PARTS = {
    "yyyy": r"(?P<year>\d{4})", "yy": r"(?P<year2>\d{2})", "MM": r"(?P<month>\d{2})", "M": r"(?P<month>\d{1,2})",
    "MMM": r"(?P<mon>[A-Za-z]{3})", "MMMM": r"(?P<monthname>[A-Za-z]+)", "dd": r"(?P<day>\d{2})", "d": r"(?P<day>\d{1,2})",
    "ddd": r"[A-Za-z]{3}", "dddd": r"[A-Za-z]+", "HH": r"(?P<hour>\d{2})", "H": r"(?P<hour>\d{1,2})",
    "hh": r"(?P<hour12>\d{2})", "h": r"(?P<hour12>\d{1,2})", "mm": r"(?P<minute>\d{2})", "m": r"(?P<minute>\d{1,2})",
    "ss": r"(?P<second>\d{2})", "s": r"(?P<second>\d{1,2})", "tt": r"(?P<ampm>AM|PM)", "K": r"(?P<zone>Z|[+-]\d{2}:\d{2})?",
    "zzz": r"(?P<zone>[+-]\d{2}:\d{2})",
}  # fmt: skip


def parse_exact(value: str, form: str) -> _dt.datetime:
    """`DateTime.ParseExact` with a custom format (or a one-letter standard one); the result is UTC."""
    pattern = _STANDARD_DATES.get(form, form) if len(form) == 1 else form
    regex = []
    for token in _DATE_TOKEN.findall(pattern):
        if token[0] in "fF" and set(token) == {token[0]}:
            regex.append(rf"(?P<fraction>\d{{{len(token)}}})" if token[0] == "f" else rf"(?P<fraction>\d{{0,{len(token)}}})")
        elif token in _PARSE_PARTS and f"?P<{_PARSE_PARTS[token][4:].split('>')[0]}>" not in "".join(regex):
            regex.append(_PARSE_PARTS[token])
        else:
            regex.append(re.escape(_date_part(token, _dt.datetime(2000, 1, 1, tzinfo=UTC)) if token[0] in "'\"\\%" else token))
    match = re.fullmatch("".join(regex), value.strip())
    if match is None:
        raise DotNetError("FormatException", f"String '{value[:40]}' was not recognized as a valid DateTime.")
    parts = match.groupdict()
    month = int(parts["month"]) if parts.get("month") else _month(parts.get("mon") or parts.get("monthname"))
    hour = int(parts.get("hour") or 0)
    if parts.get("hour12"):
        hour = int(parts["hour12"]) % 12 + (12 if parts.get("ampm") == "PM" else 0)
    year = int(parts["year"]) if parts.get("year") else 2000 + int(parts.get("year2") or 0) if parts.get("year2") else 1
    try:
        result = _dt.datetime(year, month, int(parts.get("day") or 1), hour, int(parts.get("minute") or 0), int(parts.get("second") or 0),
                              int((parts.get("fraction") or "0").ljust(6, "0")[:6]), tzinfo=UTC)  # fmt: skip
    except ValueError:
        raise DotNetError("FormatException", f"String '{value[:40]}' was not recognized as a valid DateTime.") from None
    zone = parts.get("zone")
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        result -= sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return result


def _month(name: str | None) -> int:
    if not name:
        return 1
    for index, month in enumerate(_MONTHS, 1):
        if month.lower().startswith(name.lower()):
            return index
    raise DotNetError("FormatException", f"'{name}' is not a month name.")


def format_timespan(value: _dt.timedelta, form: str | None = None) -> str:
    """`TimeSpan.ToString(format)`: `c`/`g`/`G`, or a custom pattern such as `hh\\:mm\\:ss`."""
    if not form or form in ("c", "t", "T", "g"):
        return timespan_text(value)
    if form == "G":
        total = abs(value)
        ticks = total.microseconds * 10
        days, seconds = total.days, total.seconds
        return f"{'-' if value < _dt.timedelta(0) else ''}{days}:{seconds // 3600:02}:{seconds // 60 % 60:02}:{seconds % 60:02}.{ticks:07}"
    total = abs(value)
    parts = {"d": total.days, "h": total.seconds // 3600, "m": total.seconds // 60 % 60, "s": total.seconds % 60}
    out = []
    for token in re.findall(r"'[^']*'|\\.|d+|h+|m+|s+|f{1,7}|F{1,7}|.", form, re.S):
        if token[0] == "'" or token[0] == "\\":
            out.append(token[1:-1] if token[0] == "'" else token[1])
        elif token[0] in parts:
            out.append(f"{parts[token[0]]:0{min(len(token), 8)}}")
        elif token[0] in "fF":
            digits = f"{total.microseconds:06}0"[: len(token)]
            out.append(digits.rstrip("0") if token[0] == "F" else digits)
        else:
            raise DotNetError("FormatException", "Input string was not in a correct format.")
    return "".join(out)


def format_guid(value: uuid.UUID, form: str | None = None) -> str:
    plain = str(value)
    forms = {"N": plain.replace("-", ""), "D": plain, "B": "{" + plain + "}", "P": "(" + plain + ")"}
    if not form:
        return plain
    if form.upper() not in forms:
        raise DotNetError("FormatException", 'Format string can be only "D", "d", "N", "n", "P", "p", "B" or "b".')
    return forms[form.upper()]


#: Enough digits for any double (about 1.8e308) with 99 decimals: rounding never runs out of precision.
DECIMALS = decimal.Context(prec=420, rounding=decimal.ROUND_HALF_UP)
_STANDARD_NUMBER = re.compile(r"([CcDdEeFfGgNnPpRrXx])([0-9]{0,2})")


def format_number(value: int | float, form: str | None = None) -> str:
    """`ToString(format)` on a number: standard (`N2`, `F0`, `D4`, `X8`, `P1`, `E3`, `G`, `R`) or custom (`0.00`)."""
    if not form:
        return text(value)
    standard = _STANDARD_NUMBER.fullmatch(form)
    if standard is None:
        return _custom_number(value, form)
    letter, digits = standard.group(1), standard.group(2)
    precision = int(digits) if digits else None
    kind = letter.upper()
    if kind in "GR":
        return text(value)
    if kind in "DX":
        if type(value) is not int:
            raise DotNetError("FormatException", "Format specifier was invalid.")
        if kind == "X":
            masked = value & (0xFFFFFFFF if -(1 << 31) <= value < (1 << 32) else 0xFFFFFFFFFFFFFFFF)
            digits_text = f"{masked:0{precision or 0}X}"
            return digits_text if letter == "X" else digits_text.lower()
        return ("-" if value < 0 else "") + f"{abs(value):0{precision or 0}}"
    if kind == "E":
        mantissa, exponent = f"{float(value):.{6 if precision is None else precision}E}".split("E")
        return f"{mantissa}{letter}{exponent[0]}{int(exponent[1:]):03}"
    places = 2 if precision is None else precision
    if kind == "P":
        return _fixed(value * 100, places, grouping=True) + " %"
    if kind == "C":
        return "¤" + _fixed(value, places, grouping=True)
    return _fixed(value, places, grouping=kind == "N")


def _fixed(value: int | float, places: int, grouping: bool) -> str:
    """Round half away from zero on the exact value, as .NET Core does, then group thousands if asked."""
    exact = decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-places), context=DECIMALS)
    return f"{exact:,.{places}f}" if grouping else f"{exact:.{places}f}"


def _custom_number(value: int | float, form: str) -> str:
    """A custom pattern's common subset: `0` and `#` placeholders, one `.`, `,` grouping, `%`, literal text."""
    section = form.split(";")[0]
    placeholders = [i for i, c in enumerate(section) if c in "0#"]
    if not placeholders:
        return section
    prefix, body, suffix = section[: placeholders[0]], section[placeholders[0] : placeholders[-1] + 1], section[placeholders[-1] + 1 :]
    if "%" in prefix + suffix:
        value = value * 100
    whole, _, fraction = body.partition(".")
    minimum, maximum = fraction.count("0"), min(fraction.count("0") + fraction.count("#"), 99)
    rounded = decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-maximum), context=DECIMALS)
    digits = f"{abs(rounded):.{maximum}f}"
    integer, _, decimals = digits.partition(".")
    decimals = decimals.rstrip("0").ljust(minimum, "0") if maximum else ""
    integer = integer.lstrip("0").rjust(whole.count("0"), "0")
    if "," in whole:
        integer = f"{int(integer or 0):,}" if integer else ""
    sign = "-" if rounded < 0 and (integer.strip("0,") or decimals.strip("0")) else ""
    return f"{sign}{prefix}{integer}{'.' + decimals if decimals else ''}{suffix}"


def format_value(value: Any, form: str | None) -> str:
    """A value with an optional format, as `{x:format}` and `String.Format` apply it."""
    kind = type(value)
    if form is None:
        return text(value)
    if kind is int or kind is float:
        return format_number(value, form)
    if kind is _dt.datetime:
        return format_datetime(value, form)
    if kind is _dt.timedelta:
        return format_timespan(value, form)
    if kind is uuid.UUID:
        return format_guid(value, form)
    return text(value)


def align(textual: str, alignment: int | None) -> str:
    if alignment is None:
        return textual
    return textual.rjust(alignment) if alignment > 0 else textual.ljust(-alignment)


_ITEM = re.compile(r"\{\{|\}\}|\{\s*([0-9]{1,3})\s*(?:,\s*(-?[0-9]{1,4})\s*)?(?::([^}]*))?\}|[{}]")


def composite(form: str, arguments: list[Any]) -> str:
    """`String.Format("{0,-8}:{1:N2}", …)`: `{{` and `}}` are braces; any other stray brace is an error."""

    def item(match: re.Match[str]) -> str:
        token = match.group()
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            raise DotNetError("FormatException", "Input string was not in a correct format.")
        index = int(match.group(1))
        if index >= len(arguments):
            raise DotNetError(
                "FormatException", "Index (zero based) must be greater than or equal to zero and less than the size of the argument list."
            )
        alignment = int(match.group(2)) if match.group(2) else None
        return align(format_value(arguments[index], match.group(3)), alignment)

    return sized(_ITEM.sub(item, form))
