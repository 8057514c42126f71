"""Strings and chars: instance members, `String`/`Char` static members, `StringBuilder`, and their enums."""

from __future__ import annotations

import enum
import re
import unicodedata
import zlib
from collections.abc import Callable
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._format import composite, format_value
from policies.expressions._library import CONSTRUCTORS, constant, enum_type, instance, method, prop, static, type_argument
from policies.expressions._limits import MAX_TEXT_CHARS, sized
from policies.expressions._runtime import text
from policies.expressions._types import BOOL, CHAR, INT, STRING, register_class, sequence


class StringComparison(enum.Enum):
    CurrentCulture = 0
    CurrentCultureIgnoreCase = 1
    InvariantCulture = 2
    InvariantCultureIgnoreCase = 3
    Ordinal = 4
    OrdinalIgnoreCase = 5


class StringSplitOptions(enum.IntFlag):
    None_ = 0
    RemoveEmptyEntries = 1
    TrimEntries = 2


class CultureInfo(enum.Enum):
    """Culture arguments are accepted and ignored: every formatting and parsing uses the invariant culture."""

    InvariantCulture = 0
    CurrentCulture = 1
    CurrentUICulture = 2


COMPARISON = enum_type(StringComparison, ("StringComparison", "System.StringComparison"))
CULTURE = enum_type(CultureInfo, ("CultureInfo", "System.Globalization.CultureInfo"))
SPLIT_OPTIONS = enum_type(StringSplitOptions, ("StringSplitOptions", "System.StringSplitOptions"))


def _fold(value: str, *options: Any) -> str:
    """The text compared: case-folded when a comparison ignores case (or `ignoreCase: true` is passed)."""
    ignore = any((isinstance(o, StringComparison) and o.name.endswith("IgnoreCase")) or o is True for o in options)
    return value.lower() if ignore else value


def _string(value: Any, name: str = "value") -> str:
    if type(value) is not str:
        raise DotNetError("ArgumentNullException" if value is None else "ArgumentException", f"'{name}' must be a string.")
    return value


def _contains(receiver: str, value: Any, *options: Any) -> bool:
    return _fold(_string(value), *options) in _fold(receiver, *options)


def _starts(receiver: str, value: Any, *options: Any) -> bool:
    return _fold(receiver, *options).startswith(_fold(_string(value), *options))


def _ends(receiver: str, value: Any, *options: Any) -> bool:
    return _fold(receiver, *options).endswith(_fold(_string(value), *options))


def _index_of(last: bool) -> Any:
    def index_of(receiver: str, value: Any, *rest: Any) -> int:
        numbers = [r for r in rest if type(r) is int]
        folded, needle = _fold(receiver, *rest), _fold(_string(value), *rest)
        start = numbers[0] if numbers else (len(receiver) - 1 if last else 0)
        if not 0 <= start <= len(receiver):
            raise DotNetError("ArgumentOutOfRangeException", "Index was out of range.")
        if last:
            return folded.rfind(needle, 0, start + len(needle))
        end = start + numbers[1] if len(numbers) > 1 else len(receiver)
        return folded.find(needle, start, end)

    return index_of


def _index_of_any(receiver: str, chars: list[str], start: int = 0) -> int:
    found = [i for i in (receiver.find(c, start) for c in chars) if i >= 0]
    return min(found) if found else -1


def _span(receiver: str, start: int, length: int | None) -> tuple[int, int]:
    end = len(receiver) if length is None else start + length
    if not 0 <= start <= end <= len(receiver):
        raise DotNetError("ArgumentOutOfRangeException", "Index and length must refer to a location within the string.")
    return start, end


def _substring(receiver: str, start: int, length: int | None = None) -> str:
    begin, end = _span(receiver, start, length)
    return receiver[begin:end]


def _remove(receiver: str, start: int, count: int | None = None) -> str:
    begin, end = _span(receiver, start, count)
    return receiver[:begin] + receiver[end:]


def _insert(receiver: str, index: int, value: str) -> str:
    _span(receiver, index, 0)
    return sized(receiver[:index] + _string(value) + receiver[index:])


def _replace(receiver: str, old: Any, new: Any, *options: Any) -> str:
    if not _string(old, "oldValue"):
        raise DotNetError("ArgumentException", "String cannot be of zero length.")
    replacement = "" if new is None else _string(new, "newValue")
    if options and _fold("A", *options) == "a":
        return sized(re.sub(re.escape(old), lambda _: replacement, receiver, flags=re.IGNORECASE))
    return sized(receiver.replace(old, replacement))


def _trim(strip: Callable[[str, str | None], str]) -> Callable[..., str]:
    def trim(receiver: str, *chars: Any) -> str:
        flat = "".join("".join(c) if type(c) is list else c for c in chars if c is not None)
        return strip(receiver, flat or None)

    return trim


def split(receiver: str, *arguments: Any) -> list[str]:
    """C# `Split`: on chars or strings (the first that matches wins), at most `count` parts, with options."""
    separators: list[str] = []
    count, options = None, StringSplitOptions.None_
    for argument in arguments:
        if isinstance(argument, StringSplitOptions):
            options = argument
        elif type(argument) is int:
            count = argument
        elif type(argument) is list:
            separators.extend(s for s in argument if s)
        elif type(argument) is str and argument:
            separators.append(argument)
    if count is not None and count < 0:
        raise DotNetError("ArgumentOutOfRangeException", "Count cannot be less than zero.")
    if count == 0:
        return []
    pattern = "|".join(re.escape(s) for s in separators) or r"\s"
    parts: list[str] = re.split(pattern, receiver, maxsplit=0 if count is None else count - 1) if separators or receiver else [receiver]
    if options & StringSplitOptions.TrimEntries:
        parts = [part.strip() for part in parts]
    if options & StringSplitOptions.RemoveEmptyEntries:
        parts = [part for part in parts if part]
    return sized(parts)


def _equals(receiver: str | None, other: Any, *options: Any) -> bool:
    if receiver is None or other is None:
        return receiver is other
    return type(other) is str and _fold(receiver, *options) == _fold(other, *options)


def _compare(left: str | None, right: str | None, *options: Any) -> int:
    if left is None or right is None:
        return (left is not None) - (right is not None)
    a, b = _fold(left, *options), _fold(right, *options)
    return (a > b) - (a < b)


def _pad(left: bool) -> Any:
    def pad(receiver: str, width: int, char: str = " ") -> str:
        if width < 0:
            raise DotNetError("ArgumentOutOfRangeException", "Non-negative number required.")
        if width > MAX_TEXT_CHARS:
            sized(" " * (MAX_TEXT_CHARS + 1))
        return receiver.rjust(width, char) if left else receiver.ljust(width, char)

    return pad


def _hash(receiver: str) -> int:
    """A stable 32-bit hash: .NET randomises string hashes per process, so no value can match APIM's anyway."""
    value = zlib.crc32(receiver.encode("utf-16-le"))
    return value - (1 << 32) if value >= (1 << 31) else value


def _join(separator: Any, *values: Any) -> str:
    items = values[0] if len(values) == 1 and type(values[0]) is list else values
    return sized(text(separator).join(text(v) for v in items))


def _concat(*values: Any) -> str:
    items = values[0] if len(values) == 1 and type(values[0]) is list else values
    return sized("".join(text(v) for v in items))


def _format(form: Any, *values: Any) -> str:
    items = list(values[0]) if len(values) == 1 and type(values[0]) is list else list(values)
    return composite(_string(form, "format"), items)


def _to_string(receiver: Any, form: str | None = None) -> str:
    return format_value(receiver, form)


def _new_string(char: Any, count: int | None = None) -> str:
    if type(char) is list:
        return sized("".join(char))
    if count is None or count < 0:
        raise DotNetError("ArgumentOutOfRangeException", "Count cannot be less than zero.")
    if count > MAX_TEXT_CHARS:
        sized(" " * (MAX_TEXT_CHARS + 1))
    repeated: str = char * count
    return repeated


def _char_test(test: Any) -> Any:
    def check(value: str, index: int | None = None) -> bool:
        char = value[index] if index is not None else value
        return bool(char) and test(char)

    return check


STRINGS = sequence(STRING)
_case = method(str.lower, STRING, 0)
instance(
    "string",
    Length=prop(len, INT),
    ToLower=_case,
    ToLowerInvariant=_case,
    ToUpper=method(str.upper, STRING, 0),
    ToUpperInvariant=method(str.upper, STRING, 0),
    Trim=method(_trim(str.strip), STRING, 0, None),
    TrimStart=method(_trim(str.lstrip), STRING, 0, None),
    TrimEnd=method(_trim(str.rstrip), STRING, 0, None),
    Contains=method(_contains, BOOL, 1, 2),
    StartsWith=method(_starts, BOOL, 1, 3),
    EndsWith=method(_ends, BOOL, 1, 3),
    IndexOf=method(_index_of(False), INT, 1, 4),
    LastIndexOf=method(_index_of(True), INT, 1, 3),
    IndexOfAny=method(_index_of_any, INT, 1, 2),
    Substring=method(_substring, STRING, 1, 2),
    Remove=method(_remove, STRING, 1, 2),
    Insert=method(_insert, STRING, 2),
    Replace=method(_replace, STRING, 2, 3),
    Split=method(split, STRINGS, 0, None, costly=True),
    Equals=method(_equals, BOOL, 1, 2),
    CompareTo=method(_compare, INT, 1),
    PadLeft=method(_pad(True), STRING, 1, 2),
    PadRight=method(_pad(False), STRING, 1, 2),
    ToCharArray=method(list, sequence(CHAR), 0, costly=True),
    GetHashCode=method(_hash, INT, 0),
    Normalize=method(lambda receiver: unicodedata.normalize("NFC", receiver), STRING, 0),
    ToString=method(lambda receiver, *form: receiver, STRING, 0, 1),
)
instance("char", ToString=method(_to_string, STRING, 0), Equals=method(_equals, BOOL, 1))
_STRING_NAMES = ("string", "System.String")
static(
    "String",
    _STRING_NAMES,
    Empty=constant("", STRING),
    IsNullOrEmpty=method(lambda value: value is None or not _string(value), BOOL, 1),
    IsNullOrWhiteSpace=method(lambda value: value is None or not _string(value).strip(), BOOL, 1),
    Join=method(_join, STRING, 2, None, costly=True),
    Concat=method(_concat, STRING, 1, None, costly=True),
    Format=method(_format, STRING, 1, None),
    Equals=method(_equals, BOOL, 2, 3),
    Compare=method(_compare, INT, 2, 3),
    CompareOrdinal=method(_compare, INT, 2),
)
static(
    "Char",
    ("char", "System.Char"),
    IsDigit=method(_char_test(str.isdecimal), BOOL, 1, 2),
    IsNumber=method(_char_test(str.isnumeric), BOOL, 1, 2),
    IsLetter=method(_char_test(str.isalpha), BOOL, 1, 2),
    IsLetterOrDigit=method(_char_test(str.isalnum), BOOL, 1, 2),
    IsWhiteSpace=method(_char_test(str.isspace), BOOL, 1, 2),
    IsUpper=method(_char_test(str.isupper), BOOL, 1, 2),
    IsLower=method(_char_test(str.islower), BOOL, 1, 2),
    IsPunctuation=method(_char_test(lambda c: unicodedata.category(c).startswith("P")), BOOL, 1, 2),
    ToUpper=method(str.upper, CHAR, 1),
    ToLower=method(str.lower, CHAR, 1),
)
CONSTRUCTORS["string"] = method(_new_string, STRING, 1, 2)


class StringBuilder:
    """`System.Text.StringBuilder`: appends are bounded like any other string an expression builds."""

    def __init__(self, value: str | None = None) -> None:
        self._parts: list[str] = [value] if value else []
        self._length = len(value or "")

    @property
    def Length(self) -> int:  # noqa: N802 - .NET's name
        return self._length

    def Append(self, value: Any) -> StringBuilder:  # noqa: N802
        piece = text(value)
        if self._length + len(piece) > MAX_TEXT_CHARS:
            sized(" " * (MAX_TEXT_CHARS + 1))
        self._parts.append(piece)
        self._length += len(piece)
        return self

    def AppendLine(self, value: Any = None) -> StringBuilder:  # noqa: N802
        return self.Append(text(value) + "\n")

    def Clear(self) -> StringBuilder:  # noqa: N802
        self._parts, self._length = [], 0
        return self

    def ToString(self) -> str:  # noqa: N802
        joined = "".join(self._parts)
        self._parts = [joined] if joined else []
        return joined


register_class(StringBuilder, "StringBuilder", "System.Text")
CONSTRUCTORS["StringBuilder"] = method(StringBuilder, type_argument, 0, 1)
