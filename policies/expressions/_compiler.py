"""The expression grammar: literals, names, operators, casts, `new`, lambdas and interpolated strings.

Recursion happens only where the source nests (parentheses, calls, indexers, initialisers, lambdas, holes,
`?:` branches), and each such level counts against MAX_NESTING. Operator chains (`a + b - c`, `x && y && z`,
`!!x`, `(int)(string)x`, `a ?? b ?? c`, `a ? b : c ? d : e`) are read in loops and evaluated in loops, so
neither compiling nor evaluating them deepens Python's stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from policies.expressions._base import NOT_CONSTANT, _Evaluator, _Local, _Node, type_hint
from policies.expressions._calls import IndexTarget, failure
from policies.expressions._errors import DotNetError, _runtime_error, excerpt, part
from policies.expressions._format import align, format_value
from policies.expressions._lexer import _Hole, _Token
from policies.expressions._lib_json import add_property
from policies.expressions._lib_json import token as json_token
from policies.expressions._library import CONSTRUCTORS, STATIC, STATIC_NAMES
from policies.expressions._limits import MAX_ITEMS, sized
from policies.expressions._linq import elements
from policies.expressions._members import _ClassMembers
from policies.expressions._operators import binary, implicit, unary
from policies.expressions._runtime import _NullChain, converter, default_of, instance_test, text, type_name
from policies.expressions._types import (
    BOOL,
    CHAR,
    DYNAMIC,
    INT,
    JOBJECT,
    NAMESPACES,
    NULL,
    NUMBERS,
    STRING,
    TYPE_NAMES,
    CType,
    accepts,
    array_of,
    dictionary,
    indexer,
    join,
    lambda_type,
)  # fmt: skip

#: Binary operators and how tightly they bind; `is` and `as` sit with the relational ones.
_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "|": 3,
    "^": 4,
    "&": 5,
    "==": 6,
    "!=": 6,
    "<": 7,
    ">": 7,
    "<=": 7,
    ">=": 7,
    "+": 9,
    "-": 9,
    "*": 10,
    "/": 10,
    "%": 10,
}
_KEYWORD_TYPES = frozenset({"string", "int", "long", "double", "float", "decimal", "bool", "char", "object", "byte", "short", "uint", "ulong"})
_UNSUPPORTED = {
    "typeof": "Type inspection ('typeof') is not available",
    "this": "'this' has no meaning in a policy expression",
    "await": "Asynchronous code ('await') is not available",
    "stackalloc": "'stackalloc' is not available",
    "delegate": "Anonymous methods are not available; use a lambda",
}


class _Chain:
    """Operands joined by operators of one precedence, folded left to right when compiled."""

    def __init__(self, level: int, first: _Node) -> None:
        self.level = level
        self.first = first
        self.rest: list[tuple[_Token, _Node]] = []


class _Expressions(_ClassMembers):
    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.fail("Nothing to evaluate")
        node = self.expression()
        if self.token.kind != "end":
            raise self.unexpected()
        return node

    def expression(self) -> _Node:
        """`c ? a : b` (chains read in a loop) over `??` over the binary operators."""
        condition = self.coalesce()
        if not self.at("?"):
            return condition
        branches: list[tuple[_Evaluator, _Node]] = []
        while self.accept("?"):
            test = self.boolean(condition, "The condition of '?:'")
            with self.nested():
                value = self.expression()
            if not self.accept(":"):
                raise self.fail("Missing ':' in conditional expression '?:'") if self.token.kind == "end" else self.unexpected()
            branches.append((test, value))
            condition = self.coalesce()
        otherwise = condition
        result = otherwise.type
        for _, value in reversed(branches):
            result = join(value.type, result)
        pairs = tuple((test, value.fn) for test, value in branches)
        last = otherwise.fn
        if len(pairs) == 1:
            ((test, then),) = pairs

            def conditional(frame: Any) -> Any:
                return then(frame) if test(frame) else last(frame)

            return _Node(conditional, result, branches[0][1].start, otherwise.end)

        def conditionals(frame: Any) -> Any:
            for test, value in pairs:
                if test(frame):
                    return value(frame)
            return last(frame)

        return _Node(conditionals, result, branches[0][1].start, otherwise.end)

    def coalesce(self) -> _Node:
        """`a ?? b ?? c`: the first operand that is not null."""
        first = self.binary()
        if not self.at("??"):
            return first
        operands = [first]
        while self.accept("??"):
            operands.append(self.binary())
        result = operands[-1].type
        for operand in reversed(operands[:-1]):
            result = join(operand.type, result)
        evaluators = tuple(o.fn for o in operands[:-1])
        last = operands[-1].fn

        def coalesce(frame: Any) -> Any:
            for evaluate in evaluators:
                value = evaluate(frame)
                if value is not None:
                    return value
            return last(frame)

        return _Node(coalesce, result, first.start, operands[-1].end)

    def binary(self) -> _Node:
        """Binary operators by precedence (shunting-yard); `is` and `as` apply to the operand before them."""
        operands: list[_Node | _Chain] = [self.unary()]
        pending: list[tuple[int, _Token]] = []
        while True:
            token = self.token
            word = token.kind == "name" and token.value in ("is", "as")
            if not word and not (token.kind == "op" and token.value in _PRECEDENCE):
                break
            level = 7 if word else _PRECEDENCE[token.value]
            while pending and pending[-1][0] >= level:
                self.reduce(operands, pending)
            self.advance()
            if word:
                operands[-1] = self.type_test(token, self.close_chain(operands[-1]))
                continue
            pending.append((level, token))
            operands.append(self.unary())
        while pending:
            self.reduce(operands, pending)
        return self.close_chain(operands[0])

    def reduce(self, operands: list[_Node | _Chain], pending: list[tuple[int, _Token]]) -> None:
        level, token = pending.pop()
        right = self.close_chain(operands.pop())
        left = operands.pop()
        if not isinstance(left, _Chain) or left.level != level:
            left = _Chain(level, self.close_chain(left))
        left.rest.append((token, right))
        operands.append(left)

    def close_chain(self, item: _Node | _Chain) -> _Node:
        if isinstance(item, _Node):
            return item
        if item.rest[0][0].value in ("&&", "||"):
            return self.logical(item)
        joined = self.joined(item)
        if joined is not None:
            return joined
        node = item.first
        steps = []
        for token, right in item.rest:
            try:
                result, fast, slow = binary(token.value, node.type, right.type)
            except ValueError as exc:
                raise self.fail(f"{exc}{part(self.source, item.first.start, right.end)}", start=token.start) from None
            steps.append((fast, slow, right.fn, right.end))
            node = _Node(node.fn, result, item.first.start, right.end)
        return _Node(_fold(item.first.fn, steps, self.source, item.first.start), node.type, item.first.start, node.end)

    def joined(self, chain: _Chain) -> _Node | None:
        """`a + b + c …` that is string concatenation from its first `+` on: one join instead of a fold."""
        operands = [chain.first, *(right for _, right in chain.rest)]
        if len(operands) < 3 or any(token.value != "+" for token, _ in chain.rest):
            return None
        first, second = operands[0].type, operands[1].type
        if not (first is STRING or second is STRING) or DYNAMIC in (first, second) or NULL in (first, second):
            return None
        parts = tuple((node.fn, node.type in (STRING, CHAR)) for node in operands)

        def join_text(frame: Any) -> str:
            pieces = []
            for fn, is_text in parts:
                value = fn(frame)
                pieces.append((value or "") if is_text else text(value))
            return sized("".join(pieces))

        return _Node(join_text, STRING, chain.first.start, operands[-1].end)

    def logical(self, chain: _Chain) -> _Node:
        op = chain.rest[0][0].value
        tests = tuple(self.boolean(node, f"An operand of '{op}'") for node in [chain.first, *(r for _, r in chain.rest)])
        if op == "&&":
            if len(tests) == 2:
                first, second = tests
                fn: _Evaluator = lambda frame: first(frame) and second(frame)  # noqa: E731
            else:
                fn = lambda frame: all(test(frame) for test in tests)  # noqa: E731
        elif len(tests) == 2:
            first, second = tests
            fn = lambda frame: first(frame) or second(frame)  # noqa: E731
        else:
            fn = lambda frame: any(test(frame) for test in tests)  # noqa: E731
        return _Node(fn, BOOL, chain.first.start, chain.rest[-1][1].end)

    def boolean(self, node: _Node, role: str) -> _Evaluator:
        """A closure that yields the node's value as a bool; C# has no truthiness, so anything else fails."""
        if node.type is BOOL:
            return node.fn
        if node.type is not DYNAMIC:
            raise self.fail(f"{role} must be a bool, but '{self.text(node)}' is {node.type.name}", start=node.start)
        fn, source, start, end = node.fn, self.source, node.start, node.end

        def checked(frame: Any) -> bool:
            value = fn(frame)
            if type(value) is bool:
                return value
            raise _runtime_error(
                source, f"{role} must be a bool, but '{excerpt(source, start, end)}' is {type_name(value)}", "InvalidCastException", start
            )

        return checked

    def type_test(self, word: _Token, operand: _Node) -> _Node:
        """`x is T`, `x is T name`, `x is null`, `x is not null`, `x as T`."""
        negate = word.value == "is" and self.at_word("not")
        if negate:
            self.advance()
        if word.value == "is" and self.at_word("null"):
            end = self.advance().end
            fn = operand.fn
            return _Node((lambda f: fn(f) is not None) if negate else (lambda f: fn(f) is None), BOOL, operand.start, end)
        ctype = self.parse_type()
        end = self.tokens[self.position - 1].end
        fn, test = operand.fn, instance_test(ctype)
        if word.value == "as":
            return _Node(lambda f: value if test(value := fn(f)) else None, ctype, operand.start, end)
        local = self.declare(self.advance(), ctype) if self.token.kind == "name" and not negate else None
        if local is None:
            return _Node((lambda f: not test(fn(f))) if negate else (lambda f: test(fn(f))), BOOL, operand.start, end)
        slot = local.slot

        def pattern(frame: Any) -> bool:
            value = fn(frame)
            if test(value):
                frame.slots[slot] = value
                return True
            return False

        return _Node(pattern, BOOL, operand.start, self.tokens[self.position - 1].end)

    def unary(self) -> _Node:
        """Prefix operators and casts, read in a loop and applied to the operand in one closure."""
        start = self.token.start
        prefixes: list[tuple[str, CType | None, _Token]] = []
        while True:
            token = self.token
            if token.kind == "op" and token.value in ("!", "-", "+", "~"):
                prefixes.append((self.advance().value, None, token))
            elif token.kind == "op" and token.value in ("++", "--"):
                self.advance()
                with self.nested():
                    operand = self.unary()
                return self.apply_prefixes(prefixes, self.increment(operand, token, prefix=True), start)
            elif self.at("(") and self.is_cast():
                self.advance()
                prefixes.append(("cast", self.parse_type(), token))
                self.expect(")")
            else:
                break
        return self.apply_prefixes(prefixes, self.postfix(), start)

    def is_cast(self) -> bool:
        """`(T)x`: T is a keyword type, or a type (or unknown name) directly followed by an operand."""
        name = self.peek(1)
        if name.kind != "name" or self.lookup(name.value) is not None or name.value == "context":
            return False
        ctype, length = self.read_type(1)
        if ctype is not None and self.at(")", 1 + length):
            if name.value in _KEYWORD_TYPES:
                return True
            return self._starts_operand(self.position + 2 + length) and not self.at("-", 2 + length)
        if self.at(")", 2) and self._starts_operand(self.position + 3) and not self.at("-", 3):
            if name.value in TYPE_NAMES or name.value in NAMESPACES:
                return False
            raise self.fail(f"Unsupported cast to '{name.value}'", f": {type_hint()}.")
        return False

    def apply_prefixes(self, prefixes: list[tuple[str, CType | None, _Token]], operand: _Node, start: int) -> _Node:
        if not prefixes:
            return operand
        steps: list[Callable[[Any], Any]] = []
        current, constant, base = operand.type, operand.constant, operand.fn
        for op, target, token in reversed(prefixes):
            if op == "cast":
                assert target is not None
                self.check_cast(current, target, operand, token)
                steps.append(converter(target, current, nullable=target not in (*NUMBERS, BOOL, CHAR)))
                current = target
            else:
                try:
                    current, apply = unary(op, current)
                except ValueError as exc:
                    raise self.fail(f"{exc}{part(self.source, operand.start, operand.end)}", start=token.start) from None
                steps.append(apply)
            if constant is not NOT_CONSTANT and op == "-" and type(constant) in (int, float) and len(steps) == 1:
                folded = constant = steps.pop()(constant)
                base = lambda _: folded  # noqa: E731, B023 - base is rebound with every fold: the latest is meant
            else:
                constant = NOT_CONSTANT
        if not steps:
            return _Node(base, current, start, operand.end, constant)
        return _Node(_prefixed(base, steps, self.source, start, operand.end), current, start, operand.end)

    def check_cast(self, source: CType, target: CType, operand: _Node, token: _Token) -> None:
        """C# refuses casts between unrelated known types; JSON values and objects convert at run time."""
        if DYNAMIC in (source, target) or source is NULL or source == target or implicit(target, source) is not None:
            return
        if source.family == target.family == "class" and source.cls and target.cls:
            if issubclass(source.cls, target.cls) or issubclass(target.cls, source.cls):
                return
        elif source.family == target.family or {source.family, target.family} <= {"number", "char", "string", "bool", "datetime", "enum"}:
            return
        raise self.fail(f"Cannot cast {source.name} '{self.text(operand)}' to {target.name}", start=token.start)

    def postfix(self) -> _Node:
        node = self.primary()
        short_circuits = False
        while True:
            if self.at(".") or self.at("?."):
                safe = self.advance().value == "?."
                node = self.member(node, safe)
            elif self.at("["):
                safe = False
                node = self.index(node, safe)
            elif self.at("?") and self.at("[", 1):
                safe = True
                self.advance()
                node = self.index(node, safe)
            elif self.at("++") or self.at("--"):
                node = self.increment(node, self.advance(), prefix=False)
                continue
            else:
                break
            short_circuits = short_circuits or safe
        return _short_circuit(node) if short_circuits else node

    def primary(self) -> _Node:
        token = self.token
        if token.kind in ("number", "string", "char"):
            self.advance()
            ctype = token.ctype or (STRING if token.kind == "string" else CHAR)
            value = token.value
            return _Node(lambda _: value, ctype, token.start, token.end, value)
        if token.kind == "template":
            self.advance()
            return self.template(token)
        if self.at("("):
            opener = self.advance()
            with self.nested():
                node = self.expression()
            if not self.at(")"):
                if self.token.kind == "end":
                    raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
                raise self.unexpected()
            closer = self.advance()
            return replace(node, start=opener.start, end=closer.end, target=None, path=None)
        if token.kind != "name":
            raise self.unexpected()
        return self.name()

    def name(self) -> _Node:
        token = self.advance()
        name = token.value
        if name in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[name]
            return _Node(lambda _: value, BOOL if name != "null" else NULL, token.start, token.end, value)
        if name == "context":
            return _Node(self.root, TYPE_NAMES["IContext"], token.start, token.end, path=())
        local = self.lookup(name)
        if local is not None:
            slot = local.slot
            return _Node(lambda frame: frame.slots[slot], local.type, token.start, token.end, target=local)
        if name == "new":
            return self.creation(token)
        if name == "default":
            return self.default(token)
        if name == "nameof":
            return self.nameof(token)
        if name in _UNSUPPORTED:
            raise self.fail(_UNSUPPORTED[name], start=token.start)
        qualified = name
        while qualified in NAMESPACES and self.at(".") and self.peek(1).kind == "name" and qualified not in STATIC_NAMES:
            self.advance()
            qualified = f"{qualified}.{self.advance().value}"
        key = STATIC_NAMES.get(qualified)
        if key is not None:
            if not self.accept("."):
                raise self.fail(f"'{qualified}' must be followed by a member", f": use one of {', '.join(sorted(STATIC[key]))}.")
            return self.static_member(key, qualified, token.start)
        raise self.fail(
            f"Unknown name '{qualified}'",
            ": expressions start with 'context', a local variable, or a type such as String, Math, Convert, DateTime, JObject.",
            start=token.start,
        )

    def default(self, token: _Token) -> _Node:
        if not self.accept("("):
            return _Node(lambda _: None, NULL, token.start, token.end, None)
        ctype = self.parse_type()
        end = self.expect(")").end
        value = default_of(ctype)
        return _Node(lambda _: value, ctype, token.start, end, value)

    def nameof(self, token: _Token) -> _Node:
        self.expect("(")
        last = self.expect_name()
        while self.accept("."):
            last = self.expect_name()
        end = self.expect(")").end
        value = last.value
        return _Node(lambda _: value, STRING, token.start, end, value)

    def template(self, token: _Token) -> _Node:
        """`$"…{x}…{y,8:N2}…"`: holes compile with the surrounding locals in scope."""
        parts: list[Any] = []
        for piece in token.value:
            if isinstance(piece, str):
                if piece:
                    parts.append(piece)
                continue
            parts.append((self.hole(piece), piece.alignment, piece.format))
        if all(isinstance(p, str) for p in parts):
            value = "".join(parts)
            return _Node(lambda _: value, STRING, token.start, token.end, value)
        if all(isinstance(p, str) or (p[1] is None and p[2] is None) for p in parts):
            plain = tuple(p if isinstance(p, str) else p[0] for p in parts)

            def interpolate(frame: Any) -> str:
                return sized("".join([p if type(p) is str else text(p(frame)) for p in plain]))  # type: ignore[operator]

            return _Node(interpolate, STRING, token.start, token.end)
        formatted = tuple(parts)

        def interpolate_formatted(frame: Any) -> str:
            return sized("".join([p if type(p) is str else align(format_value(p[0](frame), p[2]), p[1]) for p in formatted]))

        return _Node(interpolate_formatted, STRING, token.start, token.end)

    def hole(self, hole: _Hole) -> _Evaluator:
        saved = self.tokens, self.position
        self.tokens, self.position = list(hole.tokens), 0
        try:
            if self.token.kind == "end":
                raise self.fail("Empty '{}' in interpolated string")
            with self.nested():
                node = self.expression()
            if self.token.kind != "end":
                raise self.unexpected()
        finally:
            self.tokens, self.position = saved
        return node.fn

    def increment(self, operand: _Node, token: _Token, prefix: bool) -> _Node:
        """`x++`, `++x`, `x--`, `--x` on a numeric local."""
        local = operand.target
        if not isinstance(local, _Local) or local.type not in (*NUMBERS, CHAR, DYNAMIC):
            raise self.fail(f"'{token.value}' needs a numeric local variable, not '{self.text(operand)}'", start=token.start)
        _, apply, slow = binary("+" if token.value == "++" else "-", local.type, INT)
        slot, fn = local.slot, _step(apply, slow)

        def step(frame: Any) -> Any:
            old = frame.slots[slot]
            frame.slots[slot] = new = fn(old, 1)
            return new if prefix else old

        return _Node(step, local.type, min(operand.start, token.start), max(operand.end, token.end), effect=True)

    def index(self, node: _Node, safe: bool) -> _Node:
        opener = self.advance()
        if self.at("]"):
            raise self.fail(f"Empty indexer at character {opener.start + 1}")
        with self.nested():
            key = self.expression()
        if not self.at("]"):
            raise self.fail(f"Missing ']' for '[' at character {opener.start + 1}") if self.token.kind == "end" else self.unexpected()
        end = self.advance().end
        receiver = self.receiver(node, "index", safe)
        return self.indexer(node, key, receiver, end)

    def indexer(self, node: _Node, key: _Node, receiver: _Evaluator, end: int) -> _Node:
        ctype, family = node.type, node.type.family
        if family == "class":
            return self.class_index(node, key, receiver, end)
        if family not in ("dict", "list", "string", "bytes", "dynamic"):
            raise self.fail(f"{ctype.name} '{self.text(node)}' has no indexer")
        expected = {"dict": ctype.key or STRING, "list": INT, "string": INT, "bytes": INT}.get(family)
        if expected is not None and key.type not in (expected, DYNAMIC, NULL) and not (expected is INT and key.type in NUMBERS):
            raise self.fail(f"The key of '{self.text(node)}' must be {expected.name}, not {key.type.name}")
        strict = family == "dict" and ctype.name.startswith("Dictionary")
        get = _get_item(strict, self.source, node.start, node.end)
        element = CHAR if family == "string" else INT if family == "bytes" else ctype.element or DYNAMIC
        key_fn = key.fn
        target = (
            IndexTarget(receiver, key_fn, get, _set_item(self.source, node.start, node.end), element)
            if family in ("dict", "list", "dynamic")
            else None
        )
        return _Node(lambda frame: get(receiver(frame), key_fn(frame)), element, node.start, end, target=target)

    def class_index(self, node: _Node, key: _Node, receiver: _Evaluator, end: int) -> _Node:
        declared = indexer(node.type.cls) if node.type.cls else None
        if declared is None or declared.parameters is None or len(declared.parameters) != 1:
            raise self.fail(f"{node.type.name} '{self.text(node)}' has no indexer")
        hint = declared.hints.get(declared.parameters[0].name, DYNAMIC)
        if not accepts(hint, key.type):
            raise self.fail(f"The key of '{self.text(node)}' must be {hint.name}, not {key.type.name}")
        source, start, key_fn, text_ = self.source, node.start, key.fn, self.text(node)

        def index(frame: Any) -> Any:
            obj, name = receiver(frame), key_fn(frame)
            try:
                return obj[name]
            except (LookupError, TypeError):
                raise _runtime_error(source, f"Key {name!r} not found in '{text_}'", "KeyNotFoundException", start) from None

        return _Node(index, declared.type, node.start, end)

    def creation(self, token: _Token) -> _Node:
        """`new T(…)`, `new T(…) { … }`, `new T[n]`, `new T[] { … }`, `new[] { … }`, `new { a = 1 }`."""
        if self.at("[") and self.at("]", 1):
            self.advance()
            self.advance()
            items = self.collection_items()
            element = STRING if not items else items[0].type
            for item in items[1:]:
                element = join(element, item.type)
            return self.array(array_of(element), items, token.start)
        if self.at("{"):
            return self.anonymous(token)
        first = self.position
        ctype = self.parse_type("a type after 'new'")
        spelled = _spelled(self.tokens[first : self.position])
        if self.at("[") and not self.at("]", 1):
            self.advance()
            with self.nested():
                size = self.expression()
            self.expect("]")
            element = ctype
            ctype = array_of(ctype)
            initial = self.collection_items() if self.at("{") else None
            return self.sized_array(ctype, element, size, initial, token.start)
        if ctype.family in ("list", "bytes") and not self.at("("):
            return self.array(ctype, self.collection_items(), token.start)
        return self.construct(ctype, spelled, token.start)

    def construct(self, ctype: CType, spelled: str, start: int) -> _Node:
        call = self.arguments() if self.at("(") else None
        if call is not None and call.named:
            raise self.fail(f"'new {ctype.name}' takes no named arguments")
        arguments = [a for a in (call.positional if call else [])]
        builtin = CONSTRUCTORS.get(spelled) or CONSTRUCTORS.get(ctype.name)
        if builtin is None and ctype.family in ("list", "dict"):
            fn = self.collection_constructor(ctype, arguments)
        elif builtin is None:
            raise self.fail(f"'{ctype.name}' cannot be created with 'new'")
        else:
            checked = self.library_arguments(call, builtin, f"new {ctype.name}") if call else []
            if builtin.arity is not None and not call and builtin.arity[0] > 0:
                raise self.fail(f"'new {ctype.name}' needs arguments")
            fn = self.invoke(builtin, None, checked, call, ctype, f"new {ctype.name}", start)
        end = call.end if call else self.tokens[self.position - 1].end
        node = _Node(fn, ctype, start, end, effect=True)
        if self.at("{"):
            node = self.initialized(node)
        return node

    def collection_constructor(self, ctype: CType, arguments: list[_Node]) -> _Evaluator:
        """`new List<T>()`, `new List<T>(items)`, `new Dictionary<K, V>()` (a capacity is ignored)."""
        if len(arguments) > 1 or (arguments and ctype.family == "dict" and arguments[0].type.family != "dict"):
            raise self.fail(f"Unsupported arguments for 'new {ctype.name}'")
        if not arguments or arguments[0].type in NUMBERS:
            return (lambda _: {}) if ctype.family == "dict" else (lambda _: [])
        source_fn = arguments[0].fn
        return (lambda f: dict(source_fn(f))) if ctype.family == "dict" else (lambda f: list(elements(source_fn(f))))

    def initialized(self, node: _Node) -> _Node:
        """`{ a, b }` (Add), `{ { k, v } }` (Add), `{ [k] = v }` (indexer) after a constructor."""
        family = node.type.family
        if family not in ("list", "dict"):
            raise self.fail(f"'{node.type.name}' has no collection initializer")
        opener = self.expect("{")
        steps: list[Callable[[Any, Any], None]] = []
        with self.nested():
            while not self.at("}"):
                steps.append(self.initializer_item(node.type))
                if not self.accept(","):
                    break
            end = self.expect("}", f"closing the initializer opened at character {opener.start + 1}").end
        create, source, start = node.fn, self.source, node.start

        def initialize(frame: Any) -> Any:
            value = create(frame)
            try:
                for step in steps:
                    step(frame, value)
            except DotNetError as exc:
                raise failure(source, start, "The initializer failed", exc) from None
            return sized(value)

        return _Node(initialize, node.type, node.start, end, effect=True)

    def initializer_item(self, ctype: CType) -> Callable[[Any, Any], None]:
        family = ctype.family
        if family == "dict" and self.at("["):
            self.advance()
            key = self.expression().fn
            self.expect("]")
            self.expect("=")
            value = self.expression().fn
            return lambda frame, target: target.__setitem__(key(frame), json_token(value(frame)))
        if family == "dict":
            self.expect("{", "(a dictionary item is { key, value })")
            key = self.expression().fn
            self.expect(",")
            value = self.expression().fn
            self.expect("}")

            if ctype == JOBJECT:
                return lambda frame, target: add_property(target, key(frame), value(frame))

            def add(frame: Any, target: Any) -> None:
                name = key(frame)
                if name in target:
                    raise DotNetError("ArgumentException", f"An item with the same key has already been added. Key: {name}")
                target[name] = json_token(value(frame))

            return add
        item = self.expression().fn
        return lambda frame, target: target.append(json_token(item(frame)))

    def collection_items(self) -> list[_Node]:
        opener = self.expect("{")
        items: list[_Node] = []
        with self.nested():
            while not self.at("}"):
                items.append(self.expression())
                if not self.accept(","):
                    break
            self.expect("}", f"closing the '{{' at character {opener.start + 1}")
        return items

    def array(self, ctype: CType, items: list[_Node], start: int) -> _Node:
        element = ctype.element or DYNAMIC
        converts = []
        for item in items:
            convert = implicit(element, item.type)
            if convert is None:
                raise self.fail(f"Cannot put {item.type.name} '{self.text(item)}' in a {ctype.name}", start=item.start)
            converts.append((item.fn, convert))
        end = self.tokens[self.position - 1].end
        if ctype.family == "bytes":
            return _Node(lambda frame: bytes(convert(fn(frame)) for fn, convert in converts), ctype, start, end, effect=True)
        return _Node(lambda frame: [convert(fn(frame)) for fn, convert in converts], ctype, start, end, effect=True)

    def sized_array(self, ctype: CType, element: CType, size: _Node, items: list[_Node] | None, start: int) -> _Node:
        if size.type not in NUMBERS and size.type is not DYNAMIC:
            raise self.fail(f"An array size must be a number, not {size.type.name}")
        if items is not None:
            return self.array(ctype, items, start)
        size_fn, fill, source = size.fn, default_of(element), self.source

        def allocate(frame: Any) -> Any:
            count = size_fn(frame)
            if type(count) is not int or not 0 <= count <= MAX_ITEMS:
                raise _runtime_error(source, f"An array size must be between 0 and {MAX_ITEMS:,}, not {count!r}", "OverflowException", start)
            return bytes(count) if ctype.family == "bytes" else [fill] * count

        return _Node(allocate, ctype, start, self.tokens[self.position - 1].end, effect=True)

    def anonymous(self, token: _Token) -> _Node:
        """`new { name = value, other }`: an object with those properties (serialised like a JObject)."""
        self.expect("{")
        fields: list[tuple[str, _Evaluator]] = []
        with self.nested():
            while not self.at("}"):
                if self.token.kind == "name" and self.at("=", 1):
                    name = self.advance().value
                    self.advance()
                    fields.append((name, self.expression().fn))
                else:
                    node = self.expression()
                    name = self.source[node.start : node.end].rsplit(".", 1)[-1].strip()
                    if not name.isidentifier():
                        raise self.fail("An anonymous object's member needs a name: write 'name = value'", start=node.start)
                    fields.append((name, node.fn))
                if not self.accept(","):
                    break
            end = self.expect("}").end
        return _Node(lambda frame: {name: fn(frame) for name, fn in fields}, dictionary(STRING, DYNAMIC), token.start, end, effect=True)

    def lambda_(self, types: tuple[CType, ...]) -> _Node:
        """`x => …`, `(x, i) => …`, `(string s) => …`, `x => { … }`: a callable bound to the evaluation."""
        start = self.token.start
        parameters: list[tuple[_Token, CType | None]] = []
        if self.token.kind == "name":
            parameters.append((self.advance(), None))
        else:
            self.expect("(")
            while not self.at(")"):
                declared = self.parse_type() if self.peek(1).kind == "name" else None
                parameters.append((self.expect_name("a lambda parameter"), declared))
                if not self.accept(","):
                    break
            self.expect(")")
        self.expect("=>")
        if len(parameters) > len(types):
            raise self.fail(f"The lambda takes {len(parameters)} parameters; here it gets at most {len(types)}", start=start)
        self.timed = True
        with self.nested(), self.scope():
            slots = tuple(self.declare(token, declared or ctype).slot for (token, declared), ctype in zip(parameters, types))
            body, body_type = self.lambda_body()
        end = self.tokens[self.position - 1].end
        return _Node(_bind_lambda(body, slots), lambda_type(body_type), start, end)

    def lambda_body(self) -> tuple[_Evaluator, CType]:
        node = self.expression()
        return node.fn, node.type


def _spelled(tokens: list[_Token]) -> str:
    """The type's own name in a `new` (`HMACSHA256` in `System.Security.Cryptography.HMACSHA256`, `List` in `List<T>`)."""
    names = []
    for token in tokens:
        if token.kind == "op" and token.value in ("<", "["):
            break
        if token.kind == "name":
            names.append(token.value)
    return names[-1] if names else ""


def _bind_lambda(body: _Evaluator, slots: tuple[int, ...]) -> _Evaluator:
    def make(frame: Any) -> Callable[..., Any]:
        target = frame.slots

        def call(*arguments: Any) -> Any:
            frame.tick()
            for slot, value in zip(slots, arguments):
                target[slot] = value
            return body(frame)

        return call

    return make


def _step(fast: Callable[[Any, Any], Any], slow: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        try:
            return fast(a, b)
        except TypeError:
            return slow(a, b)

    return apply


def _fold(first: _Evaluator, steps: list[tuple[Any, Any, _Evaluator, int]], source: str, start: int) -> _Evaluator:
    """Evaluate `a op b op c …` left to right in one closure; a failure names the part evaluated so far."""

    def failed(exc: DotNetError, end: int) -> Exception:
        return _runtime_error(source, f"{exc.message.rstrip('.')}{part(source, start, end)}", exc.kind, start, exc.message)

    if len(steps) == 1:
        ((fast, slow, right, end),) = steps

        def pair(frame: Any) -> Any:
            a, b = first(frame), right(frame)
            try:
                try:
                    return fast(a, b)
                except TypeError:
                    return slow(a, b)
            except DotNetError as exc:
                raise failed(exc, end) from None

        return pair

    def fold(frame: Any) -> Any:
        value = first(frame)
        for fast, slow, right, end in steps:
            operand = right(frame)
            try:
                try:
                    value = fast(value, operand)
                except TypeError:
                    value = slow(value, operand)
            except DotNetError as exc:
                raise failed(exc, end) from None
        return value

    return fold


def _prefixed(fn: _Evaluator, steps: list[Callable[[Any], Any]], source: str, start: int, end: int) -> _Evaluator:
    """Prefix operators and casts applied innermost first, in one closure."""
    if len(steps) == 1:
        (only,) = steps

        def apply_one(frame: Any) -> Any:
            value = fn(frame)
            try:
                return only(value)
            except DotNetError as exc:
                raise _runtime_error(source, f"{exc.message.rstrip('.')}{part(source, start, end)}", exc.kind, start, exc.message) from None
            except TypeError:
                raise _runtime_error(
                    source, f"Cannot apply the operator to {type_name(value)}{part(source, start, end)}", "InvalidOperationException", start
                ) from None

        return apply_one

    def apply(frame: Any) -> Any:
        value = fn(frame)
        try:
            for step in steps:
                value = step(value)
        except DotNetError as exc:
            raise _runtime_error(source, f"{exc.message.rstrip('.')}{part(source, start, end)}", exc.kind, start, exc.message) from None
        except TypeError:
            raise _runtime_error(
                source, f"Cannot apply the operator to {type_name(value)}{part(source, start, end)}", "InvalidOperationException", start
            ) from None
        return value

    return apply


def _short_circuit(node: _Node) -> _Node:
    """Close a member chain that contains `?.`: a null met there makes the whole chain null."""
    fn = node.fn

    def chain(frame: Any) -> Any:
        try:
            return fn(frame)
        except _NullChain:
            return None

    return replace(node, fn=chain, target=None, path=None)


def _get_item(strict: bool, source: str, start: int, end: int) -> Callable[[Any, Any], Any]:
    """`obj[key]`: a JObject gives null for a missing key, a Dictionary fails; lists and strings need an index in range."""

    def get(obj: Any, key: Any) -> Any:
        kind = type(obj)
        if kind is dict:
            if strict and key not in obj:
                raise _runtime_error(source, f"Key {key!r} not found in '{excerpt(source, start, end)}'", "KeyNotFoundException", start)
            return obj.get(key) if type(key) is not list else None
        if kind in (list, str, bytes) and type(key) is int:
            if 0 <= key < len(obj):
                return obj[key]
            raise _runtime_error(
                source, f"Index {key} is out of range for '{excerpt(source, start, end)}' ({len(obj)} items)", "ArgumentOutOfRangeException", start
            )
        if hasattr(obj, "__getitem__") and kind not in (list, str, bytes):
            try:
                return obj[key]
            except (LookupError, TypeError):
                raise _runtime_error(source, f"Key {key!r} not found in '{excerpt(source, start, end)}'", "KeyNotFoundException", start) from None
        raise _runtime_error(
            source, f"Cannot index {type_name(obj)} '{excerpt(source, start, end)}' with {type_name(key)}", "InvalidOperationException", start
        )

    return get


def _set_item(source: str, start: int, end: int) -> Callable[[Any, Any, Any], None]:
    def put(obj: Any, key: Any, value: Any) -> None:
        kind = type(obj)
        if kind is dict and type(key) is not list:
            obj[key] = json_token(value)
            sized(obj)
            return
        if kind is list and type(key) is int and 0 <= key < len(obj):
            obj[key] = json_token(value)
            return
        if kind is list and type(key) is int:
            raise _runtime_error(
                source, f"Index {key} is out of range for '{excerpt(source, start, end)}' ({len(obj)} items)", "ArgumentOutOfRangeException", start
            )
        raise _runtime_error(source, f"Cannot set an item of {type_name(obj)} '{excerpt(source, start, end)}'", "InvalidOperationException", start)

    return put
