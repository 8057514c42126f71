"""C# operators on static types: which combinations compile, what they produce, and the function that applies
them. Integers wrap as C#'s unchecked arithmetic does (int at 32 bits, long and JSON integers at 64), so no
loop can grow a number without bound. A null operand makes arithmetic null and comparisons false (lifted
operators); `+` with a string concatenates."""

from __future__ import annotations

import datetime as _dt
import operator
from collections.abc import Callable
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._lib_time import shift
from policies.expressions._limits import MAX_TEXT_CHARS, sized
from policies.expressions._runtime import converter, divide, equals, remainder, text, type_name, wrap32, wrap64
from policies.expressions._types import (
    BOOL,
    BYTE,
    CHAR,
    DATETIME,
    DATETIMEOFFSET,
    DOUBLE,
    DYNAMIC,
    INT,
    INTEGERS,
    LONG,
    NULL,
    NUMBERS,
    STRING,
    TIMESPAN,
    CType,
)  # fmt: skip

Apply = Callable[[Any, Any], Any]
_INTEGER_OPS: dict[str, Apply] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": divide, "%": remainder,
    "&": operator.and_, "|": operator.or_, "^": operator.xor,
}  # fmt: skip
_DOUBLE_OPS: dict[str, Apply] = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": divide, "%": remainder}
_UNARY: dict[str, Callable[[Any], Any]] = {"-": operator.neg, "+": operator.pos, "~": operator.invert}
_COMPARE: dict[str, Apply] = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
_NUMERIC = (int, float)
_DATES = (DATETIME, DATETIMEOFFSET)


def _temporal(op: str, a: Any, b: Any) -> Any:
    """Date and time-span arithmetic; None when the operands are not dates or spans."""
    ta, tb = type(a), type(b)
    if op == "+" and ta is _dt.datetime and tb is _dt.timedelta:
        return shift(a, b)
    if op == "+" and ta is _dt.timedelta and tb is _dt.datetime:
        return shift(b, a)
    if op == "-" and ta is _dt.datetime and tb is _dt.timedelta:
        return shift(a, -b)
    if op == "-" and ta is _dt.datetime and tb is _dt.datetime:
        return a - b
    if op in "+-" and ta is _dt.timedelta and tb is _dt.timedelta:
        return a + b if op == "+" else a - b
    return None


def dynamic(op: str) -> Apply:
    """An operator decided on the operands' run-time types (JSON values, `object`)."""
    integer, double, compare = _INTEGER_OPS.get(op), _DOUBLE_OPS.get(op), _COMPARE.get(op)

    def apply(a: Any, b: Any) -> Any:
        ta, tb = type(a), type(b)
        if ta is int and tb is int and integer is not None:
            return wrap64(integer(a, b))
        if ta in _NUMERIC and tb in _NUMERIC:
            if compare is not None:
                return compare(a, b)
            if double is not None:
                return double(float(a), b)
        if compare is not None:
            if a is None or b is None:
                return False
            if ta is tb and ta in (_dt.datetime, _dt.timedelta, str):
                return compare(a, b)
            raise DotNetError("InvalidOperationException", f"Cannot compare {type_name(a)} and {type_name(b)}")
        if op == "+" and (ta is str or tb is str):
            return concat(text(a), text(b))
        if ta is bool and tb is bool and op in "&|^":
            return _INTEGER_OPS[op](a, b)
        if a is None or b is None:
            return None
        result = _temporal(op, a, b)
        if result is None:
            raise DotNetError("InvalidOperationException", f"Operator '{op}' cannot take {type_name(a)} and {type_name(b)}")
        return result

    return apply


def concat(a: str, b: str) -> str:
    """String `+`, bounded like every string an expression builds."""
    result = a + b
    if len(result) > MAX_TEXT_CHARS:
        sized(result)
    return result


def _number_kind(ctype: CType) -> CType | None:
    """The arithmetic type a static type takes part as: char, byte and int are int."""
    if ctype in (INT, BYTE, CHAR):
        return INT
    return ctype if ctype in (LONG, DOUBLE) else None


def _promote(left: CType, right: CType) -> CType:
    kinds = {_number_kind(left), _number_kind(right)}
    return DOUBLE if DOUBLE in kinds else LONG if LONG in kinds else INT


def _chars(apply: Apply, left: CType, right: CType) -> Apply:
    """Chars take part in arithmetic and comparisons as their character codes."""
    if left is CHAR and right is CHAR:
        return lambda a, b: apply(ord(a), ord(b))
    if left is CHAR:
        return lambda a, b: apply(ord(a), b)
    if right is CHAR:
        return lambda a, b: apply(a, ord(b))
    return apply


def binary(op: str, left: CType, right: CType) -> tuple[CType, Apply, Apply]:
    """(result type, fast apply for the static types, general apply) or raises ValueError with the problem."""
    if op in ("==", "!="):
        compare = _equality(op, left, right)
        return BOOL, compare, compare
    slow = dynamic(op)
    if DYNAMIC in (left, right) or NULL in (left, right):
        if op in _COMPARE:
            return BOOL, slow, slow
        if op == "+" and STRING in (left, right):
            return STRING, slow, slow
        return DYNAMIC, slow, slow
    if op in _COMPARE:
        if _number_kind(left) and _number_kind(right):
            fast = _chars(_COMPARE[op], left, right)
            return BOOL, fast, slow
        if left == right and left in (*_DATES, TIMESPAN) or {left, right} <= set(_DATES):
            return BOOL, _COMPARE[op], slow
        raise ValueError(f"Operator '{op}' cannot compare {left.name} and {right.name}")
    if op == "+" and STRING in (left, right):
        if left in (STRING, CHAR) and right in (STRING, CHAR):
            return STRING, concat, slow
        if left in (STRING, CHAR):
            return STRING, lambda a, b: concat(a, text(b)), slow
        return STRING, lambda a, b: concat(text(a), b), slow
    if op in "&|^" and left is BOOL and right is BOOL:
        return BOOL, _INTEGER_OPS[op], slow
    if op in "&|^" and left == right and left.family == "enum":
        return left, _INTEGER_OPS[op], slow
    if _number_kind(left) and _number_kind(right):
        result = _promote(left, right)
        if result is DOUBLE:
            if op in "&|^":
                raise ValueError(f"Operator '{op}' cannot take {left.name} and {right.name}")
            return DOUBLE, _chars(_DOUBLE_OPS[op], left, right), slow
        wrap: Callable[[int], int] = wrap32 if result is INT else wrap64
        integer = _INTEGER_OPS[op]
        return result, _chars(lambda a, b: wrap(integer(a, b)), left, right), slow
    temporal = _temporal_type(op, left, right)
    if temporal is not None:
        return temporal, slow, slow
    raise ValueError(f"Operator '{op}' cannot take {left.name} and {right.name}")


def _temporal_type(op: str, left: CType, right: CType) -> CType | None:
    if op == "-" and left in _DATES and right in _DATES:
        return TIMESPAN
    if op in "+-" and left in _DATES and right is TIMESPAN:
        return left
    if op == "+" and left is TIMESPAN and right in _DATES:
        return right
    if op in "+-" and left is TIMESPAN and right is TIMESPAN:
        return TIMESPAN
    return None


_SAME_KIND = (frozenset({STRING, CHAR, NULL}), frozenset({INT, LONG, DOUBLE, BYTE, NULL}), frozenset({BOOL, NULL}))


def _equality(op: str, left: CType, right: CType) -> Apply:
    """`==` compares values of the same kind directly, anything else with C#'s rules (`equals`)."""
    compare: Apply
    if CHAR in (left, right) and {left, right} & set(NUMBERS):
        compare = _chars(operator.eq, left, right)
    elif any({left, right} <= kind for kind in _SAME_KIND):
        compare = operator.eq
    else:
        compare = equals
    if op == "==":
        return compare
    return lambda a, b: not compare(a, b)


def unary(op: str, operand: CType) -> tuple[CType, Callable[[Any], Any]]:
    """`!`, `-`, `+`, `~`: (result type, apply) or raises ValueError with the problem."""
    if op == "!":
        if operand not in (BOOL, DYNAMIC):
            raise ValueError(f"The operand of '!' must be a bool, not {operand.name}")
        return BOOL, _not
    kind = _number_kind(operand)
    if operand is DYNAMIC or operand is NULL:
        return DYNAMIC, _dynamic_unary(op)
    if op == "-" and operand is TIMESPAN:
        return TIMESPAN, operator.neg
    if kind is None or (op == "~" and kind is DOUBLE):
        raise ValueError(f"Operator '{op}' needs a number, not {operand.name}")
    wrap: Callable[[Any], Any] = wrap32 if kind is INT else wrap64 if kind is LONG else float
    apply = _UNARY[op]
    if operand is CHAR:
        return kind, lambda value: wrap(apply(ord(value)))
    return kind, lambda value: None if value is None else wrap(apply(value))


def _not(value: Any) -> bool:
    if type(value) is bool:
        return not value
    raise DotNetError("InvalidCastException", f"The operand of '!' must be a bool, not {type_name(value)}")


def _dynamic_unary(op: str) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is int:
            return wrap64(_UNARY[op](value))
        if type(value) is float and op != "~":
            return -value if op == "-" else value
        if type(value) is _dt.timedelta and op == "-":
            return -value
        raise DotNetError("InvalidOperationException", f"Operator '{op}' needs a number, not {type_name(value)}")

    return apply


def implicit(target: CType, source: CType) -> Callable[[Any], Any] | None:
    """How a value of static type `source` becomes a `target` local (declaration, assignment, return type):
    None when C# would refuse it. Dynamic values convert at run time like a cast."""
    if target == source or target is DYNAMIC:
        return identity
    if source is DYNAMIC:
        return converter(target, nullable=True)
    if source is NULL:
        return identity if target not in (*NUMBERS, BOOL, CHAR) else None
    if target in INTEGERS and source in INTEGERS:
        return identity if target is not INT or source is not LONG else None
    if target is DOUBLE and source in (*INTEGERS, CHAR):
        return float if source is not CHAR else lambda value: float(ord(value))
    if target in (INT, LONG) and source is CHAR:
        return ord
    if target.family == source.family and target.family in ("list", "dict", "datetime"):
        return identity
    if target.family == "class" and source.family == "class" and target.cls and source.cls and issubclass(source.cls, target.cls):
        return identity
    return None


def identity(value: Any) -> Any:
    """The conversion that changes nothing."""
    return value
