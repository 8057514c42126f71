"""Statements of `@{ … }` blocks: `if`/`else`, `for`, `foreach`, `while`, `do`, `switch`,
`try`/`catch`/`finally`, `throw`, `using`, `break`, `continue` and `return`.

Like C#, a block must return a value on every path and a `switch` section must not fall through; both are
checked at load (C#'s reachability rules, simplified: `while (true)` without `break` never completes, any other
loop may). Declarations and assignment are in `_assignments`, the run-time closures in `_flow`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from policies.expressions._assignments import _Assignments
from policies.expressions._base import NOT_CONSTANT, _Evaluator
from policies.expressions._errors import _runtime_error
from policies.expressions._flow import (
    _BREAK,
    _CONTINUE,
    _DEFAULT,
    _RETURN,
    _Breakable,
    _element_type,
    _foreach,
    _Function,
    _loop,
    _nothing,
    _returning,
    _sequence,
    _Statement,
    _StatementFn,
    _switch,
    _try,
)  # fmt: skip
from policies.expressions._lexer import _Token
from policies.expressions._lib_system import EXCEPTION, EXCEPTION_BASES, Exception_
from policies.expressions._limits import MAX_BLOCK_STATEMENTS
from policies.expressions._linq import _key
from policies.expressions._runtime import converter, type_name
from policies.expressions._types import DYNAMIC, NULL, VOID, CType, join


class Compiler(_Assignments):
    """Expressions (from the base classes) and statements: compiles a whole `@( )` or `@{ }`."""

    def __init__(self, source: str, tokens: list[_Token], frame_mode: bool) -> None:
        super().__init__(source, tokens, frame_mode)
        self.function = _Function()

    def block(self) -> tuple[_Evaluator, CType]:
        """The whole `@{ … }`: statements up to the end, which must return on every path."""
        statements = []
        while self.token.kind != "end":
            statements.append(self.statement())
        body = _sequence(statements)
        if body.completes:
            raise self.fail("Not all code paths return a value", ": end the '@{ }' block with 'return …;'.", start=len(self.source))
        return _returning(body.fn), self.returned()

    def returned(self) -> CType:
        returns = self.function.returns
        return functools.reduce(join, returns[1:], returns[0]) if returns else NULL

    def lambda_body(self) -> tuple[_Evaluator, CType]:
        if not self.at("{"):
            return super().lambda_body()
        outer, self.function = self.function, _Function()
        try:
            body = self.block_statement()
            if body.completes:
                raise self.fail("Not all code paths of the lambda return a value")
            return _returning(body.fn), self.returned()
        finally:
            self.function = outer

    def statement(self) -> _Statement:
        self.statement_count += 1
        if self.statement_count > MAX_BLOCK_STATEMENTS:
            raise self.fail(f"The block has more than {MAX_BLOCK_STATEMENTS:,} statements")
        token = self.token
        if self.at("{"):
            return self.block_statement()
        if self.accept(";"):
            return _Statement(_nothing, True)
        if token.kind == "name":
            handler = _KEYWORDS.get(token.value)
            if handler is not None:
                return handler(self)
            declared = self.declared_type()
            if declared is not None:
                statement = self.declaration(declared[0] if declared else None)
                self.expect(";")
                return statement
        fn = self.statement_expression()
        self.expect(";")
        return _Statement(fn, True)

    def block_statement(self) -> _Statement:
        opener = self.expect("{")
        statements = []
        with self.nested(), self.scope():
            while not self.at("}"):
                if self.token.kind == "end":
                    raise self.fail(f"The '{{' at character {opener.start + 1} is not closed")
                statements.append(self.statement())
            self.advance()
        return _sequence(statements)

    def embedded(self) -> _Statement:
        with self.nested(), self.scope():
            return self.statement()

    def condition(self, role: str) -> _Evaluator:
        self.expect("(")
        with self.nested():
            node = self.expression()
        self.expect(")")
        return self.boolean(node, role)

    # Control flow

    def if_(self) -> _Statement:
        self.advance()
        test = self.condition("The condition of 'if'")
        then = self.embedded()
        otherwise = None
        if self.at_word("else"):
            self.advance()
            otherwise = self.embedded()
        then_fn = then.fn
        if otherwise is None:
            return _Statement(lambda frame: then_fn(frame) if test(frame) else None, True)
        else_fn = otherwise.fn
        return _Statement(lambda frame: then_fn(frame) if test(frame) else else_fn(frame), then.completes or otherwise.completes)

    def loop_body(self) -> tuple[_Statement, _Breakable]:
        self.timed = True
        loop = _Breakable(loop=True)
        self.function.breakables.append(loop)
        try:
            return self.embedded(), loop
        finally:
            self.function.breakables.pop()

    def while_(self) -> _Statement:
        self.advance()
        self.expect("(")
        with self.nested():
            condition = self.expression()
        self.expect(")")
        test = self.boolean(condition, "The condition of 'while'")
        body, loop = self.loop_body()
        return _Statement(_loop(test, body.fn, None, False), condition.constant is not True or loop.broken)

    def do_(self) -> _Statement:
        self.advance()
        body, loop = self.loop_body()
        if not self.at_word("while"):
            raise self.fail("Expected 'while (…);' after the body of 'do'")
        self.advance()
        test = self.condition("The condition of 'do … while'")
        self.expect(";")
        return _Statement(_loop(test, body.fn, None, True), True)

    def for_(self) -> _Statement:
        self.advance()
        self.expect("(")
        with self.scope():
            initial: list[_Evaluator] = []
            if not self.at(";"):
                declared = self.declared_type()
                if declared is not None:
                    initial.append(self.declaration(declared[0] if declared else None).fn)
                else:
                    initial.extend(self.expression_list(";"))
            self.expect(";")
            condition = None
            if not self.at(";"):
                with self.nested():
                    condition = self.expression()
            self.expect(";")
            iterators = self.expression_list(")") if not self.at(")") else []
            self.expect(")")
            test = self.boolean(condition, "The condition of 'for'") if condition is not None else None
            body, loop = self.loop_body()
        infinite = condition is None or condition.constant is True
        run = _loop(test, body.fn, tuple(iterators), False)
        starts = tuple(initial)

        def for_loop(frame: Any) -> Any:
            for start in starts:
                start(frame)
            return run(frame)

        return _Statement(for_loop, not infinite or loop.broken)

    def expression_list(self, closer: str) -> list[_Evaluator]:
        items = [self.statement_expression()]
        while self.accept(","):
            items.append(self.statement_expression())
        if not self.at(closer):
            raise self.unexpected()
        return items

    def foreach(self) -> _Statement:
        self.advance()
        self.expect("(")
        declared = None
        if self.at_word("var") and self.peek(1).kind == "name":
            self.advance()
        else:
            declared = self.parse_type()
        name = self.expect_name("the loop variable")
        if not self.at_word("in"):
            raise self.fail("Expected 'in' in 'foreach'")
        self.advance()
        with self.nested():
            collection = self.expression()
        self.expect(")")
        element = _element_type(collection.type)
        if element is None:
            raise self.fail(f"'foreach' cannot walk {collection.type.name} '{self.text(collection)}'", start=collection.start)
        convert = converter(declared, element, nullable=True) if declared is not None and declared != element else None
        with self.scope():
            slot = self.declare(name, declared or element).slot
            body, loop = self.loop_body()
        return _Statement(_foreach(collection, slot, convert, body.fn, self.source), True)

    def switch(self) -> _Statement:
        self.advance()
        self.expect("(")
        with self.nested():
            subject = self.expression()
        self.expect(")")
        opener = self.expect("{")
        target = _Breakable(loop=False)
        self.function.breakables.append(target)
        table: dict[Any, int] = {}
        bodies: list[_StatementFn] = []
        fallback: int | None = None
        with self.nested(), self.scope():
            while not self.at("}"):
                if self.token.kind == "end":
                    raise self.fail(f"The '{{' of the switch at character {opener.start + 1} is not closed")
                labels = self.case_labels()
                statements = []
                while not (self.at_word("case") or self.at_word("default") or self.at("}") or self.token.kind == "end"):
                    statements.append(self.statement())
                section = _sequence(statements)
                if section.completes:
                    raise self.fail("Control cannot fall through from one case label to another: end the section with 'break;' or 'return …;'")
                for label in labels:
                    if label is _DEFAULT:
                        fallback = len(bodies)
                    elif _key(label) in table:
                        raise self.fail(f"The case label {label!r} appears twice")
                    else:
                        table[_key(label)] = len(bodies)
                bodies.append(section.fn)
            self.advance()
        self.function.breakables.pop()
        return _Statement(_switch(subject.fn, table, tuple(bodies), fallback), fallback is None or target.broken)

    def case_labels(self) -> list[Any]:
        labels: list[Any] = []
        while self.at_word("case") or self.at_word("default"):
            if self.advance().value == "default":
                labels.append(_DEFAULT)
            else:
                label = self.expression()
                if label.constant is NOT_CONSTANT:
                    raise self.fail(f"A case label must be a constant, not '{self.text(label)}'", start=label.start)
                labels.append(label.constant)
            self.expect(":")
        if not labels:
            raise self.fail("Expected 'case …:' or 'default:' in the switch")
        return labels

    def try_(self) -> _Statement:
        self.advance()
        body = self.block_statement()
        handlers: list[tuple[str, int | None, int, _Evaluator | None, _StatementFn]] = []
        completes = body.completes
        while self.at_word("catch"):
            self.advance()
            hidden, kind, local = self.hidden_slot(), "Exception", None
            with self.scope():
                if self.accept("("):
                    kind = self.exception_type()
                    local = self.declare(self.advance(), EXCEPTION).slot if self.token.kind == "name" else None
                    self.expect(")")
                when = None
                if self.at_word("when"):
                    self.advance()
                    when = self.condition("The filter of 'catch … when'")
                self.function.catch_slots.append(hidden)
                try:
                    handler = self.block_statement()
                finally:
                    self.function.catch_slots.pop()
            handlers.append((kind, local, hidden, when, handler.fn))
            completes = completes or handler.completes
        final = None
        if self.at_word("finally"):
            self.advance()
            outer, self.function.in_finally = self.function.in_finally, True
            try:
                final = self.block_statement().fn
            finally:
                self.function.in_finally = outer
        if not handlers and final is None:
            raise self.fail("'try' needs a 'catch' or a 'finally'")
        return _Statement(_try(body.fn, tuple(handlers), final, self.source), completes)

    def exception_type(self) -> str:
        name: str = self.expect_name("an exception type").value
        while self.accept("."):
            name = self.expect_name("an exception type").value
        if name not in EXCEPTION_BASES:
            raise self.fail(f"Unknown exception type '{name}'", f": use one of {', '.join(sorted(EXCEPTION_BASES))}.")
        return name

    def throw(self) -> _Statement:
        token = self.advance()
        if self.accept(";"):
            if not self.function.catch_slots:
                raise self.fail("'throw;' is only allowed inside a 'catch'", start=token.start)
            hidden = self.function.catch_slots[-1]

            def rethrow(frame: Any) -> None:
                raise frame.slots[hidden]

            return _Statement(rethrow, False)
        with self.nested():
            value = self.expression()
        self.expect(";")
        if value.type not in (EXCEPTION, DYNAMIC):
            raise self.fail(f"Only exceptions can be thrown, not {value.type.name}", ': throw new Exception("…").', start=value.start)
        fn, source, start = value.fn, self.source, token.start

        def throw(frame: Any) -> None:
            exception = fn(frame)
            if not isinstance(exception, Exception_):
                raise _runtime_error(source, f"Only exceptions can be thrown, not {type_name(exception)}", "InvalidCastException", start)
            raise _runtime_error(source, f"{exception.kind}: {exception.Message}", exception.kind, start, exception.Message)

        return _Statement(throw, False)

    def return_(self) -> _Statement:
        token = self.advance()
        if self.function.in_finally:
            raise self.fail("Control cannot leave the body of a 'finally'", start=token.start)
        if self.at(";"):
            raise self.fail("A '@{ }' block must return a value: write 'return <value>;'", start=token.start)
        with self.nested():
            value = self.expression()
        self.expect(";")
        if value.type is VOID:
            raise self.fail(f"'{self.text(value)}' has no value to return", start=value.start)
        self.function.returns.append(value.type)
        fn = value.fn

        def return_(frame: Any) -> Any:
            frame.result = fn(frame)
            return _RETURN

        return _Statement(return_, False)

    def jump(self) -> _Statement:
        token = self.advance()
        self.expect(";")
        if self.function.in_finally:
            raise self.fail("Control cannot leave the body of a 'finally'", start=token.start)
        targets = [b for b in self.function.breakables if b.loop or token.value == "break"]
        if not targets:
            raise self.fail(f"'{token.value}' is only allowed inside a loop{' or switch' if token.value == 'break' else ''}", start=token.start)
        if token.value == "break":
            targets[-1].broken = True
            return _Statement(lambda frame: _BREAK, False)
        return _Statement(lambda frame: _CONTINUE, False)

    def misplaced(self) -> _Statement:
        token = self.token
        raise self.fail(
            f"'{token.value}' is not supported in policy expressions"
            if token.value not in ("else", "case", "default", "catch", "finally")
            else f"'{token.value}' without its statement",
            start=token.start,
        )


_KEYWORDS: dict[str, Callable[[Compiler], _Statement]] = {
    "if": Compiler.if_, "while": Compiler.while_, "do": Compiler.do_, "for": Compiler.for_, "foreach": Compiler.foreach,
    "switch": Compiler.switch, "try": Compiler.try_, "throw": Compiler.throw, "return": Compiler.return_,
    "break": Compiler.jump, "continue": Compiler.jump, "using": Compiler.using,
    **{word: Compiler.misplaced for word in ("else", "case", "default", "catch", "finally", "goto", "lock", "yield", "unsafe", "fixed", "checked", "unchecked")},
}  # fmt: skip
