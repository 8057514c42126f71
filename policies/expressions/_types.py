"""What expressions may reach on the context: the static member model, read from type hints."""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Any

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
