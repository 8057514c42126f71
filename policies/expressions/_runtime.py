"""C# value semantics at run time: text forms, equality, numbers that wrap, casts and JSON text.

Values are plain Python ones: string and char are str, int and long are int (wrapped to 32 or 64 bits as
the static type says), double is float, JObject is dict, JArray and every array or list is list, DateTime and
DateTimeOffset are aware UTC datetimes, TimeSpan is timedelta, byte[] is bytes, Guid is uuid.UUID.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from policies.expressions._errors import DotNetError
from policies.expressions._limits import sized
from policies.expressions._types import (
    BOOL,
    BYTE,
    CHAR,
    DATETIME,
    DATETIMEOFFSET,
    DOUBLE,
    DYNAMIC,
    GUID,
    INT,
    LONG,
    STRING,
    TIMESPAN,
    CType,
    class_type,
    members,
)

UTC = _dt.UTC
MIN_DATE = _dt.datetime(1, 1, 1, tzinfo=UTC)
MAX_DATE = _dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


class _NullChain(Exception):
    """`?.` met null: the rest of the member chain is skipped and the chain's value is null."""


_FAMILIES: dict[type, str] = {
    str: "string", int: "number", float: "number", bool: "bool", dict: "dict", list: "list",
    _dt.datetime: "datetime", _dt.timedelta: "timespan", bytes: "bytes", uuid.UUID: "guid",
}  # fmt: skip


def family_of(value: Any) -> str:
    """The library family that serves members of `value` at run time."""
    family = _FAMILIES.get(type(value))
    if family is not None:
        return family
    if value is None:
        return "null"
    return "enum" if isinstance(value, enum.Enum) else "class"


def type_name(value: Any) -> str:
    """A value's C# type name, for messages."""
    kind = type(value)
    if value is None:
        return "null"
    names = {str: "string", int: "long", float: "double", bool: "bool", dict: "JObject", list: "JArray"}
    if kind in names:
        return names[kind]
    return {_dt.datetime: "DateTime", _dt.timedelta: "TimeSpan", bytes: "byte[]", uuid.UUID: "Guid"}.get(kind) or class_type(kind).name


def text(value: Any) -> str:
    """C#'s string form of a value, as concatenation, interpolation and ToString() give it (null is empty)."""
    if type(value) is str:
        return value
    kind = type(value)
    if value is None:
        return ""
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return str(value)
    if kind is float:
        return double_text(value)
    if kind is dict or kind is list:
        return json_text(value, indented=True)
    if kind is _dt.datetime:
        moment: _dt.datetime = value
        return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if kind is _dt.timedelta:
        return timespan_text(value)
    if kind is bytes:
        return "System.Byte[]"
    if isinstance(value, enum.Enum):
        return (value.name or "").rstrip("_")
    if "ToString" in members(kind):  # type: ignore[arg-type]
        return str(value.ToString())
    return str(value) if kind is uuid.UUID else class_type(kind).name


def double_text(value: float) -> str:
    """A double as .NET prints it: shortest round-trip, no trailing `.0`, `E+16` exponents."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value).replace("e+", "E+").replace("e-", "E-")


def timespan_text(value: _dt.timedelta) -> str:
    """TimeSpan's constant ("c") format: `[-][d.]hh:mm:ss[.fffffff]`."""
    ticks = (value.days * 86_400 + value.seconds) * 10_000_000 + value.microseconds * 10
    sign, ticks = ("-", -ticks) if ticks < 0 else ("", ticks)
    seconds, fraction = divmod(ticks, 10_000_000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{sign}{f'{days}.' if days else ''}{hours:02}:{minutes:02}:{seconds:02}{f'.{fraction:07}' if fraction else ''}"


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        stamp = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return stamp + (f".{value.microsecond:06}".rstrip("0") if value.microsecond else "") + "Z"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (_dt.timedelta, uuid.UUID, enum.Enum)):
        return text(value)
    json = getattr(value, "_json", None)
    if json is not None:
        return json()
    raise TypeError(f"{type_name(value)} cannot be written as JSON")


def json_text(value: Any, indented: bool = False) -> str:
    """JSON as Newtonsoft writes it: `ToString()` indents by two spaces, `Formatting.None` is compact."""
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | (orjson.OPT_INDENT_2 if indented else 0)
    try:
        return sized(orjson.dumps(value, default=_json_default, option=option).decode())
    except orjson.JSONEncodeError as exc:
        raise DotNetError("JsonSerializationException", str(exc)) from None


def equals(left: Any, right: Any) -> bool:
    """C# `==`: values for strings, numbers, dates, Guids; references for JObject, lists and objects.
    A bool never equals a number."""
    if left is right:
        return True
    kind, other = type(left), type(right)
    if kind in _VALUE_TYPES and other in _VALUE_TYPES:
        return bool(left == right) and (kind is bool) is (other is bool)
    return False


_VALUE_TYPES = frozenset({str, int, float, bool, _dt.datetime, _dt.timedelta, uuid.UUID})


def wrap32(value: int) -> int:
    return ((value + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def wrap64(value: int) -> int:
    return ((value + 0x8000000000000000) & 0xFFFFFFFFFFFFFFFF) - 0x8000000000000000


def divide(left: Any, right: Any) -> Any:
    """C# division: integers truncate toward zero and refuse zero; doubles give infinity or NaN."""
    if type(left) is int and type(right) is int:
        if right == 0:
            raise DotNetError("DivideByZeroException", "Attempted to divide by zero.")
        quotient = abs(left) // abs(right)
        return quotient if (left < 0) == (right < 0) else -quotient
    if right == 0:
        return math.nan if left == 0 or math.isnan(left) else math.copysign(math.inf, left) * math.copysign(1, right)
    return left / right


def remainder(left: Any, right: Any) -> Any:
    """C# `%`: the sign of the dividend; integer zero refused, double zero gives NaN."""
    if type(left) is int and type(right) is int:
        if right == 0:
            raise DotNetError("DivideByZeroException", "Attempted to divide by zero.")
        result = abs(left) % abs(right)
        return -result if left < 0 else result
    return math.fmod(left, right) if right != 0 else math.nan


_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]{1,40}\s*")
_DOUBLE_TEXT = re.compile(r"\s*[+-]?(?:[0-9]{1,400}(?:\.[0-9]*)?|\.[0-9]{1,400})(?:[eE][+-]?[0-9]{1,5})?\s*")
_RANGES = {INT: (-(1 << 31), (1 << 31) - 1), LONG: (-(1 << 63), (1 << 63) - 1), BYTE: (0, 255)}


def parse_integer(value: str, ctype: CType = INT) -> int:
    """`int.Parse`: digits with an optional sign and surrounding spaces, within the type's range."""
    if not _INTEGER_TEXT.fullmatch(value):
        raise DotNetError("FormatException", "The input string was not in a correct format.")
    return in_range(int(value), ctype)


def in_range(number: int, ctype: CType) -> int:
    low, high = _RANGES.get(ctype, _RANGES[LONG])
    if not low <= number <= high:
        raise DotNetError("OverflowException", f"Value was either too large or too small for {ctype.name}.")
    return number


def parse_double(value: str) -> float:
    stripped = value.strip()
    if stripped in ("NaN", "Infinity", "-Infinity", "∞", "-∞"):
        return float(stripped.replace("∞", "inf"))
    if not _DOUBLE_TEXT.fullmatch(value):
        raise DotNetError("FormatException", "The input string was not in a correct format.")
    return float(value)


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise DotNetError("FormatException", f"String '{value[:40]}' was not recognized as a valid Boolean.")
    return lowered == "true"


def parse_datetime(value: str) -> _dt.datetime:
    """ISO 8601 text as DateTime.Parse reads it; a time without offset is taken as UTC."""
    text_value = value.strip().replace("Z", "+00:00").replace(" ", "T", 1)
    try:
        parsed = _dt.datetime.fromisoformat(text_value)
    except ValueError:
        raise DotNetError("FormatException", f"String '{value[:40]}' was not recognized as a valid DateTime.") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _to_string(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    return json_text(value) if type(value) in (dict, list) else text(value)


def _to_integer(ctype: CType) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        kind = type(value)
        if kind is int:
            return in_range(value, ctype)
        if kind is float and math.isfinite(value):
            return in_range(int(value), ctype)
        if kind is str:
            return parse_integer(value, ctype)
        raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to {ctype.name}.")

    return convert


def _to_double(value: Any) -> float:
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        return parse_double(value)
    raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to double.")


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str:
        return parse_bool(value)
    raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to bool.")


def _to_char(value: Any) -> str:
    if type(value) is int and 0 <= value <= 0xFFFF:
        return chr(value)
    if type(value) is str and len(value) == 1:
        return value
    raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to char.")


def _to_datetime(value: Any) -> _dt.datetime:
    if type(value) is _dt.datetime:
        return value
    if type(value) is str:
        return parse_datetime(value)
    raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to DateTime.")


def _to_guid(value: Any) -> uuid.UUID:
    if type(value) is uuid.UUID:
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise DotNetError("FormatException", "Unrecognized Guid format.") from None


def _checked(ctype: CType, python: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None or type(value) is python:
            return value
        raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to {ctype.name}.")

    return convert


def _to_class(ctype: CType) -> Callable[[Any], Any]:
    cls = ctype.cls
    assert cls is not None
    adapt = getattr(cls, "_cast", None)

    def convert(value: Any) -> Any:
        if value is None or isinstance(value, cls):
            return value
        if adapt is not None:
            return adapt(value)
        raise DotNetError("InvalidCastException", f"Cannot cast {type_name(value)} to {ctype.name}.")

    return convert


def _identity(value: Any) -> Any:
    return value


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


_CONVERTERS: dict[CType, Callable[[Any], Any]] = {
    STRING: _to_string, INT: _to_integer(INT), LONG: _to_integer(LONG), BYTE: _to_integer(BYTE), DOUBLE: _to_double,
    BOOL: _to_bool, CHAR: _to_char, DATETIME: _to_datetime, DATETIMEOFFSET: _to_datetime,
    TIMESPAN: _checked(TIMESPAN, _dt.timedelta), GUID: _to_guid, DYNAMIC: _identity,
}  # fmt: skip
_PYTHON_TYPES = {"dict": dict, "list": list, "bytes": bytes}


def converter(ctype: CType, source: CType = DYNAMIC, nullable: bool = False) -> Callable[[Any], Any]:
    """The conversion a cast `(T)value` applies; `source` CHAR makes `(int)c` the character code."""
    if source is CHAR and ctype in (INT, LONG, DOUBLE, BYTE):
        return lambda value: float(ord(value)) if ctype is DOUBLE else ord(value)
    convert = _CONVERTERS.get(ctype)
    if convert is None:
        if ctype.family in _PYTHON_TYPES:
            convert = _checked(ctype, _PYTHON_TYPES[ctype.family])
        elif ctype.family in ("class", "enum"):
            convert = _to_class(ctype)
        else:
            convert = _identity
    return _nullable(convert) if nullable else convert


def default_of(ctype: CType) -> Any:
    """`default(T)`: zero for numbers, false, the minimum date; null for reference types."""
    return {INT: 0, LONG: 0, BYTE: 0, DOUBLE: 0.0, BOOL: False, CHAR: "\0", DATETIME: MIN_DATE, DATETIMEOFFSET: MIN_DATE,
            TIMESPAN: _dt.timedelta(0), GUID: uuid.UUID(int=0)}.get(ctype)  # fmt: skip


def instance_test(ctype: CType) -> Callable[[Any], bool]:
    """`value is T` as a function: a run-time type test (integers match any integer type; a dynamic target
    matches anything not null)."""
    if ctype in (INT, LONG, BYTE):
        return lambda value: type(value) is int
    if ctype is CHAR:
        return lambda value: type(value) is str and len(value) == 1
    python = {STRING: str, DOUBLE: float, BOOL: bool, DATETIME: _dt.datetime, DATETIMEOFFSET: _dt.datetime,
              TIMESPAN: _dt.timedelta, GUID: uuid.UUID}.get(ctype) or _PYTHON_TYPES.get(ctype.family)  # fmt: skip
    if python is not None:
        return lambda value: type(value) is python
    cls = ctype.cls
    if cls is not None:
        return lambda value: isinstance(value, cls)
    return lambda value: value is not None
