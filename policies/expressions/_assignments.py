"""Locals and assignment in `@{ … }` blocks: declarations (`var`, typed, `const`, several at once, `using`), `=`
and the compound assignments, and which expressions may stand alone as statements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.expressions._base import _Evaluator, _Local, _Node
from policies.expressions._calls import IndexTarget, failure
from policies.expressions._compiler import _Expressions, _step
from policies.expressions._errors import DotNetError
from policies.expressions._flow import _declare, _filler, _Statement
from policies.expressions._lexer import _Token
from policies.expressions._operators import binary, implicit
from policies.expressions._runtime import converter, default_of
from policies.expressions._types import DYNAMIC, NULL, VOID, CType

_ASSIGNMENTS = frozenset({"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "??="})


class _Assignments(_Expressions):
    """Declarations and assignments; the statements around them come from the subclass."""

    def embedded(self) -> _Statement:
        raise NotImplementedError

    def declared_type(self) -> tuple[CType] | tuple[()] | None:
        """What a declaration starts with: (T,) for `T name`, () for `var name`, None if not a declaration."""
        if self.at_word("const"):
            self.advance()
        if self.at_word("var") and self.peek(1).kind == "name":
            self.advance()
            return ()
        ctype, length = self.read_type()
        if ctype is None or self.peek(length).kind != "name" or not any(self.at(op, length + 1) for op in ("=", ";", ",")):
            return None
        self.position += length
        return (ctype,)

    def declaration(self, declared: CType | None) -> _Statement:
        """`T a = x, b;` or `var a = x;`: each local is in scope after its own initializer."""
        steps: list[tuple[int, _Evaluator | None, Callable[[Any], Any]]] = []
        while True:
            name = self.expect_name("a variable name")
            if self.accept("="):
                with self.nested():
                    value = self.array_initializer(declared) if self.at("{") else self.expression()
                ctype = declared or self.inferred(value, name)
                convert = implicit(ctype, value.type)
                if convert is None:
                    raise self.fail(f"Cannot assign {value.type.name} '{self.text(value)}' to '{name.value}' ({ctype.name})", start=value.start)
                steps.append((self.declare(name, ctype).slot, value.fn, convert))
            elif declared is None:
                raise self.fail(f"'var {name.value}' needs an initializer", start=name.start)
            else:
                steps.append((self.declare(name, declared).slot, None, _filler(default_of(declared))))
            if not self.accept(","):
                break
        return _Statement(_declare(steps), True)

    def inferred(self, value: _Node, name: _Token) -> CType:
        if value.type in (NULL, VOID) or value.type.family == "lambda":
            what = {"null": "null", "void": "a call without a value"}.get(value.type.family, "a lambda")
            raise self.fail(f"Cannot declare 'var {name.value}' from {what}; give it a type", start=name.start)
        return value.type

    def array_initializer(self, declared: CType | None) -> _Node:
        if declared is None or declared.family not in ("list", "bytes"):
            raise self.fail("An array initializer '{ … }' needs an array type")
        return self.array(declared, self.collection_items(), self.token.start)

    def statement_expression(self) -> _Evaluator:
        """An assignment, increment, call or `new` used as a statement (or in a `for` header)."""
        target = self.expression()
        if self.token.kind == "op" and self.token.value in _ASSIGNMENTS:
            return self.assignment(target, self.advance())
        if not target.effect:
            raise self.fail(
                f"'{self.text(target)}' does nothing on its own", ": a statement is an assignment, a call, an increment or 'new'.", start=target.start
            )
        fn = target.fn

        def effect(frame: Any) -> None:
            fn(frame)

        return effect

    def assignment(self, target: _Node, op: _Token) -> _Evaluator:
        with self.nested():
            value = self.expression()
        place = target.target
        if isinstance(place, _Local):
            return self.assign_local(place, op.value, value)
        if isinstance(place, IndexTarget):
            return self.assign_item(place, op.value, value)
        raise self.fail(f"Only local variables and indexers can be assigned, not '{self.text(target)}'", start=target.start)

    def combine(self, op: str, current: CType, value: _Node, target: CType) -> Callable[[Any, Any], Any]:
        """The function a compound assignment (`+=`, `??=`, …) applies to the old and the new value."""
        if op == "??=":
            return lambda old, new: new if old is None else old
        try:
            result, fast, slow = binary(op[:-1], current, value.type)
        except ValueError as exc:
            raise self.fail(f"{exc} in '{self.text(value)}'", start=value.start) from None
        convert = implicit(target, result) or converter(target, result)
        apply, source, start = _step(fast, slow), self.source, value.start

        def combine(old: Any, new: Any) -> Any:
            try:
                return convert(apply(old, new))
            except DotNetError as exc:
                raise failure(source, start, f"'{op}' failed", exc) from None

        return combine

    def assign_local(self, local: _Local, op: str, value: _Node) -> _Evaluator:
        slot, fn = local.slot, value.fn
        if op != "=":
            combine = self.combine(op, local.type, value, local.type)

            def update(frame: Any) -> None:
                frame.slots[slot] = combine(frame.slots[slot], fn(frame))

            return update
        convert = implicit(local.type, value.type)
        if convert is None:
            raise self.fail(f"Cannot assign {value.type.name} '{self.text(value)}' to '{local.name}' ({local.type.name})", start=value.start)
        source, start = self.source, value.start

        def assign(frame: Any) -> None:
            try:
                frame.slots[slot] = convert(fn(frame))
            except DotNetError as exc:
                raise failure(source, start, f"Assigning to '{local.name}' failed", exc) from None

        return assign

    def assign_item(self, place: IndexTarget, op: str, value: _Node) -> _Evaluator:
        receiver, key, get, put, fn = place.receiver, place.key, place.get, place.put, value.fn
        if op == "=":
            return lambda frame: put(receiver(frame), key(frame), fn(frame))
        combine = self.combine(op, place.type, value, DYNAMIC)

        def update(frame: Any) -> None:
            obj, name = receiver(frame), key(frame)
            put(obj, name, combine(get(obj, name), fn(frame)))

        return update

    def using(self) -> _Statement:
        """`using (var x = …) statement` or `using var x = …;`: the value needs no disposing here."""
        self.advance()
        if not self.accept("("):
            declared = self.declared_type()
            if declared is None:
                raise self.fail("Expected a declaration after 'using'")
            statement = self.declaration(declared[0] if declared else None)
            self.expect(";")
            return statement
        with self.scope():
            declared = self.declared_type()
            if declared is not None:
                resource = self.declaration(declared[0] if declared else None).fn
            else:
                with self.nested():
                    node = self.expression()
                resource = node.fn
            self.expect(")")
            body = self.embedded()
        fn = body.fn

        def using(frame: Any) -> Any:
            resource(frame)
            return fn(frame)

        return _Statement(using, body.completes)
