"""LINQ and collection members: `Where`, `Select`, `Any`, `First(OrDefault)`, `OrderBy`, `ToList`, … on arrays,
lists, JArrays, strings (their chars) and dictionaries (their KeyValuePairs), plus List<T>'s own `Add`, `Remove`,
… and the `Array`/`Enumerable` static helpers.

LINQ here is eager: each call produces its list at once (C# defers until enumerated), which only shows when
a lambda reads a variable changed between building a query and using it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from policies.context import KeyValuePair
from policies.expressions._errors import DotNetError
from policies.expressions._lib_json import convert_to, token
from policies.expressions._library import INSTANCE, element, instance, items, method, prop, same, static
from policies.expressions._limits import MAX_ITEMS, sized
from policies.expressions._runtime import equals, in_range, instance_test
from policies.expressions._types import BOOL, DOUBLE, DYNAMIC, INT, LONG, VOID, CType, class_type, dictionary, sequence

PAIR = class_type(KeyValuePair)
_VALUES = frozenset({str, int, float, bool, _dt.datetime, _dt.timedelta, uuid.UUID})


def elements(receiver: Any) -> list[Any]:
    """The items `foreach` and LINQ see: a list's items, a string's chars, a dictionary's KeyValuePairs."""
    if type(receiver) is list:
        return receiver
    kind = type(receiver)
    if kind is str:
        return list(receiver)
    if kind is dict:
        return [KeyValuePair(key, value) for key, value in receiver.items()]
    enumerate_ = getattr(receiver, "_enumerate", None)
    if enumerate_ is None:
        raise DotNetError("InvalidOperationException", "The value is not a collection.")
    return list(enumerate_())


def _item_type(receiver: CType) -> CType:
    return PAIR if receiver.family == "dict" else receiver.element or DYNAMIC


def _lambda_items(receiver: CType, arguments: list[CType]) -> tuple[CType, ...]:
    return (_item_type(receiver), INT)


def _sequence_of_items(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    return receiver if receiver.family == "list" else sequence(_item_type(receiver))


def _one_item(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    return _item_type(receiver)


def _selected(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    body = arguments[0].element if arguments and arguments[0].family == "lambda" else None
    return sequence(body or DYNAMIC)


def _key(value: Any) -> Any:
    """A hashable stand-in with C# equality: values by value (a bool never equals a number), objects by reference."""
    return (type(value) is bool, value) if type(value) in _VALUES else ("ref", id(value))


def _order_key(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


def _sorted(values: list[Any], key: Callable[..., Any] | None, descending: bool) -> list[Any]:
    try:
        return sorted(values, key=lambda v: _order_key(key(v) if key else v), reverse=descending)
    except TypeError:
        raise DotNetError("InvalidOperationException", "Failed to compare two elements in the array.") from None


def _matching(receiver: Any, predicate: Callable[..., Any] | None) -> list[Any]:
    values = elements(receiver)
    return values if predicate is None else [v for v in values if predicate(v) is True]


def _pick(position: int, default: bool, single: bool = False) -> Callable[..., Any]:
    def pick(receiver: Any, predicate: Callable[..., Any] | None = None) -> Any:
        found = _matching(receiver, predicate)
        if single and len(found) > 1:
            raise DotNetError("InvalidOperationException", "Sequence contains more than one element.")
        if found:
            return found[position]
        if default:
            return None
        message = "Sequence contains no matching element." if predicate else "Sequence contains no elements."
        raise DotNetError("InvalidOperationException", message)

    return pick


def _element_at(default: bool) -> Callable[..., Any]:
    def at(receiver: Any, index: int) -> Any:
        values = elements(receiver)
        if 0 <= index < len(values):
            return values[index]
        if default:
            return None
        raise DotNetError("ArgumentOutOfRangeException", "Index was out of range. Must be non-negative and less than the size of the collection.")

    return at


def _numbers(receiver: Any, selector: Callable[..., Any] | None) -> list[int | float]:
    values = [selector(v) for v in elements(receiver)] if selector else elements(receiver)
    if any(type(v) not in (int, float) for v in values if v is not None):
        raise DotNetError("InvalidOperationException", "The sequence holds values that are not numbers.")
    return [v for v in values if v is not None]


def _sum(receiver: Any, selector: Callable[..., Any] | None = None) -> Any:
    values = _numbers(receiver, selector)
    total = sum(values)
    return in_range(total, LONG) if type(total) is int else total


def _extreme(pick: Callable[..., Any]) -> Callable[..., Any]:
    def extreme(receiver: Any, selector: Callable[..., Any] | None = None) -> Any:
        values = [selector(v) for v in elements(receiver)] if selector else elements(receiver)
        present = [v for v in values if v is not None]
        if not present:
            if values:
                return None
            raise DotNetError("InvalidOperationException", "Sequence contains no elements.")
        try:
            return pick(present)
        except TypeError:
            raise DotNetError("InvalidOperationException", "Failed to compare two elements in the array.") from None

    return extreme


def _average(receiver: Any, selector: Callable[..., Any] | None = None) -> float:
    values = _numbers(receiver, selector)
    if not values:
        raise DotNetError("InvalidOperationException", "Sequence contains no elements.")
    return sum(values) / len(values)


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    result = []
    for value in values:
        key = _key(value)
        if key not in seen:
            seen.add(key)
            result.append(value)
    return result


def _contains(receiver: Any, item: Any, *comparer: Any) -> bool:
    return any(equals(candidate, item) for candidate in elements(receiver))


def _index_of(receiver: list[Any], item: Any, start: int = 0) -> int:
    return next((i for i in range(start, len(receiver)) if equals(receiver[i], item)), -1)


def _to_dictionary(receiver: Any, key: Callable[..., Any], value: Callable[..., Any] | None = None) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for item in elements(receiver):
        name = key(item)
        if name in result:
            raise DotNetError("ArgumentException", "An item with the same key has already been added.")
        result[name] = value(item) if value else item
    return result


def _dictionary_type(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    keys = arguments[0].element if arguments else None
    values = arguments[1].element if len(arguments) > 1 else _item_type(receiver)
    return dictionary(keys or DYNAMIC, values or DYNAMIC)


def _add(receiver: list[Any], item: Any) -> None:
    if len(receiver) >= MAX_ITEMS:
        sized(receiver + [item])
    receiver.append(token(item))


def _add_range(receiver: list[Any], other: Any) -> None:
    for item in elements(other):
        _add(receiver, item)


def _insert(receiver: list[Any], index: int, item: Any) -> None:
    if not 0 <= index <= len(receiver):
        raise DotNetError("ArgumentOutOfRangeException", "Index must be within the bounds of the List.")
    receiver.insert(index, token(item))
    sized(receiver)


def _remove(receiver: list[Any], item: Any) -> bool:
    index = _index_of(receiver, item)
    if index >= 0:
        del receiver[index]
    return index >= 0


def _remove_at(receiver: list[Any], index: int) -> None:
    if not 0 <= index < len(receiver):
        raise DotNetError("ArgumentOutOfRangeException", "Index was out of range.")
    del receiver[index]


def _remove_all(receiver: list[Any], predicate: Callable[..., Any]) -> int:
    kept = [v for v in receiver if predicate(v) is not True]
    removed = len(receiver) - len(kept)
    receiver[:] = kept
    return removed


def _sort(receiver: list[Any], *comparison: Any) -> None:
    receiver[:] = _sorted(receiver, None, False)


def _cast(receiver: Any, *, T: CType) -> list[Any]:  # noqa: N803 - the type argument
    return [convert_to(v, T) if v is not None else None for v in elements(receiver)]


def _of_type(receiver: Any, *, T: CType) -> list[Any]:  # noqa: N803
    test = instance_test(T)
    return [v for v in elements(receiver) if test(v)]


def _typed(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    return sequence(type_arg or DYNAMIC)


_LINQ = dict(
    Where=method(lambda r, p: [v for i, v in enumerate(elements(r)) if p(v, i) is True], _sequence_of_items, 1, lambdas=_lambda_items),
    Select=method(lambda r, f: sized([f(v, i) for i, v in enumerate(elements(r))]), _selected, 1, lambdas=_lambda_items),
    SelectMany=method(
        lambda r, f: sized([x for v in elements(r) for x in elements(f(v))]),
        lambda r, a, t: sequence((a[0].element.element if a and a[0].element else None) or DYNAMIC),
        1,
        lambdas=_lambda_items,
    ),
    Any=method(lambda r, p=None: bool(_matching(r, p)), BOOL, 0, 1, lambdas=_lambda_items),
    All=method(lambda r, p: all(p(v) is True for v in elements(r)), BOOL, 1, lambdas=_lambda_items),
    Count=method(lambda r, p=None: len(_matching(r, p)), INT, 0, 1, prop=True, lambdas=_lambda_items),
    LongCount=method(lambda r, p=None: len(_matching(r, p)), LONG, 0, 1, lambdas=_lambda_items),
    Sum=method(_sum, lambda r, a, t: (a[0].element if a else _item_type(r)) or DOUBLE, 0, 1, lambdas=_lambda_items),
    Min=method(_extreme(min), lambda r, a, t: (a[0].element if a else _item_type(r)) or DYNAMIC, 0, 1, lambdas=_lambda_items),
    Max=method(_extreme(max), lambda r, a, t: (a[0].element if a else _item_type(r)) or DYNAMIC, 0, 1, lambdas=_lambda_items),
    Average=method(_average, DOUBLE, 0, 1, lambdas=_lambda_items),
    First=method(_pick(0, False), _one_item, 0, 1, prop=True, lambdas=_lambda_items),
    FirstOrDefault=method(_pick(0, True), _one_item, 0, 1, lambdas=_lambda_items),
    Last=method(_pick(-1, False), _one_item, 0, 1, prop=True, lambdas=_lambda_items),
    LastOrDefault=method(_pick(-1, True), _one_item, 0, 1, lambdas=_lambda_items),
    Single=method(_pick(0, False, single=True), _one_item, 0, 1, lambdas=_lambda_items),
    SingleOrDefault=method(_pick(0, True, single=True), _one_item, 0, 1, lambdas=_lambda_items),
    ElementAt=method(_element_at(False), _one_item, 1),
    ElementAtOrDefault=method(_element_at(True), _one_item, 1),
    OrderBy=method(lambda r, f: _sorted(elements(r), f, False), _sequence_of_items, 1, lambdas=_lambda_items),
    OrderByDescending=method(lambda r, f: _sorted(elements(r), f, True), _sequence_of_items, 1, lambdas=_lambda_items),
    ToArray=method(lambda r: list(elements(r)), _sequence_of_items, 0),
    ToList=method(lambda r: list(elements(r)), _sequence_of_items, 0),
    ToDictionary=method(_to_dictionary, _dictionary_type, 1, 2, lambdas=_lambda_items),
    Skip=method(lambda r, n: elements(r)[max(n, 0) :], _sequence_of_items, 1),
    Take=method(lambda r, n: elements(r)[: max(n, 0)], _sequence_of_items, 1),
    SkipWhile=method(lambda r, p: _skip_while(elements(r), p), _sequence_of_items, 1, lambdas=_lambda_items),
    TakeWhile=method(lambda r, p: _take_while(elements(r), p), _sequence_of_items, 1, lambdas=_lambda_items),
    Distinct=method(lambda r: _distinct(elements(r)), _sequence_of_items, 0),
    Reverse=method(lambda r: elements(r)[::-1], _sequence_of_items, 0),
    Concat=method(lambda r, other: sized(elements(r) + elements(other)), _sequence_of_items, 1),
    Union=method(lambda r, other: _distinct(elements(r) + elements(other)), _sequence_of_items, 1),
    Intersect=method(lambda r, other: _distinct(v for v in elements(r) if _key(v) in {_key(o) for o in elements(other)}), _sequence_of_items, 1),
    Except=method(lambda r, other: _distinct(v for v in elements(r) if _key(v) not in {_key(o) for o in elements(other)}), _sequence_of_items, 1),
    Append=method(lambda r, item: sized([*elements(r), item]), _sequence_of_items, 1),
    Prepend=method(lambda r, item: sized([item, *elements(r)]), _sequence_of_items, 1),
    SequenceEqual=method(lambda r, other: len(elements(r)) == len(elements(other)) and all(map(equals, elements(r), elements(other))), BOOL, 1),
    Cast=method(_cast, _typed, 0, generic=True),
    OfType=method(_of_type, _typed, 0, generic=True),
    Contains=method(_contains, BOOL, 1, 2),
)
_LINQ = {name: dataclasses.replace(builtin, costly=True) for name, builtin in _LINQ.items()}


def _skip_while(values: list[Any], predicate: Callable[..., Any]) -> list[Any]:
    index = next((i for i, v in enumerate(values) if predicate(v, i) is not True), len(values))
    return values[index:]


def _take_while(values: list[Any], predicate: Callable[..., Any]) -> list[Any]:
    index = next((i for i, v in enumerate(values) if predicate(v, i) is not True), len(values))
    return values[:index]


for _family in ("list", "dict", "string"):
    instance(_family, **{name: builtin for name, builtin in _LINQ.items() if name not in INSTANCE.get(_family, {})})
# A string's Count, First and Last are LINQ methods only (a JArray also has them as properties).
instance("string", **{name: dataclasses.replace(_LINQ[name], prop=False) for name in ("Count", "First", "Last")})
instance(
    "list",
    Length=prop(len, INT),
    Add=method(_add, VOID, 1),
    AddRange=method(_add_range, VOID, 1, costly=True),
    Insert=method(_insert, VOID, 2),
    Remove=method(_remove, BOOL, 1, costly=True),
    RemoveAt=method(_remove_at, VOID, 1),
    RemoveAll=method(_remove_all, INT, 1, costly=True, lambdas=_lambda_items),
    Clear=method(list.clear, VOID, 0),
    IndexOf=method(_index_of, INT, 1, 2, costly=True),
    Find=method(lambda r, p: next((v for v in r if p(v) is True), None), element, 1, costly=True, lambdas=items),
    FindAll=method(lambda r, p: [v for v in r if p(v) is True], same, 1, costly=True, lambdas=items),
    FindIndex=method(lambda r, p: next((i for i, v in enumerate(r) if p(v) is True), -1), INT, 1, costly=True, lambdas=items),
    Exists=method(lambda r, p: any(p(v) is True for v in r), BOOL, 1, costly=True, lambdas=items),
    TrueForAll=method(lambda r, p: all(p(v) is True for v in r), BOOL, 1, costly=True, lambdas=items),
    Sort=method(_sort, VOID, 0, 1, costly=True),
)


def _first_items(receiver: CType, arguments: list[CType]) -> tuple[CType, ...]:
    return ((arguments[0].element if arguments else None) or DYNAMIC, INT)


def _range(start: int, count: int) -> list[int]:
    if count < 0 or count > MAX_ITEMS:
        raise DotNetError("ArgumentOutOfRangeException", f"count must be between 0 and {MAX_ITEMS:,} here.")
    return list(range(start, start + count))


def _repeat(value: Any, count: int) -> list[Any]:
    if count < 0 or count > MAX_ITEMS:
        raise DotNetError("ArgumentOutOfRangeException", f"count must be between 0 and {MAX_ITEMS:,} here.")
    return [value] * count


static(
    "Array",
    ("System.Array",),
    Exists=method(lambda a, p: any(p(v) is True for v in elements(a)), BOOL, 2, costly=True, lambdas=_first_items),
    TrueForAll=method(lambda a, p: all(p(v) is True for v in elements(a)), BOOL, 2, costly=True, lambdas=_first_items),
    Find=method(
        lambda a, p: next((v for v in elements(a) if p(v) is True), None),
        lambda r, a, t: (a[0].element if a else None) or DYNAMIC,
        2,
        costly=True,
        lambdas=_first_items,
    ),
    FindAll=method(
        lambda a, p: [v for v in elements(a) if p(v) is True], lambda r, a, t: a[0] if a else DYNAMIC, 2, costly=True, lambdas=_first_items
    ),
    FindIndex=method(lambda a, p: next((i for i, v in enumerate(elements(a)) if p(v) is True), -1), INT, 2, costly=True, lambdas=_first_items),
    IndexOf=method(lambda a, item: _index_of(elements(a), item), INT, 2, costly=True),
    Reverse=method(lambda a: a.reverse(), VOID, 1, costly=True),
    Sort=method(_sort, VOID, 1, costly=True),
    Empty=method(lambda *, T: [], _typed, 0, generic=True),
)
static(
    "Enumerable",
    ("System.Linq.Enumerable",),
    Range=method(_range, sequence(INT), 2),
    Repeat=method(_repeat, lambda r, a, t: sequence(a[0] if a else DYNAMIC), 2),
    Empty=method(lambda *, T: [], _typed, 0, generic=True),
)
static("KeyValuePair", ("System.Collections.Generic.KeyValuePair",), Create=method(KeyValuePair, PAIR, 2))
