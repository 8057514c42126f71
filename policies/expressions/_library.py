"""The declared .NET surface: which members, static members and constructors expressions may use.

Library modules (`_lib_*`, `_linq`) fill these tables when imported. Members of Python builtin values (str,
int, list, dict, datetime, …) live here by *family*; Python classes (JProperty, Regex, Jwt, the context's
classes) declare their members themselves with type hints (see `_types.members`). Nothing else is reachable:
an expression naming anything outside these tables fails to load.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.expressions._types import DYNAMIC, INT, CType, register_class, register_type

#: How a member's result type follows from the receiver's type, the arguments' types and the type argument.
ReturnRule = Callable[[CType, list[CType], "CType | None"], CType]
#: The parameter types of a lambda argument, from the receiver's type and the arguments before it.
LambdaRule = Callable[[CType, list[CType]], tuple[CType, ...]]


@dataclass(frozen=True, slots=True)
class Builtin:
    """One member (or overload set) of the library.

    Instance members are called `impl(receiver, *arguments)`, static ones `impl(*arguments)`; a generic one
    also gets `T=<CType>`.
    """

    impl: Callable[..., Any]
    returns: CType | ReturnRule
    #: (fewest, most) arguments, `most` None for any number; None for a property.
    arity: tuple[int, int | None] | None = None
    #: A method that may also be read as a property (`list.Count` and LINQ `Count()`).
    prop: bool = False
    lambdas: LambdaRule | None = None
    generic: bool = False
    #: Walks its receiver (or first argument): one step per item is charged before the call, and the time
    #: bound is checked after it.
    costly: bool = False
    #: The type of a trailing `out` argument; impl then returns (result, out value).
    out: CType | None = None
    #: A static property whose value never changes: compiled as a constant.
    fixed: bool = False

    def result(self, receiver: CType, arguments: list[CType], type_argument: CType | None) -> CType:
        return self.returns if isinstance(self.returns, CType) else self.returns(receiver, arguments, type_argument)


#: family → member name → Builtin, for values whose Python type is a builtin (str, int, list, dict, …).
INSTANCE: dict[str, dict[str, Builtin]] = {}
#: Static class key → member name → Builtin (`String.Join`, `Convert.ToBase64String`, `DateTime.UtcNow`).
STATIC: dict[str, dict[str, Builtin]] = {}
#: Every spelling of a static class (`string`, `String`, `System.String`) → its key in STATIC.
STATIC_NAMES: dict[str, str] = {}
#: Type key → constructor; `returns` gets the constructed type as its type argument.
CONSTRUCTORS: dict[str, Builtin] = {}


def method(impl: Callable[..., Any], returns: CType | ReturnRule, fewest: int = 0, most: int | None = -1, **options: Any) -> Builtin:
    """A method taking `fewest` to `most` arguments (`most` -1: exactly `fewest`; None: any number)."""
    return Builtin(impl, returns, (fewest, fewest if most == -1 else most), **options)


def prop(impl: Callable[..., Any], returns: CType | ReturnRule) -> Builtin:
    return Builtin(impl, returns)


def instance(family: str, **builtins: Builtin) -> None:
    INSTANCE.setdefault(family, {}).update(builtins)


def static(key: str, names: tuple[str, ...], **builtins: Builtin) -> None:
    """Declare static members of `key`, reachable under each of `names` (short and qualified)."""
    STATIC.setdefault(key, {}).update(builtins)
    for name in (key, *names):
        STATIC_NAMES[name] = key


def constant(value: Any, returns: CType) -> Builtin:
    """A static property whose value never changes (`int.MaxValue`, `StringComparison.Ordinal`)."""
    return Builtin(lambda: value, returns, fixed=True)


def enum_type(cls: type[enum.Enum], names: tuple[str, ...]) -> CType:
    """Expose an Enum: its members as static constants (`StringComparison.Ordinal`), its names as a type."""
    ctype = register_class(cls, names[0])
    register_type(ctype, *names[1:])
    static(names[0], names[1:], **{name.rstrip("_"): constant(member, ctype) for name, member in cls.__members__.items()})
    return ctype


def same(receiver: CType, arguments: list[CType], type_argument: CType | None) -> CType:
    """Return rule: the receiver's own type (`Trim` on a string, `Add` on a DateTime)."""
    return receiver


def element(receiver: CType, arguments: list[CType], type_argument: CType | None) -> CType:
    """Return rule: the receiver's item type (`First()`, `list[i]`)."""
    return receiver.element or DYNAMIC


def type_argument(receiver: CType, arguments: list[CType], type_argument: CType | None) -> CType:
    """Return rule: the type argument (`Value<int>()`, `JsonConvert.DeserializeObject<JObject>(…)`), else dynamic."""
    return type_argument or DYNAMIC


def items(receiver: CType, arguments: list[CType]) -> tuple[CType, ...]:
    """Lambda rule: one parameter, the receiver's item type, and the item's index (`Select((x, i) => …)`)."""
    return (receiver.element or DYNAMIC, INT)
