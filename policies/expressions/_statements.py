"""Statements of `@{ … }` blocks: locals, assignment, `if`/`else`, `for`, `foreach`, `while`, `do`, `switch`,
`try`/`catch`/`finally`, `throw`, `using`, `break`, `continue` and `return`.

Each statement compiles to a closure that returns None to go on, or a signal (break, continue, return) that
the enclosing loop, switch or block acts on. Like C#, a block must return a value on every path and a
`switch` section must not fall through; both are checked at load (C#'s reachability rules, simplified:
`while (true)` without `break` never completes, any other loop may).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policies.expressions._base import NOT_CONSTANT, _Evaluator, _Local, _Node
from policies.expressions._calls import IndexTarget, failure
from policies.expressions._compiler import _Expressions, _step
from policies.expressions._errors import DotNetError, ExpressionLimitError, ExpressionRuntimeError, _runtime_error
from policies.expressions._lexer import _Token
from policies.expressions._lib_system import EXCEPTION, EXCEPTION_BASES, Exception_, catches
from policies.expressions._linq import PAIR, _key, elements
from policies.expressions._limits import MAX_BLOCK_STATEMENTS
from policies.expressions._operators import binary, identity, implicit
from policies.expressions._runtime import converter, default_of, type_name
from policies.expressions._types import BYTE, CHAR, DYNAMIC, NULL, VOID, CType, enumerable, join

_BREAK = object()
_CONTINUE = object()
_RETURN = object()
_DEFAULT = object()
_ASSIGNMENTS = frozenset({"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "??="})
_StatementFn = Callable[[Any], Any]


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


class Compiler(_Expressions):
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
        result = NULL
        for ctype in self.function.returns:
            result = join(result, ctype) if result is not NULL else ctype
        return result

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

    # Declarations and expressions

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
            raise self.fail(f"'{self.text(target)}' does nothing on its own", ": a statement is an assignment, a call, an increment or 'new'.", start=target.start)
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
        name = self.expect_name("an exception type").value
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
            raise self.fail(f"Only exceptions can be thrown, not {value.type.name}", ": throw new Exception(\"…\").", start=value.start)
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

    def misplaced(self) -> _Statement:
        token = self.token
        raise self.fail(f"'{token.value}' is not supported in policy expressions" if token.value not in ("else", "case", "default", "catch", "finally") else f"'{token.value}' without its statement", start=token.start)


_KEYWORDS: dict[str, Callable[[Compiler], _Statement]] = {
    "if": Compiler.if_, "while": Compiler.while_, "do": Compiler.do_, "for": Compiler.for_, "foreach": Compiler.foreach,
    "switch": Compiler.switch, "try": Compiler.try_, "throw": Compiler.throw, "return": Compiler.return_,
    "break": Compiler.jump, "continue": Compiler.jump, "using": Compiler.using,
    **{word: Compiler.misplaced for word in ("else", "case", "default", "catch", "finally", "goto", "lock", "yield", "unsafe", "fixed", "checked", "unchecked")},
}  # fmt: skip


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
