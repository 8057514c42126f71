"""What `@{ … }` statements do at run time: the closures for blocks, loops, `foreach`, `switch` and `try`.

A statement's closure returns None to go on, or a signal (break, continue, return) that the enclosing loop,
switch or block acts on; a `return` leaves its value in the Frame. Loops count steps on the Frame, so an
endless loop stops at the step bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policies.expressions._base import _Evaluator, _Node
from policies.expressions._calls import failure
from policies.expressions._errors import DotNetError, ExpressionLimitError, ExpressionRuntimeError, _runtime_error
from policies.expressions._lib_system import Exception_, catches
from policies.expressions._linq import PAIR, _key, elements
from policies.expressions._operators import identity
from policies.expressions._types import BYTE, CHAR, DYNAMIC, CType, enumerable

_StatementFn = Callable[[Any], Any]

_BREAK = object()
_CONTINUE = object()
_RETURN = object()
_DEFAULT = object()


@dataclass(frozen=True, slots=True)
class _Statement:
    fn: _StatementFn
    #: Whether execution can go on after it (C#'s "end point is reachable").
    completes: bool


@dataclass
class _Breakable:
    """A loop or switch that `break` (and, for loops, `continue`) may leave."""

    loop: bool
    broken: bool = False


@dataclass
class _Function:
    """What a block or block lambda being compiled collects: its return types and its break targets."""

    returns: list[CType] = field(default_factory=list)
    breakables: list[_Breakable] = field(default_factory=list)
    catch_slots: list[int] = field(default_factory=list)
    in_finally: bool = False


def _nothing(frame: Any) -> None:
    return None


def _sequence(statements: list[_Statement]) -> _Statement:
    completes = all(statement.completes for statement in statements)
    fns = tuple(statement.fn for statement in statements)
    if not fns:
        return _Statement(_nothing, True)
    if len(fns) == 1:
        return _Statement(fns[0], completes)

    def block(frame: Any) -> Any:
        for fn in fns:
            signal = fn(frame)
            if signal is not None:
                return signal
        return None

    return _Statement(block, completes)


def _returning(body: _StatementFn) -> _Evaluator:
    def run(frame: Any) -> Any:
        body(frame)
        return frame.result

    return run


def _declare(steps: list[tuple[int, _Evaluator | None, Callable[[Any], Any]]]) -> _StatementFn:
    if len(steps) == 1 and steps[0][1] is not None and steps[0][2] is identity:
        slot, value = steps[0][0], steps[0][1]

        def declare_one(frame: Any) -> None:
            frame.slots[slot] = value(frame)

        return declare_one

    def declare(frame: Any) -> None:
        for slot, value, convert in steps:
            frame.slots[slot] = convert(value(frame) if value is not None else None)

    return declare


def _filler(value: Any) -> Callable[[Any], Any]:
    """The conversion of a declaration without initializer: the type's default, whatever is given."""
    return lambda _: value


def _element_type(ctype: CType) -> CType | None:
    """What `foreach` gives for each item of a value of type `ctype`; None if it cannot be walked."""
    if ctype.family == "list":
        return ctype.element or DYNAMIC
    if ctype.family == "dict":
        return PAIR
    if ctype.family == "bytes":
        return BYTE
    if ctype.family == "string":
        return CHAR
    if ctype.family == "dynamic":
        return DYNAMIC
    if ctype.family == "class" and ctype.cls is not None:
        return enumerable(ctype.cls)
    return None


def _loop(test: _Evaluator | None, body: _StatementFn, iterators: tuple[_Evaluator, ...] | None, test_after: bool) -> _StatementFn:
    def loop(frame: Any) -> Any:
        first = True
        while True:
            steps = frame.steps + 1
            frame.steps = steps
            if not steps & 15:
                frame.checkpoint()
            if not (test_after and first) and test is not None and not test(frame):
                return None
            first = False
            signal = body(frame)
            if signal is not None and signal is not _CONTINUE:
                return None if signal is _BREAK else signal
            if iterators:
                for iterate in iterators:
                    iterate(frame)

    return loop


def _foreach(collection: _Node, slot: int, convert: Callable[[Any], Any] | None, body: _StatementFn, source: str) -> _StatementFn:
    fn, start = collection.fn, collection.start

    def foreach(frame: Any) -> Any:
        value = fn(frame)
        try:
            items = list(elements(value)) if value is not None else None
        except DotNetError as exc:
            raise failure(source, start, "'foreach' failed", exc) from None
        if items is None:
            raise _runtime_error(source, "'foreach' over null", "NullReferenceException", start)
        frame.tick(len(items) // 16 + 1)
        slots = frame.slots
        for item in items:
            steps = frame.steps + 1
            frame.steps = steps
            if not steps & 15:
                frame.checkpoint()
            if convert is not None:
                try:
                    item = convert(item)
                except DotNetError as exc:
                    raise failure(source, start, "'foreach' cannot convert an item", exc) from None
            slots[slot] = item
            signal = body(frame)
            if signal is not None and signal is not _CONTINUE:
                return None if signal is _BREAK else signal
        return None

    return foreach


def _switch(subject: _Evaluator, table: dict[Any, int], bodies: tuple[_StatementFn, ...], fallback: int | None) -> _StatementFn:
    def switch(frame: Any) -> Any:
        index = table.get(_key(subject(frame)), fallback)
        if index is None:
            return None
        signal = bodies[index](frame)
        return None if signal is _BREAK else signal

    return switch


def _try(body: _StatementFn, handlers: tuple[Any, ...], final: _StatementFn | None, source: str) -> _StatementFn:
    def attempt(frame: Any) -> Any:
        try:
            return body(frame)
        except ExpressionLimitError:
            raise
        except (ExpressionRuntimeError, DotNetError) as caught:
            error = caught if isinstance(caught, ExpressionRuntimeError) else _runtime_error(source, caught.message, caught.kind, 0, caught.message)
            for kind, local, hidden, when, handler in handlers:
                if not catches(kind, error.kind):
                    continue
                frame.slots[hidden] = error
                if local is not None:
                    frame.slots[local] = Exception_(error.kind, error.detail)
                if when is None or when(frame):
                    return handler(frame)
            raise error from None
        finally:
            if final is not None:
                final(frame)

    return attempt
