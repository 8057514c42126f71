"""Calls into the library: arguments (named, `out`, lambdas), receivers that stop on null, and members of
builtin values and static classes (`"x".Trim()`, `String.Join(…)`, `DateTime.UtcNow`).

A member of a known static type must exist in the library; library failures arrive as DotNetError and leave
as ExpressionRuntimeError naming the member. Class members and dynamic values are in `_members`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.expressions._base import _Base, _Evaluator, _Node, type_hint
from policies.expressions._errors import DotNetError, ExpressionRuntimeError, _runtime_error, excerpt
from policies.expressions._lib_text import CULTURE
from policies.expressions._library import STATIC, Builtin, LambdaRule
from policies.expressions._operators import implicit
from policies.expressions._runtime import _NullChain, default_of, type_name
from policies.expressions._types import DYNAMIC, VOID, CType

#: Python exceptions a library member or context method may raise on bad input, and the .NET type they mean.
_KINDS: dict[type[Exception], str] = {
    KeyError: "KeyNotFoundException", IndexError: "ArgumentOutOfRangeException", TypeError: "ArgumentException",
    ValueError: "FormatException", OverflowError: "OverflowException", ZeroDivisionError: "DivideByZeroException",
    AttributeError: "NullReferenceException", UnicodeError: "ArgumentException", ArithmeticError: "OverflowException",
}  # fmt: skip
CALL_ERRORS: tuple[type[Exception], ...] = tuple(_KINDS)
#: Everything a library call may raise on bad input: its own DotNetError, or a Python error it let through.
_FAILURES: tuple[type[Exception], ...] = (DotNetError, *CALL_ERRORS)


@dataclass(frozen=True, slots=True)
class OutTarget:
    """Where an `out` argument goes; a failed TryX leaves the type's default there, as C# does."""

    slot: int
    convert: Callable[[Any], Any]
    default: Any

    def store(self, frame: Any, result: tuple[Any, Any]) -> Any:
        """Keep the out value, give back the call's own result."""
        value = result[1]
        frame.slots[self.slot] = self.default if value is None else self.convert(value)
        return result[0]


@dataclass(frozen=True, slots=True)
class _Arguments:
    """The `( … )` of a call: positional arguments, named ones (`preserveContent: true`), an `out` target."""

    positional: list[_Node]
    named: dict[str, _Node]
    out: OutTarget | None
    end: int


@dataclass(frozen=True, slots=True)
class IndexTarget:
    """`x[k] = v`: the receiver and key evaluators and how to read and write an item."""

    receiver: _Evaluator
    key: _Evaluator
    get: Callable[[Any, Any], Any]
    put: Callable[[Any, Any, Any], None]
    type: CType


def failure(source: str, start: int, problem: str, exc: BaseException) -> ExpressionRuntimeError:
    """A library or context failure as a run-time error carrying the .NET exception type."""
    if isinstance(exc, DotNetError):
        return _runtime_error(source, f"{problem}: {exc.message}", exc.kind, start, exc.message)
    kind = next((k for t, k in _KINDS.items() if isinstance(exc, t)), "Exception")
    return _runtime_error(source, f"{problem} ({type(exc).__name__})", kind, start)


class _Members(_Base):
    """Binding of members, calls and indexers; the expression grammar itself comes from the subclass."""

    def expression(self) -> _Node:
        raise NotImplementedError

    def lambda_(self, types: tuple[CType, ...]) -> _Node:
        raise NotImplementedError

    # Arguments

    def arguments(self, lambdas: LambdaRule | None = None, receiver: CType = VOID, out: CType | None = None) -> _Arguments:
        opener = self.expect("(")
        positional: list[_Node] = []
        named: dict[str, _Node] = {}
        out_target = None
        with self.nested():
            while not self.at(")"):
                if self.token.kind == "end":
                    raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
                if out_target is not None:
                    raise self.fail("The 'out' argument must be the last one")
                if self.at_word("out") and self.peek(1).kind == "name":
                    if out is None:
                        raise self.fail("'out' is not accepted by this method")
                    self.advance()
                    out_target = self.out_target(out)
                elif self.token.kind == "name" and self.at(":", 1):
                    name = self.advance().value
                    self.advance()
                    if name in named:
                        raise self.fail(f"Named argument '{name}' is given twice")
                    named[name] = self.expression()
                elif named:
                    raise self.fail("Positional arguments must come before named arguments")
                elif self.is_lambda():
                    if lambdas is None:
                        raise self.fail("A lambda ('=>') is not accepted here")
                    positional.append(self.lambda_(lambdas(receiver, [a.type for a in positional])))
                else:
                    positional.append(self.expression())
                if not self.accept(","):
                    break
            if not self.at(")"):
                if self.token.kind == "end":
                    raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
                raise self.unexpected()
        end = self.advance().end
        return _Arguments(positional, named, out_target, end)

    def out_target(self, out: CType) -> OutTarget:
        """`out var x`, `out T x` or `out x`: the local the call's second result goes to."""
        if self.at_word("var"):
            self.advance()
            local = self.declare(self.expect_name("a variable name"), out)
        elif self.peek(1).kind == "name":
            declared = self.parse_type()
            local = self.declare(self.expect_name("a variable name"), declared)
        else:
            token = self.expect_name("a variable name")
            found = self.lookup(token.value)
            if found is None:
                raise self.fail(f"Unknown variable '{token.value}'", start=token.start)
            local = found
        convert = implicit(local.type, out)
        if convert is None:
            raise self.fail(f"An 'out' {out.name} cannot be stored in '{local.name}' ({local.type.name})")
        return OutTarget(local.slot, convert, default_of(local.type))

    def is_lambda(self) -> bool:
        """`x =>`, `() =>`, `(a, b) =>` or `(string a) =>` starts here."""
        if self.token.kind == "name" and self.at("=>", 1):
            return True
        if not self.at("("):
            return False
        index = self.position + 1
        while index < len(self.tokens) and self.tokens[index].kind in ("name", "op") and not self._is(index, ")"):
            if self.tokens[index].kind == "op" and self.tokens[index].value not in (",", "<", ">", "[", "]", "."):
                return False
            index += 1
        return self._is(index, ")") and self._is(index + 1, "=>")

    def type_argument(self) -> CType | None:
        """The `T` of a generic call `Name<T>(…)`, told apart from `<` by the `>(` that follows."""
        if not self.at("<"):
            return None
        ctype, length = self.read_type(1, nullable=False)
        if ctype is None and self.peek(1).kind == "name" and self.at(">", 2) and self.at("(", 3):
            raise self.fail(f"Unsupported type argument '{self.peek(1).value}'", f": {type_hint()}.")
        if ctype is None or not self.at(">", 1 + length) or not self.at("(", 2 + length):
            return None
        self.position += length + 2
        return ctype

    # Receivers

    def receiver(self, node: _Node, action: str, safe: bool) -> _Evaluator:
        """The evaluator of a member's target, which stops on null: with `?.` the chain yields null, else it fails."""
        fn = node.fn
        if fn is self.root:
            return fn
        if safe:

            def conditional(frame: Any) -> Any:
                value = fn(frame)
                if value is None:
                    raise _NullChain
                return value

            return conditional
        source, start, end = self.source, node.start, node.end

        def required(frame: Any) -> Any:
            value = fn(frame)
            if value is None:
                text = excerpt(source, start, end)
                raise _runtime_error(
                    source, f"Cannot {action}: '{text}' is null (use '?.' or '?[' to get null instead)", "NullReferenceException", start
                )
            return value

        return required

    # Members

    def builtin_member(self, node: _Node, name: str, builtin: Builtin, type_arg: CType | None, safe: bool) -> _Node:
        call = self.call_of(builtin, name, node.type, type_arg)
        arguments = self.library_arguments(call, builtin, name)
        returns = builtin.result(node.type, [a.type for a in arguments], type_arg)
        receiver = self.receiver(node, f"{'call' if call else 'read'} '{name}'", safe)
        fn = self.invoke(builtin, receiver, arguments, call, type_arg, f"'{name}' on '{self.text(node)}'", node.start)
        return _Node(fn, returns, node.start, call.end if call else self.tokens[self.position - 1].end, effect=call is not None)

    def call_of(self, builtin: Builtin, name: str, receiver: CType, type_arg: CType | None) -> _Arguments | None:
        """The call's arguments, checking that a property is read and a method called."""
        if type_arg is not None and not builtin.generic:
            raise self.fail(f"'{name}' takes no type argument")
        if not self.at("("):
            if builtin.arity is not None and not builtin.prop:
                raise self.fail(f"'{name}' is a method: call it as {name}(…)")
            return None
        if builtin.arity is None:
            raise self.fail(f"'{name}' is a property, not a method")
        return self.arguments(builtin.lambdas, receiver, builtin.out)

    def library_arguments(self, call: _Arguments | None, builtin: Builtin, name: str) -> list[_Node]:
        """Positional arguments without culture ones (every formatting here is invariant), arity checked."""
        if call is None:
            return []
        if call.named:
            raise self.fail(f"'{name}' takes no named arguments")
        arguments = [a for a in call.positional if a.type != CULTURE]
        assert builtin.arity is not None
        fewest, most = builtin.arity
        if len(arguments) < fewest or (most is not None and len(arguments) > most):
            expected = f"{fewest}" if fewest == most else f"{fewest} to {most}" if most is not None else f"at least {fewest}"
            raise self.fail(f"Wrong number of arguments ({len(arguments)}) for '{name}'", f": it takes {expected}.")
        if builtin.out is not None and call.out is None:
            raise self.fail(f"'{name}' needs an 'out' argument, as in {name}(…, out var result)")
        return arguments

    def invoke(
        self, builtin: Builtin, receiver: _Evaluator | None, arguments: list[_Node], call: _Arguments | None,
        type_arg: CType | None, what: str, start: int,
    ) -> _Evaluator:  # fmt: skip
        """The evaluator calling a library member: `impl(receiver, *arguments)` (or without receiver if static)."""
        impl, source = builtin.impl, self.source
        evaluators = tuple(a.fn for a in arguments)
        options: dict[str, Any] = {"T": type_arg or DYNAMIC} if builtin.generic else {}
        out = call.out if call else None
        costly = builtin.costly and self.frame_mode
        skip = 1 if receiver is not None else 0

        def failed(exc: Exception, values: list[Any]) -> ExpressionRuntimeError:
            if isinstance(exc, DotNetError):
                return failure(source, start, f"{what} failed", exc)
            return failure(source, start, f"{what} cannot take ({', '.join(type_name(v) for v in values[skip:])})", exc)

        if not options and not costly and out is None and receiver is not None and len(evaluators) <= 1:
            if evaluators:
                (argument,) = evaluators

                def call_one(frame: Any) -> Any:
                    value, given = receiver(frame), argument(frame)
                    try:
                        return impl(value, given)
                    except _FAILURES as exc:
                        raise failed(exc, [value, given]) from None

                return call_one

            def call_none(frame: Any) -> Any:
                value = receiver(frame)
                try:
                    return impl(value)
                except _FAILURES as exc:
                    raise failed(exc, [value]) from None

            return call_none

        def run(frame: Any) -> Any:
            values = [receiver(frame)] if receiver is not None else []
            values.extend([evaluate(frame) for evaluate in evaluators])
            if costly and values:
                frame.tick(cost(values[0]))
            try:
                result = impl(*values, **options)
            except _FAILURES as exc:
                raise failed(exc, values) from None
            if costly:
                frame.checkpoint()
            return result if out is None else out.store(frame, result)

        return run

    def static_member(self, key: str, owner: str, start: int) -> _Node:
        """`Type.Member` or `Type.Member(…)` on a static class (`String.Join`, `DateTime.UtcNow`)."""
        members_ = STATIC[key]
        name_token = self.expect_name(f"a member of {owner}")
        name = name_token.value
        builtin = members_.get(name)
        if builtin is None:
            raise self.fail(f"Unsupported member '{name}' on {owner}", f": use one of {', '.join(sorted(members_))}.", start=name_token.start)
        type_arg = self.type_argument()
        call = self.call_of(builtin, f"{owner}.{name}", VOID, type_arg)
        arguments = self.library_arguments(call, builtin, f"{owner}.{name}")
        returns = builtin.result(VOID, [a.type for a in arguments], type_arg)
        end = call.end if call else name_token.end
        if builtin.fixed:
            value = builtin.impl()
            return _Node(lambda _: value, returns, start, end, value)
        fn = self.invoke(builtin, None, arguments, call, type_arg, f"{owner}.{name}", start)
        return _Node(fn, returns, start, end, effect=call is not None)


def cost(value: Any) -> int:
    """The steps a library call walking `value` is charged: one per item, one per KiB of text."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) // 1024 + 1
    return len(value) + 1 if kind in (list, dict) else 1


def _fits(builtin: Builtin, called: bool, count: int) -> bool:
    if not called:
        return builtin.arity is None or builtin.prop
    if builtin.arity is None:
        return False
    fewest, most = builtin.arity
    return fewest <= count and (most is None or count <= most)
