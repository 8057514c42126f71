"""C# value semantics at run time: text forms, equality, arithmetic, casts and the whitelisted members."""

from __future__ import annotations

import datetime as _dt
import math
import operator
import re
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from policies.expressions._types import _NUMBERS, _members, _type_name


class _NullChain(Exception):
    """`?.` met null: the rest of the member chain is skipped and the chain's value is null."""


def _text(value: Any) -> str:
    """C#'s string form of a value, as concatenation and interpolation use it (null is empty)."""
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return str(value)
    if kind is float:
        return _double_text(value)
    if kind is dict or kind is list:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if isinstance(value, _dt.datetime):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if "ToString" in _members(kind):
        return value.ToString()
    return kind.__name__


def _double_text(value: float) -> str:
    """A double as .NET prints it: shortest round-trip, no trailing `.0`, `E+16` exponents."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value).replace("e", "E")


def _equals(left: Any, right: Any) -> bool:
    """C# `==` on values: numbers compare across int and double, but a bool never equals a number."""
    return left == right and (type(left) is bool) is (type(right) is bool)


def _divide(left: int | float, right: int | float) -> int | float:
    """C# division: integers truncate toward zero."""
    if type(left) is int and type(right) is int:
        quotient = left // right
        return quotient + 1 if quotient < 0 and quotient * right != left else quotient
    return left / right


def _remainder(left: int | float, right: int | float) -> int | float:
    """C# `%`: the result has the sign of the dividend (Python's has the divisor's)."""
    remainder = abs(left) % abs(right)
    return -remainder if left < 0 else remainder


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide, "%": _remainder}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}

_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_DOUBLE_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _to_string(value: Any) -> str | None:
    return None if value is None else _text(value)


def _to_integer(bits: int) -> Callable[[Any], int]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(value: Any) -> int:
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            number = int(value)
        elif type(value) is str and _INTEGER_TEXT.fullmatch(value):
            number = int(value)
        else:
            raise ValueError("not an integer")
        if not low <= number <= high:
            raise ValueError("out of range")
        return number

    return convert


def _to_double(value: Any) -> float:
    if type(value) in _NUMBERS or (type(value) is str and _DOUBLE_TEXT.fullmatch(value)):
        return float(value)
    raise ValueError("not a number")


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("not true or false")


def _to_json(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None or type(value) is kind:
            return value
        raise ValueError(f"not a {_type_name(kind)}")

    return convert


def _identity(value: Any) -> Any:
    return value


#: Cast and generic type names: the static type each produces and the conversion a cast applies.
_TYPES: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "string": (str, _to_string),
    "int": (int, _to_integer(32)),
    "long": (int, _to_integer(64)),
    "double": (float, _to_double),
    "bool": (bool, _to_bool),
    "JObject": (dict, _to_json(dict)),
    "JArray": (list, _to_json(list)),
    "JToken": (Any, _identity),
    "object": (Any, _identity),
}


def _substring(text: str, start: int, length: int | None = None) -> str:
    end = len(text) if length is None else start + length
    if type(start) is not int or type(end) is not int or not 0 <= start <= end <= len(text):
        raise ValueError("start or length outside the string")
    return text[start:end]


def _replace(text: str, old: str, new: str | None) -> str:
    if not old:
        raise ValueError("the string to replace is empty")
    return text.replace(old, new or "")


def _split(text: str, *separators: str) -> list[str]:
    """C# `Split`: on one separator, on any of several, or on each whitespace character when none is given."""
    if len(separators) == 1 and separators[0]:
        return text.split(separators[0])
    return re.split("|".join(re.escape(s) for s in separators if s) or r"\s", text)


def _trim(strip: Callable[[str, str | None], str]) -> Callable[..., str]:
    return lambda text, *chars: strip(text, "".join(chars) or None)


def _contains(text: str, part: str) -> bool:
    return part in text


def _list_contains(items: list[Any], item: Any) -> bool:
    return any(_equals(candidate, item) for candidate in items)


def _contains_key(obj: dict[str, Any], key: str) -> bool:
    return key in obj


@dataclass(frozen=True)
class _Builtin:
    """A member allowed on JSON values and primitives, with one implementation per runtime type."""

    returns: Any
    #: (fewest, most) arguments; None for a property. `most` None means any number.
    arity: tuple[int, int | None] | None
    implementations: Mapping[type, Callable[..., Any]]

    def applies_to(self, static: Any) -> bool:
        return static is Any or static in self.implementations or object in self.implementations


_BUILTINS: dict[str, _Builtin] = {
    "Length": _Builtin(int, None, {str: len, list: len}),
    "Count": _Builtin(int, None, {list: len, dict: len}),
    "ToLower": _Builtin(str, (0, 0), {str: str.lower}),
    "ToLowerInvariant": _Builtin(str, (0, 0), {str: str.lower}),
    "ToUpper": _Builtin(str, (0, 0), {str: str.upper}),
    "ToUpperInvariant": _Builtin(str, (0, 0), {str: str.upper}),
    "Trim": _Builtin(str, (0, None), {str: _trim(str.strip)}),
    "TrimStart": _Builtin(str, (0, None), {str: _trim(str.lstrip)}),
    "TrimEnd": _Builtin(str, (0, None), {str: _trim(str.rstrip)}),
    "Contains": _Builtin(bool, (1, 1), {str: _contains, list: _list_contains}),
    "StartsWith": _Builtin(bool, (1, 1), {str: str.startswith}),
    "EndsWith": _Builtin(bool, (1, 1), {str: str.endswith}),
    "Substring": _Builtin(str, (1, 2), {str: _substring}),
    "Replace": _Builtin(str, (2, 2), {str: _replace}),
    "Split": _Builtin(list, (0, None), {str: _split}),
    "IndexOf": _Builtin(int, (1, 1), {str: str.find}),
    "Equals": _Builtin(bool, (1, 1), {str: operator.eq}),
    "ContainsKey": _Builtin(bool, (1, 1), {dict: _contains_key}),
    "ToString": _Builtin(str, (0, 0), {object: _text}),
}


def _builtin_names(static: Any) -> str:
    return ", ".join(sorted(name for name, builtin in _BUILTINS.items() if builtin.applies_to(static)))


def _arity_text(fewest: int, most: int | None) -> str:
    if most is None:
        return f"at least {fewest} argument(s)"
    return f"{fewest} argument(s)" if fewest == most else f"{fewest} to {most} arguments"


def _is_null_or_empty(value: str | None) -> bool:
    if value is not None and type(value) is not str:
        raise TypeError("not a string")
    return not value


def _is_null_or_white_space(value: str | None) -> bool:
    return _is_null_or_empty(value) or typing.cast(str, value).isspace()


def _number(value: Any) -> int | float:
    if type(value) not in _NUMBERS:
        raise TypeError("not a number")
    return value


@dataclass(frozen=True)
class _Helper:
    """A static member such as `string.IsNullOrEmpty` or `DateTime.UtcNow`."""

    #: The result's static type; None means "the arguments' type" (Math).
    returns: Any
    #: The number of arguments; None for a property.
    arity: int | None
    function: Callable[..., Any]


_STRING_HELPERS = {
    "Empty": _Helper(str, None, lambda: ""),
    "IsNullOrEmpty": _Helper(bool, 1, _is_null_or_empty),
    "IsNullOrWhiteSpace": _Helper(bool, 1, _is_null_or_white_space),
}
_HELPERS: dict[str, dict[str, _Helper]] = {
    "string": _STRING_HELPERS,
    "String": _STRING_HELPERS,
    "Math": {
        "Min": _Helper(None, 2, lambda a, b: min(_number(a), _number(b))),
        "Max": _Helper(None, 2, lambda a, b: max(_number(a), _number(b))),
        "Abs": _Helper(None, 1, lambda a: abs(_number(a))),
    },
    "DateTime": {"UtcNow": _Helper(_dt.datetime, None, lambda: _dt.datetime.now(_dt.timezone.utc))},
    "Guid": {"NewGuid": _Helper(str, 0, lambda: str(uuid.uuid4()))},
}

#: Exceptions a context method or builtin raises on bad input; they become ExpressionRuntimeError.
_CALL_ERRORS = (LookupError, TypeError, ValueError, AttributeError)
