"""Static types: what the compiler knows of a value before it exists, and the names C# spells them with.

A static type (`CType`) names a *family* whose members the library declares ("string", "number", "list",
"dict", "datetime", …, or "class" for Python classes such as the context's), plus element/key types for
collections so lambdas know their parameter types. `object`, `JToken` and `var` of an unknown value are
DYNAMIC: members on them are checked against the whole library at load and dispatched on the run-time type.

Classes (the context's, and library values such as JProperty or Jwt) expose the PascalCase attributes,
properties and methods they declare with type hints; snake_case and `_private` members are never reachable.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import inspect
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Any


class CType:
    """A static type. Identity matters for the singletons below; collections compare by structure."""

    __slots__ = ("name", "family", "element", "key", "cls")

    def __init__(self, name: str, family: str, element: CType | None = None, key: CType | None = None, cls: type | None = None) -> None:
        self.name = name
        self.family = family
        #: A collection's item type (a dictionary's value type); a lambda's body type.
        self.element = element
        self.key = key
        #: The Python class of a "class" or "enum" family.
        self.cls = cls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CType) and (self is other or (self.name, self.family) == (other.name, other.family))

    def __hash__(self) -> int:
        return hash((self.name, self.family))

    def __repr__(self) -> str:
        return f"CType({self.name})"


DYNAMIC = CType("JToken", "dynamic")
NULL = CType("null", "null")
VOID = CType("void", "void")
CHAR = CType("char", "char")
STRING = CType("string", "string", element=CHAR)
INT = CType("int", "number")
BYTE = CType("byte", "number")
LONG = CType("long", "number")
DOUBLE = CType("double", "number")
BOOL = CType("bool", "bool")
JOBJECT = CType("JObject", "dict", element=DYNAMIC, key=STRING)
JARRAY = CType("JArray", "list", element=DYNAMIC)
DATETIME = CType("DateTime", "datetime")
DATETIMEOFFSET = CType("DateTimeOffset", "datetime")
TIMESPAN = CType("TimeSpan", "timespan")
BYTES = CType("byte[]", "bytes", element=BYTE)
GUID = CType("Guid", "guid")

NUMBERS = (INT, LONG, DOUBLE, BYTE)
INTEGERS = (INT, LONG, BYTE)


def sequence(element: CType, name: str | None = None) -> CType:
    """An array, List<T> or IEnumerable<T> of `element` (all are Python lists at run time)."""
    return CType(name or f"{element.name}[]", "list", element=element)


def dictionary(key: CType, value: CType) -> CType:
    return CType(f"Dictionary<{key.name}, {value.name}>", "dict", element=value, key=key)


def lambda_type(body: CType) -> CType:
    """The type of a lambda argument: its body's type is what Select and friends produce."""
    return CType("lambda", "lambda", element=body)


#: Class name → C# name, for classes registered under another name (the context's `IRequest`, …).
_CLASS_NAMES: dict[type, str] = {}
_CLASS_TYPES: dict[type, CType] = {}


def class_type(cls: type) -> CType:
    """The static type of a Python class's instances (one per class, named as registered)."""
    found = _CLASS_TYPES.get(cls)
    if found is None:
        family = "enum" if issubclass(cls, enum.Enum) else "class"
        found = _CLASS_TYPES[cls] = CType(_CLASS_NAMES.get(cls, cls.__name__), family, cls=cls)
    return found


#: Every type name a policy may write (casts, declarations, `new`, type arguments), short and qualified.
TYPE_NAMES: dict[str, CType] = {}
#: Generic type names and how their type arguments make a type.
GENERIC_TYPES: dict[str, Callable[[list[CType]], CType]] = {}
#: Namespaces a qualified name may start with (`System.Text.Encoding.UTF8`, `Newtonsoft.Json.Linq.JObject`).
NAMESPACES = frozenset(
    {
        "System", "System.Text", "System.Linq", "System.Net", "System.Collections", "System.Collections.Generic",
        "System.Security", "System.Security.Cryptography", "System.Text.RegularExpressions", "System.Globalization",
        "Newtonsoft", "Newtonsoft.Json", "Newtonsoft.Json.Linq",
    }
)  # fmt: skip


def register_type(ctype: CType, *names: str) -> None:
    """Make `names` (short and namespace-qualified) spell `ctype` in policies."""
    for name in names:
        TYPE_NAMES[name] = ctype


def register_class(cls: type, name: str, namespace: str = "") -> CType:
    """Expose a Python class as a C# type: castable to, usable in declarations, its members checked at load."""
    _CLASS_NAMES[cls] = name
    _CLASS_TYPES.pop(cls, None)
    ctype = class_type(cls)
    register_type(ctype, name, *([f"{namespace}.{name}"] if namespace else []))
    return ctype


for _names, _type in (
    (("string", "String", "System.String"), STRING),
    (("char", "Char", "System.Char"), CHAR),
    (("int", "Int32", "System.Int32", "short", "Int16", "uint", "UInt32"), INT),
    (("byte", "Byte", "System.Byte"), BYTE),
    (("long", "Int64", "System.Int64", "ulong", "UInt64"), LONG),
    (("double", "Double", "System.Double", "float", "Single", "decimal", "Decimal", "System.Decimal"), DOUBLE),
    (("bool", "Boolean", "System.Boolean"), BOOL),
    (("object", "Object", "System.Object", "JToken", "JValue", "Newtonsoft.Json.Linq.JToken", "Newtonsoft.Json.Linq.JValue", "dynamic"), DYNAMIC),
    (("JObject", "Newtonsoft.Json.Linq.JObject"), JOBJECT),
    (("JArray", "Newtonsoft.Json.Linq.JArray"), JARRAY),
    (("DateTime", "System.DateTime"), DATETIME),
    (("DateTimeOffset", "System.DateTimeOffset"), DATETIMEOFFSET),
    (("TimeSpan", "System.TimeSpan"), TIMESPAN),
    (("Guid", "System.Guid"), GUID),
):
    register_type(_type, *_names)


def _one(make: Callable[[CType], CType]) -> Callable[[list[CType]], CType]:
    def build(arguments: list[CType]) -> CType:
        if len(arguments) != 1:
            raise ValueError("takes one type argument")
        return make(arguments[0])

    return build


def _two(arguments: list[CType]) -> CType:
    if len(arguments) != 2:
        raise ValueError("takes two type arguments")
    return dictionary(arguments[0], arguments[1])


def _collection(name: str) -> Callable[[list[CType]], CType]:
    return _one(lambda element: sequence(element, f"{name}<{element.name}>"))


for _generic in ("List", "IList", "IEnumerable", "ICollection", "IReadOnlyList", "IReadOnlyCollection"):
    GENERIC_TYPES[_generic] = _collection(_generic)
for _generic in ("Dictionary", "IDictionary", "IReadOnlyDictionary"):
    GENERIC_TYPES[_generic] = _two
GENERIC_TYPES["Nullable"] = _one(lambda element: element)


def array_of(element: CType) -> CType:
    """`T[]`: a byte array is `byte[]` (Python bytes); any other array is a list."""
    return BYTES if element is BYTE else sequence(element)


def from_hint(hint: Any) -> CType:
    """The static type of a Python annotation: `Optional[X]` is X (null is checked at run time), JToken is dynamic."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is UnionType:
        options = [arg for arg in typing.get_args(hint) if arg is not NoneType]
        return from_hint(options[0]) if len(options) == 1 else DYNAMIC
    if origin is list:
        arguments = typing.get_args(hint)
        return sequence(from_hint(arguments[0])) if arguments else JARRAY
    if origin is tuple:
        return DYNAMIC
    if origin is dict:
        arguments = typing.get_args(hint)
        return dictionary(from_hint(arguments[0]), from_hint(arguments[1])) if arguments else JOBJECT
    if hint is None or hint is NoneType:
        return VOID
    return _HINTS.get(hint) or (class_type(hint) if isinstance(hint, type) else DYNAMIC)


_HINTS: dict[Any, CType] = {
    str: STRING, int: INT, float: DOUBLE, bool: BOOL, dict: JOBJECT, list: JARRAY, Any: DYNAMIC, object: DYNAMIC,
    _dt.datetime: DATETIME, _dt.timedelta: TIMESPAN, bytes: BYTES, uuid.UUID: GUID,
}  # fmt: skip


def join(first: CType, second: CType) -> CType:
    """The static type of a value that is one of two branches (`?:`, `??`, an implicitly typed array)."""
    if first == second or second is NULL:
        return first
    if first is NULL:
        return second
    if first in NUMBERS and second in NUMBERS:
        return DOUBLE if DOUBLE in (first, second) else LONG if LONG in (first, second) else INT
    if first.family == "list" and second.family == "list":
        return JARRAY
    return DYNAMIC


@dataclass(frozen=True)
class Member:
    """A member a class exposes to expressions: an attribute, a property or a method."""

    #: The attribute's type, or the method's return type.
    type: CType
    #: A method's parameters without `self` and `T`; None for attributes and properties.
    parameters: tuple[inspect.Parameter, ...] | None = None
    #: Each parameter's static type.
    hints: Mapping[str, CType] = field(default_factory=dict)
    #: Takes a type argument `<T>` (passed as the keyword `T`, the type's C# name).
    generic: bool = False
    #: The declared return annotation is JToken: a generic call's result has the type argument's type.
    returns_dynamic: bool = False
    #: Has a trailing `out` parameter: the method returns (result, out value).
    out: CType | None = None

    def usage(self, name: str) -> str:
        arguments = ", ".join(p.name if p.default is p.empty else f"[{p.name}]" for p in self.parameters or ())
        if self.out is not None:
            arguments += (", " if arguments else "") + "out value"
        return f"{name}{'<T>' if self.generic else ''}({arguments})"


def _is_public(name: str) -> bool:
    """PascalCase only: snake_case members are the gateway's own API and `_private` ones are never reachable."""
    return name[:1].isupper() and "_" not in name


def _method(function: Callable[..., Any], hints: Mapping[str, Any]) -> Member:
    parameters = list(inspect.signature(function).parameters.values())[1:]
    usable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    kept = tuple(p for p in parameters if p.name != "T" and p.kind in usable)
    out = _out_type(function.__name__, hints["return"])
    return Member(
        type=BOOL if out is not None else from_hint(hints["return"]),
        parameters=kept,
        hints={p.name: from_hint(hints.get(p.name, Any)) for p in kept},
        generic=any(p.name == "T" and p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters),
        returns_dynamic=hints["return"] is Any or from_hint(hints["return"]) is DYNAMIC,
        out=out,
    )


def _out_type(name: str, returns: Any) -> CType | None:
    """`TryGetValue(name) -> tuple[bool, T]` is C#'s `TryGetValue(name, out T value)`: T, else None."""
    arguments = typing.get_args(returns)
    if name.startswith("Try") and typing.get_origin(returns) is tuple and len(arguments) == 2 and arguments[0] is bool:
        return from_hint(arguments[1])
    return None


@functools.cache
def members(cls: type) -> dict[str, Member]:
    """The members of a class visible to expressions: its annotated PascalCase attributes and methods."""
    found = {name: Member(from_hint(hint)) for name, hint in typing.get_type_hints(cls).items() if _is_public(name)}
    for name in dir(cls):
        if not _is_public(name) or name in found:
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, property) and attribute.fget is not None:
            hints = typing.get_type_hints(attribute.fget)
            if "return" in hints:
                found[name] = Member(from_hint(hints["return"]))
        elif inspect.isfunction(attribute):
            hints = typing.get_type_hints(attribute)
            if "return" in hints:
                found[name] = _method(attribute, hints)
    return found


@functools.cache
def indexer(cls: type) -> Member | None:
    """A class's `obj[key]`, declared as a typed `__getitem__`."""
    function = inspect.getattr_static(cls, "__getitem__", None)
    if not inspect.isfunction(function):
        return None
    hints = typing.get_type_hints(function)
    return _method(function, hints) if "return" in hints else None


@functools.cache
def enumerable(cls: type) -> CType | None:
    """The item type `foreach` sees on a class that declares `_enumerate() -> list[T]`; None if not enumerable."""
    function = inspect.getattr_static(cls, "_enumerate", None)
    if not inspect.isfunction(function):
        return None
    return from_hint(typing.get_type_hints(function)["return"]).element


def accepts(parameter: CType, argument: CType) -> bool:
    """Whether an argument of static type `argument` may go to `parameter`; dynamic and null ones may."""
    primitives = (STRING, INT, LONG, DOUBLE, BOOL)
    if argument not in primitives or parameter not in primitives:
        return True
    return argument == parameter or (parameter in NUMBERS and argument in NUMBERS and parameter is not INT)
