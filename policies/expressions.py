"""Policy expressions: the safe subset of C# that APIM accepts inside `@( … )`.

The text is tokenised and parsed here (never `eval`/`exec`) and compiled once, at policy load, into a tree of
Python closures that each request only calls. Member chains that start at `context` are checked against the
typed declarations in `policies.context`, so a typo or an unsupported member fails the load, not a request.
JSON values and variables are dynamic: on them only indexers, casts and a small whitelist of members
(`Length`, `ToLower()`, `Contains(…)`, …) work, dispatched on the runtime type.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import math
import operator
import re
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import NoneType, UnionType
from typing import Any

import orjson

from policies.context import Context

_Evaluator = Callable[[Context], Any]


class ExpressionError(ValueError):
    """An expression that cannot be compiled: raised at policy load, so a bad policy never serves a request."""


class ExpressionRuntimeError(Exception):
    """A compiled expression failed on a request: null dereference, missing key, bad cast, division by zero."""


class Expression:
    """A compiled `@( … )` expression: parsed once, then `evaluate` runs per request."""

    __slots__ = ("source", "_evaluate", "_masks")

    def __init__(self, source: str, evaluate: _Evaluator, masks: tuple[tuple[str, str], ...] = ()) -> None:
        self.source = source
        self._evaluate = evaluate
        self._masks = masks

    def evaluate(self, context: Context) -> Any:
        try:
            return self._evaluate(context)
        except ExpressionRuntimeError as exc:
            if not self._masks:
                raise
            raise ExpressionRuntimeError(_redact(str(exc), self._masks)) from exc.__cause__

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class Value:
    """An attribute or element value as written in policy XML: a constant, or an expression to run per request.

    `source` is the text as written, before named values are substituted, so it never shows their contents.
    """

    __slots__ = ("source", "is_constant", "constant", "_expression")

    def __init__(self, source: str, *, constant: Any = None, expression: Expression | None = None) -> None:
        self.source = source
        self.is_constant = expression is None
        self.constant = constant
        self._expression = expression

    @classmethod
    def of(cls, constant: Any) -> Value:
        """A constant that did not come from policy text, such as an attribute's default."""
        return cls(_text(constant), constant=constant)

    def evaluate(self, context: Context) -> Any:
        if self._expression is None:
            return self.constant
        return self._expression.evaluate(context)

    def __repr__(self) -> str:
        return f"Value({self.source!r})"


def compile_expression(source: str) -> Expression:
    """Compile the C# text inside `@(` `)`; raises ExpressionError naming what is wrong."""
    return Expression(source, _compile(source))


_NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


def compile_value(text: str, named_values: Mapping[str, str]) -> Value:
    """Substitute `{{named values}}` as raw text (as APIM does), then compile `@( … )` or keep the literal."""
    used: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in named_values:
            raise ExpressionError(f"Named value {name!r} is not defined in {text!r}: define it or remove '{{{{{name}}}}}'.")
        used[name] = named_values[name]
        return used[name]

    resolved = _NAMED_VALUE.sub(substitute, text)
    stripped = resolved.strip()
    if stripped.startswith("@{"):
        raise ExpressionError(
            f"Multi-statement expressions '@{{ … }}' are not supported in {text!r}: use a single expression '@( … )'."
        )
    if not stripped.startswith("@("):
        return Value(text, constant=resolved)
    if not stripped.endswith(")"):
        raise ExpressionError(
            f"Value {text!r} starts an expression with '@(' but does not end with its ')': "
            "a value is either literal text or one whole '@( … )'."
        )
    masks = tuple(sorted(((value, f"{{{{{name}}}}}") for name, value in used.items() if value), key=lambda mask: -len(mask[0])))
    source = stripped[2:-1]
    try:
        evaluate = _compile(source)
    except ExpressionError as exc:
        raise ExpressionError(_redact(str(exc), masks)) from None
    return Value(text, expression=Expression(source, evaluate, masks))


def _redact(message: str, masks: tuple[tuple[str, str], ...]) -> str:
    """Put `{{name}}` back where a named value's contents appear, since named values often hold secrets."""
    for value, placeholder in masks:
        message = message.replace(value, placeholder)
    return message


def _compile(source: str) -> _Evaluator:
    tokens, _ = _Lexer(source).tokens(0)
    return _Parser(source, tokens).parse().fn


def _load_error(source: str, problem: str, hint: str = "") -> ExpressionError:
    return ExpressionError(f"{problem} in expression '{source}'{hint}")


def _runtime_error(source: str, problem: str) -> ExpressionRuntimeError:
    return ExpressionRuntimeError(f"{problem} in expression '{source}'")


# --- Tokens ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    #: "name", "number", "string", "template" (interpolated string), "op" or "end".
    kind: str
    #: The name, operator, number or string; a template's parts are strings and token tuples (the holes).
    value: Any
    start: int
    end: int


_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(\w*)")
_NAME = re.compile(r"[^\W\d]\w*")
_OPERATOR = re.compile(r"=>|==|!=|<=|>=|&&|\|\||\?\?|\?\.(?![0-9])|\+\+|--|[-+*/%!<>=?:.,()\[\]]")
_SPACE = re.compile(r"\s+")
#: Operators outside the supported subset, refused as soon as they are seen: (what it is, what to do instead).
_FORBIDDEN = {
    "=>": ("Lambda ('=>')", ": expressions cannot define functions (no LINQ)."),
    "=": ("Assignment ('=')", ": expressions cannot change values; compare with '=='."),
    "++": ("Increment ('++')", ": expressions cannot change values."),
    "--": ("Decrement ('--')", ": expressions cannot change values."),
}
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_STRING_OPENERS = ('$@"', '@$"', '$"', '@"', '"', "'")


class _Lexer:
    """Splits C# source into tokens; interpolated strings carry their holes as nested token lists."""

    def __init__(self, source: str) -> None:
        self.source = source

    def tokens(self, pos: int, in_hole: bool = False) -> tuple[list[_Token], int]:
        """Tokens from `pos` to the end, or to the `}` closing an interpolation hole; ends with an "end" token."""
        source, tokens = self.source, []
        while pos < len(source):
            char = source[pos]
            if in_hole and char == "}":
                tokens.append(_Token("end", None, pos, pos))
                return tokens, pos + 1
            if space := _SPACE.match(source, pos):
                pos = space.end()
                continue
            token = self._token(pos)
            if token.kind == "op" and token.value in _FORBIDDEN:
                what, hint = _FORBIDDEN[token.value]
                raise self.error(f"{what} at character {pos + 1} is not supported", hint)
            tokens.append(token)
            pos = token.end
        if in_hole:
            raise self.error("Unterminated '{' in interpolated string")
        tokens.append(_Token("end", None, pos, pos))
        return tokens, pos

    def _token(self, pos: int) -> _Token:
        source = self.source
        char = source[pos]
        if char in "\"'@$":
            return self._string(pos)
        if number := _NUMBER.match(source, pos):
            return self._number(number)
        if name := _NAME.match(source, pos):
            return _Token("name", name.group(), pos, name.end())
        if op := _OPERATOR.match(source, pos):
            return _Token("op", op.group(), pos, op.end())
        raise self.error(f"Unexpected character {char!r} at character {pos + 1}")

    def _number(self, match: re.Match[str]) -> _Token:
        text, suffix = match.group(), match.group(1)
        digits = text[: len(text) - len(suffix)]
        integral = not any(c in digits for c in ".eE")
        if suffix.lower() not in ("", "l", "d", "f", "m") or (suffix.lower() == "l" and not integral):
            raise self.error(f"Invalid number {text!r} at character {match.start() + 1}")
        value: int | float = int(digits) if integral and suffix.lower() in ("", "l") else float(digits)
        return _Token("number", value, match.start(), match.end())

    def _string(self, start: int) -> _Token:
        opener = next((o for o in _STRING_OPENERS if self.source.startswith(o, start)), None)
        if opener is None:
            raise self.error(f"Unexpected character {self.source[start]!r} at character {start + 1}")
        if opener == "'":
            return self._char(start)
        parts, end = self._string_parts(start, start + len(opener), verbatim="@" in opener, interpolated="$" in opener)
        if "$" not in opener:
            return _Token("string", parts[0], start, end)
        return _Token("template", tuple(parts), start, end)

    def _string_parts(self, start: int, pos: int, verbatim: bool, interpolated: bool) -> tuple[list[Any], int]:
        source, parts, chunk = self.source, [], []
        while True:
            char = source[pos] if pos < len(source) else ""
            if char == "" or (char == "\n" and not verbatim):
                raise self.error(f"Unterminated string starting at character {start + 1}")
            if char == '"' and verbatim and source.startswith('""', pos):
                chunk.append('"')
                pos += 2
            elif char == '"':
                parts.append("".join(chunk))
                return parts, pos + 1
            elif interpolated and char in "{}" and source.startswith(char * 2, pos):
                chunk.append(char)
                pos += 2
            elif interpolated and char == "}":
                raise self.error(f"Unescaped '}}' in interpolated string at character {pos + 1} (write '}}}}')")
            elif interpolated and char == "{":
                parts.append("".join(chunk))
                chunk = []
                hole, pos = self.tokens(pos + 1, in_hole=True)
                parts.append(tuple(hole))
            elif char == "\\" and not verbatim:
                decoded, pos = self._escape(pos)
                chunk.append(decoded)
            else:
                chunk.append(char)
                pos += 1

    def _escape(self, pos: int) -> tuple[str, int]:
        code = self.source[pos + 1 : pos + 2]
        if code and code in _ESCAPES:
            return _ESCAPES[code], pos + 2
        digits = self.source[pos + 2 : pos + 6]
        if code == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
            return chr(int(digits, 16)), pos + 6
        raise self.error(f"Unsupported escape sequence '\\{code}' at character {pos + 1}")

    def _char(self, start: int) -> _Token:
        source = self.source
        escaped = source[start + 1 : start + 2] == "\\"
        if escaped:
            value, pos = self._escape(start + 1)
        else:
            value, pos = source[start + 1 : start + 2], start + 2
        if (not escaped and value in ("", "'", "\n")) or source[pos : pos + 1] != "'":
            raise self.error(f"Invalid character literal at character {start + 1} (a char is one character in single quotes)")
        return _Token("string", value, start, pos + 1)

    def error(self, problem: str, hint: str = "") -> ExpressionError:
        return _load_error(self.source, problem, hint)


# --- Static types: what expressions may reach on the context -----------------------------------------------------

#: Types that behave like JSON values: members come from the whitelist in `_BUILTINS`, not from declarations.
_VALUE_TYPES = frozenset({str, int, float, bool, list, dict, _dt.datetime, NoneType, Any})
_NUMBERS = frozenset({int, float})
_TYPE_NAMES = {
    str: "string",
    int: "int",
    float: "double",
    bool: "bool",
    list: "JArray",
    dict: "JObject",
    NoneType: "null",
    _dt.datetime: "DateTime",
    Any: "JToken",
}


def _type_name(static: Any) -> str:
    return _TYPE_NAMES.get(static) or getattr(static, "__name__", str(static))


def _value_type_name(value: Any) -> str:
    return _type_name(type(value))


def _static(hint: Any) -> Any:
    """The type an expression checks against: `Optional[X]` is X (null is checked at run time), JToken is Any."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is UnionType:
        options = [arg for arg in typing.get_args(hint) if arg is not NoneType]
        return _static(options[0]) if len(options) == 1 else Any
    if origin is not None:
        return origin if origin in (list, dict) else Any
    if hint is None:
        return NoneType
    return hint if isinstance(hint, type) else Any


def _join(first: Any, second: Any) -> Any:
    """The static type of a value that is one of two branches (`?:`, `??`)."""
    if first is second or second is NoneType:
        return first
    if first is NoneType:
        return second
    return float if {first, second} == _NUMBERS else Any


@dataclass(frozen=True)
class _Member:
    """A member of a context class an expression may use: an attribute, a property or a method."""

    #: The attribute's type, or the method's return type.
    type: Any
    #: A method's parameters without `self` and `T`; None for attributes and properties.
    parameters: tuple[inspect.Parameter, ...] | None = None
    hints: Mapping[str, Any] = field(default_factory=dict)
    generic: bool = False

    def usage(self, name: str) -> str:
        arguments = ", ".join(p.name if p.default is p.empty else f"[{p.name}]" for p in self.parameters or ())
        return f"{name}{'<T>' if self.generic else ''}({arguments})"


def _is_public(name: str) -> bool:
    """PascalCase only: snake_case members are the gateway's own API and `_private` ones are never reachable."""
    return name[:1].isupper() and "_" not in name


def _method(function: Callable[..., Any], hints: Mapping[str, Any]) -> _Member:
    parameters = list(inspect.signature(function).parameters.values())[1:]
    usable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return _Member(
        type=hints["return"],
        parameters=tuple(p for p in parameters if p.name != "T" and p.kind in usable),
        hints=hints,
        generic=any(p.name == "T" and p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters),
    )


@functools.cache
def _members(cls: type) -> dict[str, _Member]:
    """The members of a context class visible to expressions: its annotated PascalCase attributes and methods."""
    members = {name: _Member(hint) for name, hint in typing.get_type_hints(cls).items() if _is_public(name)}
    for name in dir(cls):
        if not _is_public(name) or name in members:
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, property) and attribute.fget is not None:
            hints = typing.get_type_hints(attribute.fget)
            if "return" in hints:
                members[name] = _Member(hints["return"])
        elif inspect.isfunction(attribute):
            hints = typing.get_type_hints(attribute)
            if "return" in hints:
                members[name] = _method(attribute, hints)
    return members


@functools.cache
def _indexer(cls: type) -> _Member | None:
    function = inspect.getattr_static(cls, "__getitem__", None)
    if not inspect.isfunction(function):
        return None
    hints = typing.get_type_hints(function)
    return _method(function, hints) if "return" in hints else None


def _accepts(hint: Any, argument: Any) -> bool:
    """Whether an argument of static type `argument` may go to a parameter annotated `hint`; dynamic ones may."""
    expected, primitives = _static(hint), (str, int, float, bool)
    if argument not in primitives or expected not in primitives:
        return True
    return argument is expected or (expected is float and argument is int)


# --- Runtime semantics of C# values --------------------------------------------------------------------------------


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


# --- Parser and compiler --------------------------------------------------------------------------------------------

_NOT_CONSTANT = object()


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: its closure, its static type and its span in the source (for messages)."""

    fn: _Evaluator
    type: Any
    start: int
    end: int
    #: The value when the node is a literal, so calls with literal arguments skip evaluating them.
    constant: Any = _NOT_CONSTANT


@dataclass(frozen=True, slots=True)
class _Arguments:
    """The `( … )` of a call: positional arguments, then named ones (`preserveContent: true`)."""

    positional: list[_Node]
    named: dict[str, _Node]
    end: int


def _root(context: Context) -> Context:
    return context


def _constant(value: Any, static: Any, start: int, end: int) -> _Node:
    return _Node(lambda _: value, static, start, end, value)


#: Binary operators from loosest to tightest binding; `??` and `?:` sit above these.
_LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))
_NUMERIC_OPERANDS = frozenset({int, float, Any, NoneType})


class _Parser:
    """Recursive descent over the tokens, compiling each construct into a closure as it is recognised."""

    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.position = 0

    # Token helpers

    @property
    def token(self) -> _Token:
        return self.tokens[self.position]

    def peek(self, offset: int) -> _Token:
        return self.tokens[min(self.position + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.token
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def at(self, op: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "op" and token.value == op

    def accept(self, op: str) -> bool:
        if self.at(op):
            self.advance()
            return True
        return False

    def fail(self, problem: str, hint: str = "") -> ExpressionError:
        return _load_error(self.source, problem, hint)

    def unexpected(self) -> ExpressionError:
        token = self.token
        if token.kind == "end":
            return self.fail("Unexpected end")
        if self.at(")"):
            return self.fail(f"Unbalanced parentheses: unexpected ')' at character {token.start + 1}")
        return self.fail(f"Unexpected '{self.source[token.start:token.end]}' at character {token.start + 1}")

    def close(self, opener: _Token) -> _Token:
        if not self.at(")"):
            if self.token.kind == "end":
                raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
            raise self.unexpected()
        return self.advance()

    def text(self, node: _Node) -> str:
        return self.source[node.start : node.end]

    # Grammar

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.fail("Nothing to evaluate")
        node = self.expression()
        if self.token.kind != "end":
            raise self.unexpected()
        return node

    def hole(self) -> _Node:
        """An interpolation hole's expression; format specifiers (`{x:N2}`) are not supported."""
        if self.token.kind == "end":
            raise self.fail("Empty '{}' in interpolated string")
        node = self.expression()
        if self.at(":") or self.at(","):
            raise self.fail("Format specifiers and alignment in interpolated strings are not supported", ": use concatenation.")
        if self.token.kind != "end":
            raise self.unexpected()
        return node

    def expression(self) -> _Node:
        condition = self.coalesce()
        if not self.accept("?"):
            return condition
        test = self.boolean(condition, "The condition of '?:'")
        then = self.expression()
        if not self.accept(":"):
            raise self.fail("Missing ':' in conditional expression '?:'") if self.token.kind == "end" else self.unexpected()
        otherwise = self.expression()
        then_fn, otherwise_fn = then.fn, otherwise.fn

        def conditional(context: Context) -> Any:
            return then_fn(context) if test(context) else otherwise_fn(context)

        return _Node(conditional, _join(then.type, otherwise.type), condition.start, otherwise.end)

    def coalesce(self) -> _Node:
        left = self.binary(0)
        if not self.accept("??"):
            return left
        right = self.coalesce()
        left_fn, right_fn = left.fn, right.fn

        def coalesce(context: Context) -> Any:
            value = left_fn(context)
            return right_fn(context) if value is None else value

        return _Node(coalesce, _join(left.type, right.type), left.start, right.end)

    def binary(self, level: int) -> _Node:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.token.kind == "op" and self.token.value in _LEVELS[level]:
            op = self.advance().value
            right = self.binary(level + 1)
            node = self.combine(op, node, right)
        return node

    def unary(self) -> _Node:
        start = self.token.start
        if self.accept("!"):
            operand = self.unary()
            test = self.boolean(operand, "The operand of '!'")
            return _Node(lambda context: not test(context), bool, start, operand.end)
        if self.accept("-"):
            return self.negate(self.unary(), start)
        if self.at("(") and self.is_cast():
            return self.cast()
        return self.postfix()

    def is_cast(self) -> bool:
        """`(T)x` is a cast when T is a type name, or an unknown name directly followed by an operand."""
        name, following = self.peek(1), self.peek(3)
        if name.kind != "name" or not self.at(")", 2):
            return False
        if name.value in _TYPES:
            return True
        return name.value != "context" and (following.kind in ("name", "number", "string", "template") or self.at("(", 3))

    def postfix(self) -> _Node:
        node = self.primary()
        short_circuits = False
        while True:
            if self.at(".") or self.at("?."):
                safe = self.advance().value == "?."
                node = self.member(node, safe)
            elif self.at("["):
                safe = False
                node = self.index(node, safe)
            elif self.at("?") and self.at("[", 1):
                safe = True
                self.advance()
                node = self.index(node, safe)
            else:
                break
            short_circuits = short_circuits or safe
        return _short_circuit(node) if short_circuits else node

    def primary(self) -> _Node:
        token = self.token
        if token.kind in ("number", "string"):
            self.advance()
            return _constant(token.value, type(token.value), token.start, token.end)
        if token.kind == "template":
            self.advance()
            return self.template(token)
        if self.at("("):
            opener = self.advance()
            node = self.expression()
            closer = self.close(opener)
            return replace(node, start=opener.start, end=closer.end)
        if token.kind != "name":
            raise self.unexpected()
        self.advance()
        name = token.value
        if name in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[name]
            return _constant(value, type(value), token.start, token.end)
        if name == "context":
            return _Node(_root, Context, token.start, token.end)
        if name in _HELPERS:
            return self.helper(token)
        if name in ("new", "typeof"):
            raise self.fail(f"'{name}' is not supported", ": expressions read the context; they cannot create objects or inspect types.")
        raise self.fail(f"Unknown name '{name}'", f": expressions start with 'context' or a helper ({', '.join(_HELPERS)}).")

    # Constructs

    def template(self, token: _Token) -> _Node:
        parts: list[Any] = []
        for part in token.value:
            if isinstance(part, str):
                if part:
                    parts.append(part)
            else:
                parts.append(_Parser(self.source, list(part)).hole().fn)
        if all(isinstance(part, str) for part in parts):
            return _constant("".join(parts), str, token.start, token.end)

        def interpolate(context: Context) -> str:
            return "".join([part if type(part) is str else _text(part(context)) for part in parts])

        return _Node(interpolate, str, token.start, token.end)

    def helper(self, owner: _Token) -> _Node:
        helpers = _HELPERS[owner.value]
        if not self.accept("."):
            raise self.fail(f"'{owner.value}' must be followed by a member", f": use one of {', '.join(helpers)}.")
        name_token = self.expect_name()
        name, helper = name_token.value, helpers.get(name_token.value)
        if helper is None:
            raise self.fail(f"Unsupported member '{name}' on {owner.value}", f": use one of {', '.join(helpers)}.")
        qualified, source = f"{owner.value}.{name}", self.source
        if helper.arity is None:
            if self.at("("):
                raise self.fail(f"'{qualified}' is a property, not a method")
            function = helper.function
            return _Node(lambda _: function(), helper.returns, owner.start, name_token.end)
        if not self.at("("):
            raise self.fail(f"'{qualified}' is a method: call it as {qualified}(…)")
        call = self.arguments()
        if call.named or len(call.positional) != helper.arity:
            raise self.fail(f"'{qualified}' takes {helper.arity} positional argument(s)")
        returns = helper.returns
        if returns is None:
            joined = functools.reduce(_join, (argument.type for argument in call.positional))
            returns = joined if joined in _NUMBERS else Any
        function, arguments = helper.function, tuple(argument.fn for argument in call.positional)

        def invoke(context: Context) -> Any:
            values = [argument(context) for argument in arguments]
            try:
                return function(*values)
            except _CALL_ERRORS:
                given = ", ".join(_value_type_name(value) for value in values)
                raise _runtime_error(source, f"{qualified} cannot take ({given})") from None

        return _Node(invoke, returns, owner.start, call.end)

    def expect_name(self) -> _Token:
        if self.token.kind != "name":
            raise self.fail("Expected a member name after '.'") if self.token.kind == "end" else self.unexpected()
        return self.advance()

    def arguments(self) -> _Arguments:
        opener = self.advance()
        positional: list[_Node] = []
        named: dict[str, _Node] = {}
        while not self.at(")"):
            if self.token.kind == "end":
                raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
            if self.token.kind == "name" and self.at(":", 1):
                name = self.advance().value
                self.advance()
                if name in named:
                    raise self.fail(f"Named argument '{name}' is given twice")
                named[name] = self.expression()
            elif named:
                raise self.fail("Positional arguments must come before named arguments")
            else:
                positional.append(self.expression())
            if not self.accept(","):
                break
        return _Arguments(positional, named, self.close(opener).end)

    def type_argument(self) -> str | None:
        """The `T` of a generic call `Name<T>(…)`, told apart from `<` by the `>(` that follows."""
        if not (self.at("<") and self.peek(1).kind == "name" and self.at(">", 2) and self.at("(", 3)):
            return None
        self.advance()
        name = self.advance().value
        self.advance()
        if name not in _TYPES:
            raise self.fail(f"Unsupported type argument '{name}'", f": use one of {', '.join(_TYPES)}.")
        return name

    def member(self, node: _Node, safe: bool) -> _Node:
        name_token = self.expect_name()
        type_argument = self.type_argument()
        call = self.arguments() if self.at("(") else None
        end = call.end if call else name_token.end
        if node.type in _VALUE_TYPES:
            return self.builtin_member(node, name_token.value, type_argument, call, safe, end)
        return self.class_member(node, name_token.value, type_argument, call, safe, end)

    def class_member(self, node: _Node, name: str, type_argument: str | None, call: _Arguments | None, safe: bool, end: int) -> _Node:
        cls = node.type
        members = _members(cls)
        member = members.get(name)
        if member is None:
            raise self.fail(f"Unsupported member '{name}' on {cls.__name__}", f": use one of {', '.join(sorted(members))}.")
        if member.parameters is None:
            if call is not None or type_argument is not None:
                raise self.fail(f"'{name}' on {cls.__name__} is a property, not a method")
            receiver = self.receiver(node, f"read '{name}'", safe)
            return _Node(lambda context: getattr(receiver(context), name), _static(member.type), node.start, end)
        if call is None:
            raise self.fail(f"'{name}' on {cls.__name__} is a method: call it as {member.usage(name)}")
        if type_argument is not None and not member.generic:
            raise self.fail(f"'{name}' on {cls.__name__} is not generic", f": call it as {member.usage(name)}.")
        arguments = self.bind(member, name, call)
        if type_argument is not None:
            arguments["T"] = _constant(type_argument, str, node.end, end)
        receiver = self.receiver(node, f"call '{name}'", safe)
        return _Node(self.invoke(receiver, name, arguments, node), _static(member.type), node.start, end)

    def bind(self, member: _Member, name: str, call: _Arguments) -> dict[str, _Node]:
        """C# argument binding: positional arguments fill parameters in order, named ones by name."""
        parameters = member.parameters or ()
        usage = f": use {member.usage(name)}."
        if len(call.positional) > len(parameters):
            raise self.fail(f"Too many arguments ({len(call.positional)}) for '{name}'", usage)
        arguments = {parameter.name: argument for parameter, argument in zip(parameters, call.positional)}
        names = [parameter.name for parameter in parameters]
        for key, argument in call.named.items():
            if key not in names:
                raise self.fail(f"Unknown named argument '{key}' for '{name}'", usage)
            if key in arguments:
                raise self.fail(f"Argument '{key}' of '{name}' is given twice", usage)
            arguments[key] = argument
        for parameter in parameters:
            if parameter.name not in arguments and parameter.default is parameter.empty:
                raise self.fail(f"Missing argument '{parameter.name}' for '{name}'", usage)
        for key, argument in arguments.items():
            hint = member.hints.get(key, Any)
            if not _accepts(hint, argument.type):
                raise self.fail(f"Argument '{key}' of '{name}' must be {_type_name(_static(hint))}, not {_type_name(argument.type)}")
        return arguments

    def invoke(self, receiver: _Evaluator, name: str, arguments: dict[str, _Node], node: _Node) -> _Evaluator:
        source, text = self.source, self.text(node)

        def failed(exc: Exception) -> ExpressionRuntimeError:
            return _runtime_error(source, f"Calling '{name}' on '{text}' failed ({type(exc).__name__})")

        if all(argument.constant is not _NOT_CONSTANT for argument in arguments.values()):
            constants = {key: argument.constant for key, argument in arguments.items()}

            def invoke_constants(context: Context) -> Any:
                method = getattr(receiver(context), name)
                try:
                    return method(**constants)
                except _CALL_ERRORS as exc:
                    raise failed(exc) from exc

            return invoke_constants
        evaluators = tuple((key, argument.fn) for key, argument in arguments.items())

        def invoke(context: Context) -> Any:
            method = getattr(receiver(context), name)
            values = {key: evaluate(context) for key, evaluate in evaluators}
            try:
                return method(**values)
            except _CALL_ERRORS as exc:
                raise failed(exc) from exc

        return invoke

    def builtin_member(self, node: _Node, name: str, type_argument: str | None, call: _Arguments | None, safe: bool, end: int) -> _Node:
        builtin = _BUILTINS.get(name)
        static = node.type
        if static is NoneType:
            raise self.fail(f"Cannot use '{name}' on null")
        if builtin is None or not builtin.applies_to(static):
            raise self.fail(f"Unsupported member '{name}' on {_type_name(static)}", f": use one of {_builtin_names(static)}.")
        if builtin.arity is None and call is not None:
            raise self.fail(f"'{name}' is a property, not a method")
        if builtin.arity is not None and call is None:
            raise self.fail(f"'{name}' is a method: call it as {name}(…)")
        if type_argument is not None or (call and call.named):
            raise self.fail(f"'{name}' takes no type or named arguments")
        arguments = tuple(argument.fn for argument in call.positional) if call else ()
        if builtin.arity is not None:
            fewest, most = builtin.arity
            if len(arguments) < fewest or (most is not None and len(arguments) > most):
                raise self.fail(f"Wrong number of arguments ({len(arguments)}) for '{name}'", f": it takes {_arity_text(fewest, most)}.")
        receiver = self.receiver(node, f"{'read' if builtin.arity is None else 'call'} '{name}'", safe)
        source, text = self.source, self.text(node)
        implementations = builtin.implementations
        fallback = implementations.get(object)

        def dynamic_member(context: Context) -> Any:
            value = receiver(context)
            implementation = implementations.get(type(value), fallback)
            if implementation is None:
                kind = type(value)
                allowed = _builtin_names(kind)
                raise _runtime_error(source, f"'{name}' is not available on {_type_name(kind)} '{text}' (use one of {allowed})")
            values = [argument(context) for argument in arguments]
            try:
                return implementation(value, *values)
            except ValueError as exc:
                raise _runtime_error(source, f"'{name}' on '{text}' failed: {exc}") from None
            except _CALL_ERRORS:
                given = ", ".join(_value_type_name(v) for v in values)
                raise _runtime_error(source, f"'{name}' on '{text}' cannot take ({given})") from None

        return _Node(dynamic_member, builtin.returns, node.start, end)

    def index(self, node: _Node, safe: bool) -> _Node:
        opener = self.advance()
        if self.at("]"):
            raise self.fail(f"Empty indexer at character {opener.start + 1}")
        key = self.expression()
        if not self.at("]"):
            raise self.fail(f"Missing ']' for '[' at character {opener.start + 1}") if self.token.kind == "end" else self.unexpected()
        end = self.advance().end
        receiver = self.receiver(node, "index", safe)
        if node.type in (dict, list, Any):
            return _Node(self.dynamic_index(receiver, key, node), Any, node.start, end)
        indexer = None if node.type in _VALUE_TYPES else _indexer(node.type)
        if indexer is None or indexer.parameters is None or len(indexer.parameters) != 1:
            raise self.fail(f"{_type_name(node.type)} '{self.text(node)}' has no indexer")
        hint = indexer.hints.get(indexer.parameters[0].name, Any)
        if not _accepts(hint, key.type):
            raise self.fail(f"The key of '{self.text(node)}' must be {_type_name(_static(hint))}, not {_type_name(key.type)}")
        return _Node(self.class_index(receiver, key, node), _static(indexer.type), node.start, end)

    def class_index(self, receiver: _Evaluator, key: _Node, node: _Node) -> _Evaluator:
        source, text, key_fn = self.source, self.text(node), key.fn

        def index(context: Context) -> Any:
            obj, name = receiver(context), key_fn(context)
            try:
                return obj[name]
            except (LookupError, TypeError):
                raise _runtime_error(source, f"Key {name!r} not found in '{text}'") from None

        return index

    def dynamic_index(self, receiver: _Evaluator, key: _Node, node: _Node) -> _Evaluator:
        """JObject indexers return null for a missing key; JArray indexers need an index in range."""
        source, text, key_fn = self.source, self.text(node), key.fn

        def index(context: Context) -> Any:
            obj, name = receiver(context), key_fn(context)
            if type(obj) is dict and type(name) is str:
                return obj.get(name)
            if type(obj) is list and type(name) is int and 0 <= name < len(obj):
                return obj[name]
            if type(obj) is list and type(name) is int:
                raise _runtime_error(source, f"Index {name} is out of range for '{text}' ({len(obj)} items)")
            raise _runtime_error(source, f"Cannot index {_value_type_name(obj)} '{text}' with {_value_type_name(name)}")

        return index

    def receiver(self, node: _Node, action: str, safe: bool) -> _Evaluator:
        """The evaluator of a member's target, which stops on null: with `?.` the chain yields null, else it fails."""
        fn = node.fn
        if fn is _root:
            return fn
        if safe:

            def conditional(context: Context) -> Any:
                value = fn(context)
                if value is None:
                    raise _NullChain
                return value

            return conditional
        source, text = self.source, self.text(node)

        def required(context: Context) -> Any:
            value = fn(context)
            if value is None:
                raise _runtime_error(source, f"Cannot {action}: '{text}' is null (use '?.' or '?[' to get null instead)")
            return value

        return required

    def cast(self) -> _Node:
        opener = self.advance()
        name = self.advance().value
        self.advance()
        if name not in _TYPES:
            raise self.fail(f"Unsupported cast to '{name}'", f": use one of {', '.join(_TYPES)}.")
        operand = self.unary()
        if operand.type not in _VALUE_TYPES:
            raise self.fail(f"Cannot cast {_type_name(operand.type)} '{self.text(operand)}' to {name}")
        static, convert = _TYPES[name]
        fn, source = operand.fn, self.source

        def cast(context: Context) -> Any:
            value = fn(context)
            try:
                return convert(value)
            except ValueError as exc:
                raise _runtime_error(source, f"Cannot cast {_value_type_name(value)} to {name} ({exc})") from None

        return _Node(cast, static, opener.start, operand.end)

    def negate(self, operand: _Node, start: int) -> _Node:
        self.numeric(operand, "-")
        if type(operand.constant) in _NUMBERS:
            return _constant(-operand.constant, operand.type, start, operand.end)
        fn, source, text = operand.fn, self.source, self.text(operand)

        def negate(context: Context) -> Any:
            value = fn(context)
            if type(value) in _NUMBERS:
                return -value
            if value is None:
                return None
            raise _runtime_error(source, f"Operator '-' needs a number, but '{text}' is {_value_type_name(value)}")

        return _Node(negate, operand.type, start, operand.end)

    # Operators

    def combine(self, op: str, left: _Node, right: _Node) -> _Node:
        start, end = left.start, right.end
        if op in ("||", "&&"):
            left_fn, right_fn = self.boolean(left, f"The left operand of '{op}'"), self.boolean(right, f"The right operand of '{op}'")
            if op == "||":
                return _Node(lambda context: left_fn(context) or right_fn(context), bool, start, end)
            return _Node(lambda context: left_fn(context) and right_fn(context), bool, start, end)
        if op in ("==", "!="):
            return _Node(_equality(op, left, right), bool, start, end)
        if op == "+" and str in (left.type, right.type):
            left_fn, right_fn = left.fn, right.fn
            return _Node(lambda context: _text(left_fn(context)) + _text(right_fn(context)), str, start, end)
        self.numeric(left, op)
        self.numeric(right, op)
        text = self.source[start:end]
        if op in _COMPARISONS:
            return _Node(_comparison(op, left.fn, right.fn, self.source, text), bool, start, end)
        static = _join(left.type, right.type) if {left.type, right.type} <= _NUMBERS else Any
        return _Node(_arithmetic(op, left.fn, right.fn, self.source, text), static, start, end)

    def boolean(self, node: _Node, role: str) -> _Evaluator:
        """A closure that yields the node's value as a bool; C# has no truthiness, so anything else fails."""
        if node.type is bool:
            return node.fn
        if node.type is not Any:
            raise self.fail(f"{role} must be a bool, but '{self.text(node)}' is {_type_name(node.type)}")
        fn, source, text = node.fn, self.source, self.text(node)

        def checked(context: Context) -> bool:
            value = fn(context)
            if type(value) is bool:
                return value
            raise _runtime_error(source, f"{role} must be a bool, but '{text}' is {_value_type_name(value)}")

        return checked

    def numeric(self, node: _Node, op: str) -> None:
        allowed = _NUMERIC_OPERANDS | {_dt.datetime} if op in _COMPARISONS else _NUMERIC_OPERANDS
        if node.type not in allowed:
            raise self.fail(f"Operator '{op}' needs numbers, but '{self.text(node)}' is {_type_name(node.type)}")


def _short_circuit(node: _Node) -> _Node:
    """Close a member chain that contains `?.`: a null met there makes the whole chain null."""
    fn = node.fn

    def chain(context: Context) -> Any:
        try:
            return fn(context)
        except _NullChain:
            return None

    return replace(node, fn=chain)


def _equality(op: str, left: _Node, right: _Node) -> _Evaluator:
    left_fn, right_fn = left.fn, right.fn
    if {left.type, right.type} <= {str, int, float, NoneType}:
        if op == "==":
            return lambda context: left_fn(context) == right_fn(context)
        return lambda context: left_fn(context) != right_fn(context)
    if op == "==":
        return lambda context: _equals(left_fn(context), right_fn(context))
    return lambda context: not _equals(left_fn(context), right_fn(context))


def _comparison(op: str, left: _Evaluator, right: _Evaluator, source: str, text: str) -> _Evaluator:
    """C# relational operators: numbers (or dates); a null operand makes the comparison false."""
    compare = _COMPARISONS[op]

    def comparison(context: Context) -> bool:
        a, b = left(context), right(context)
        if (type(a) in _NUMBERS and type(b) in _NUMBERS) or (isinstance(a, _dt.datetime) and isinstance(b, _dt.datetime)):
            return compare(a, b)
        if a is None or b is None:
            return False
        raise _runtime_error(source, f"Cannot compare {_value_type_name(a)} and {_value_type_name(b)} in '{text}'")

    return comparison


def _arithmetic(op: str, left: _Evaluator, right: _Evaluator, source: str, text: str) -> _Evaluator:
    """C# arithmetic on numbers; `+` concatenates when either value is a string; a null operand gives null."""
    apply = _ARITHMETIC[op]

    def arithmetic(context: Context) -> Any:
        a, b = left(context), right(context)
        if type(a) in _NUMBERS and type(b) in _NUMBERS:
            try:
                return apply(a, b)
            except ZeroDivisionError:
                raise _runtime_error(source, f"Division by zero in '{text}'") from None
        if op == "+" and (type(a) is str or type(b) is str):
            return _text(a) + _text(b)
        if a is None or b is None:
            return None
        raise _runtime_error(source, f"Operator '{op}' cannot take {_value_type_name(a)} and {_value_type_name(b)} in '{text}'")

    return arithmetic
