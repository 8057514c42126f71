"""The recursive-descent parser that compiles an expression into Python closures."""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import NoneType
from typing import Any

from policies.context import Context
from policies.expressions._errors import (
    ExpressionError,
    ExpressionRuntimeError,
    _load_error,
    _runtime_error,
)
from policies.expressions._lexer import _Token
from policies.expressions._runtime import (
    _ARITHMETIC,
    _BUILTINS,
    _CALL_ERRORS,
    _COMPARISONS,
    _HELPERS,
    _TYPES,
    _arity_text,
    _builtin_names,
    _equals,
    _NullChain,
    _text,
)
from policies.expressions._types import (
    _NUMBERS,
    _VALUE_TYPES,
    _accepts,
    _indexer,
    _join,
    _Member,
    _members,
    _static,
    _type_name,
    _value_type_name,
)

_Evaluator = Callable[[Context], Any]

_NOT_CONSTANT = object()


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: its closure, its static type and its span in the source (for messages)."""

    fn: _Evaluator
    type: Any
    start: int
    end: int
    #: The value when the node is a literal, so calls with literal arguments skip evaluating them.
    constant: Any = _NOT_CONSTANT


@dataclass(frozen=True, slots=True)
class _Arguments:
    """The `( … )` of a call: positional arguments, then named ones (`preserveContent: true`)."""

    positional: list[_Node]
    named: dict[str, _Node]
    end: int


def _root(context: Context) -> Context:
    return context


def _constant(value: Any, static: Any, start: int, end: int) -> _Node:
    return _Node(lambda _: value, static, start, end, value)


#: Binary operators from loosest to tightest binding; `??` and `?:` sit above these.
_LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))
_NUMERIC_OPERANDS = frozenset({int, float, Any, NoneType})


class _Parser:
    """Recursive descent over the tokens, compiling each construct into a closure as it is recognised."""

    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.position = 0

    # Token helpers

    @property
    def token(self) -> _Token:
        return self.tokens[self.position]

    def peek(self, offset: int) -> _Token:
        return self.tokens[min(self.position + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.token
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def at(self, op: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "op" and token.value == op

    def accept(self, op: str) -> bool:
        if self.at(op):
            self.advance()
            return True
        return False

    def fail(self, problem: str, hint: str = "") -> ExpressionError:
        return _load_error(self.source, problem, hint)

    def unexpected(self) -> ExpressionError:
        token = self.token
        if token.kind == "end":
            return self.fail("Unexpected end")
        if self.at(")"):
            return self.fail(f"Unbalanced parentheses: unexpected ')' at character {token.start + 1}")
        return self.fail(f"Unexpected '{self.source[token.start:token.end]}' at character {token.start + 1}")

    def close(self, opener: _Token) -> _Token:
        if not self.at(")"):
            if self.token.kind == "end":
                raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
            raise self.unexpected()
        return self.advance()

    def text(self, node: _Node) -> str:
        return self.source[node.start : node.end]

    # Grammar

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.fail("Nothing to evaluate")
        node = self.expression()
        if self.token.kind != "end":
            raise self.unexpected()
        return node

    def hole(self) -> _Node:
        """An interpolation hole's expression; format specifiers (`{x:N2}`) are not supported."""
        if self.token.kind == "end":
            raise self.fail("Empty '{}' in interpolated string")
        node = self.expression()
        if self.at(":") or self.at(","):
            raise self.fail("Format specifiers and alignment in interpolated strings are not supported", ": use concatenation.")
        if self.token.kind != "end":
            raise self.unexpected()
        return node

    def expression(self) -> _Node:
        condition = self.coalesce()
        if not self.accept("?"):
            return condition
        test = self.boolean(condition, "The condition of '?:'")
        then = self.expression()
        if not self.accept(":"):
            raise self.fail("Missing ':' in conditional expression '?:'") if self.token.kind == "end" else self.unexpected()
        otherwise = self.expression()
        then_fn, otherwise_fn = then.fn, otherwise.fn

        def conditional(context: Context) -> Any:
            return then_fn(context) if test(context) else otherwise_fn(context)

        return _Node(conditional, _join(then.type, otherwise.type), condition.start, otherwise.end)

    def coalesce(self) -> _Node:
        left = self.binary(0)
        if not self.accept("??"):
            return left
        right = self.coalesce()
        left_fn, right_fn = left.fn, right.fn

        def coalesce(context: Context) -> Any:
            value = left_fn(context)
            return right_fn(context) if value is None else value

        return _Node(coalesce, _join(left.type, right.type), left.start, right.end)

    def binary(self, level: int) -> _Node:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.token.kind == "op" and self.token.value in _LEVELS[level]:
            op = self.advance().value
            right = self.binary(level + 1)
            node = self.combine(op, node, right)
        return node

    def unary(self) -> _Node:
        start = self.token.start
        if self.accept("!"):
            operand = self.unary()
            test = self.boolean(operand, "The operand of '!'")
            return _Node(lambda context: not test(context), bool, start, operand.end)
        if self.accept("-"):
            return self.negate(self.unary(), start)
        if self.at("(") and self.is_cast():
            return self.cast()
        return self.postfix()

    def is_cast(self) -> bool:
        """`(T)x` is a cast when T is a type name, or an unknown name directly followed by an operand."""
        name, following = self.peek(1), self.peek(3)
        if name.kind != "name" or not self.at(")", 2):
            return False
        if name.value in _TYPES:
            return True
        return name.value != "context" and (following.kind in ("name", "number", "string", "template") or self.at("(", 3))

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
            else:
                break
            short_circuits = short_circuits or safe
        return _short_circuit(node) if short_circuits else node

    def primary(self) -> _Node:
        token = self.token
        if token.kind in ("number", "string"):
            self.advance()
            return _constant(token.value, type(token.value), token.start, token.end)
        if token.kind == "template":
            self.advance()
            return self.template(token)
        if self.at("("):
            opener = self.advance()
            node = self.expression()
            closer = self.close(opener)
            return replace(node, start=opener.start, end=closer.end)
        if token.kind != "name":
            raise self.unexpected()
        self.advance()
        name = token.value
        if name in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[name]
            return _constant(value, type(value), token.start, token.end)
        if name == "context":
            return _Node(_root, Context, token.start, token.end)
        if name in _HELPERS:
            return self.helper(token)
        if name in ("new", "typeof"):
            raise self.fail(f"'{name}' is not supported", ": expressions read the context; they cannot create objects or inspect types.")
        raise self.fail(f"Unknown name '{name}'", f": expressions start with 'context' or a helper ({', '.join(_HELPERS)}).")

    # Constructs

    def template(self, token: _Token) -> _Node:
        parts: list[Any] = []
        for part in token.value:
            if isinstance(part, str):
                if part:
                    parts.append(part)
            else:
                parts.append(_Parser(self.source, list(part)).hole().fn)
        if all(isinstance(part, str) for part in parts):
            return _constant("".join(parts), str, token.start, token.end)

        def interpolate(context: Context) -> str:
            return "".join([part if type(part) is str else _text(part(context)) for part in parts])

        return _Node(interpolate, str, token.start, token.end)

    def helper(self, owner: _Token) -> _Node:
        helpers = _HELPERS[owner.value]
        if not self.accept("."):
            raise self.fail(f"'{owner.value}' must be followed by a member", f": use one of {', '.join(helpers)}.")
        name_token = self.expect_name()
        name, helper = name_token.value, helpers.get(name_token.value)
        if helper is None:
            raise self.fail(f"Unsupported member '{name}' on {owner.value}", f": use one of {', '.join(helpers)}.")
        qualified, source = f"{owner.value}.{name}", self.source
        if helper.arity is None:
            if self.at("("):
                raise self.fail(f"'{qualified}' is a property, not a method")
            function = helper.function
            return _Node(lambda _: function(), helper.returns, owner.start, name_token.end)
        if not self.at("("):
            raise self.fail(f"'{qualified}' is a method: call it as {qualified}(…)")
        call = self.arguments()
        if call.named or len(call.positional) != helper.arity:
            raise self.fail(f"'{qualified}' takes {helper.arity} positional argument(s)")
        returns = helper.returns
        if returns is None:
            joined = functools.reduce(_join, (argument.type for argument in call.positional))
            returns = joined if joined in _NUMBERS else Any
        function, arguments = helper.function, tuple(argument.fn for argument in call.positional)

        def invoke(context: Context) -> Any:
            values = [argument(context) for argument in arguments]
            try:
                return function(*values)
            except _CALL_ERRORS:
                given = ", ".join(_value_type_name(value) for value in values)
                raise _runtime_error(source, f"{qualified} cannot take ({given})") from None

        return _Node(invoke, returns, owner.start, call.end)

    def expect_name(self) -> _Token:
        if self.token.kind != "name":
            raise self.fail("Expected a member name after '.'") if self.token.kind == "end" else self.unexpected()
        return self.advance()

    def arguments(self) -> _Arguments:
        opener = self.advance()
        positional: list[_Node] = []
        named: dict[str, _Node] = {}
        while not self.at(")"):
            if self.token.kind == "end":
                raise self.fail(f"Unbalanced parentheses: '(' at character {opener.start + 1} is not closed")
            if self.token.kind == "name" and self.at(":", 1):
                name = self.advance().value
                self.advance()
                if name in named:
                    raise self.fail(f"Named argument '{name}' is given twice")
                named[name] = self.expression()
            elif named:
                raise self.fail("Positional arguments must come before named arguments")
            else:
                positional.append(self.expression())
            if not self.accept(","):
                break
        return _Arguments(positional, named, self.close(opener).end)

    def type_argument(self) -> str | None:
        """The `T` of a generic call `Name<T>(…)`, told apart from `<` by the `>(` that follows."""
        if not (self.at("<") and self.peek(1).kind == "name" and self.at(">", 2) and self.at("(", 3)):
            return None
        self.advance()
        name = self.advance().value
        self.advance()
        if name not in _TYPES:
            raise self.fail(f"Unsupported type argument '{name}'", f": use one of {', '.join(_TYPES)}.")
        return name

    def member(self, node: _Node, safe: bool) -> _Node:
        name_token = self.expect_name()
        type_argument = self.type_argument()
        call = self.arguments() if self.at("(") else None
        end = call.end if call else name_token.end
        if node.type in _VALUE_TYPES:
            return self.builtin_member(node, name_token.value, type_argument, call, safe, end)
        return self.class_member(node, name_token.value, type_argument, call, safe, end)

    def class_member(self, node: _Node, name: str, type_argument: str | None, call: _Arguments | None, safe: bool, end: int) -> _Node:
        cls = node.type
        members = _members(cls)
        member = members.get(name)
        if member is None:
            raise self.fail(f"Unsupported member '{name}' on {cls.__name__}", f": use one of {', '.join(sorted(members))}.")
        if member.parameters is None:
            if call is not None or type_argument is not None:
                raise self.fail(f"'{name}' on {cls.__name__} is a property, not a method")
            receiver = self.receiver(node, f"read '{name}'", safe)
            return _Node(lambda context: getattr(receiver(context), name), _static(member.type), node.start, end)
        if call is None:
            raise self.fail(f"'{name}' on {cls.__name__} is a method: call it as {member.usage(name)}")
        if type_argument is not None and not member.generic:
            raise self.fail(f"'{name}' on {cls.__name__} is not generic", f": call it as {member.usage(name)}.")
        arguments = self.bind(member, name, call)
        if type_argument is not None:
            arguments["T"] = _constant(type_argument, str, node.end, end)
        receiver = self.receiver(node, f"call '{name}'", safe)
        return _Node(self.invoke(receiver, name, arguments, node), _static(member.type), node.start, end)

    def bind(self, member: _Member, name: str, call: _Arguments) -> dict[str, _Node]:
        """C# argument binding: positional arguments fill parameters in order, named ones by name."""
        parameters = member.parameters or ()
        usage = f": use {member.usage(name)}."
        if len(call.positional) > len(parameters):
            raise self.fail(f"Too many arguments ({len(call.positional)}) for '{name}'", usage)
        arguments = {parameter.name: argument for parameter, argument in zip(parameters, call.positional)}
        names = [parameter.name for parameter in parameters]
        for key, argument in call.named.items():
            if key not in names:
                raise self.fail(f"Unknown named argument '{key}' for '{name}'", usage)
            if key in arguments:
                raise self.fail(f"Argument '{key}' of '{name}' is given twice", usage)
            arguments[key] = argument
        for parameter in parameters:
            if parameter.name not in arguments and parameter.default is parameter.empty:
                raise self.fail(f"Missing argument '{parameter.name}' for '{name}'", usage)
        for key, argument in arguments.items():
            hint = member.hints.get(key, Any)
            if not _accepts(hint, argument.type):
                raise self.fail(f"Argument '{key}' of '{name}' must be {_type_name(_static(hint))}, not {_type_name(argument.type)}")
        return arguments

    def invoke(self, receiver: _Evaluator, name: str, arguments: dict[str, _Node], node: _Node) -> _Evaluator:
        source, text = self.source, self.text(node)

        def failed(exc: Exception) -> ExpressionRuntimeError:
            return _runtime_error(source, f"Calling '{name}' on '{text}' failed ({type(exc).__name__})")

        if all(argument.constant is not _NOT_CONSTANT for argument in arguments.values()):
            constants = {key: argument.constant for key, argument in arguments.items()}

            def invoke_constants(context: Context) -> Any:
                method = getattr(receiver(context), name)
                try:
                    return method(**constants)
                except _CALL_ERRORS as exc:
                    raise failed(exc) from exc

            return invoke_constants
        evaluators = tuple((key, argument.fn) for key, argument in arguments.items())

        def invoke(context: Context) -> Any:
            method = getattr(receiver(context), name)
            values = {key: evaluate(context) for key, evaluate in evaluators}
            try:
                return method(**values)
            except _CALL_ERRORS as exc:
                raise failed(exc) from exc

        return invoke

    def builtin_member(self, node: _Node, name: str, type_argument: str | None, call: _Arguments | None, safe: bool, end: int) -> _Node:
        builtin = _BUILTINS.get(name)
        static = node.type
        if static is NoneType:
            raise self.fail(f"Cannot use '{name}' on null")
        if builtin is None or not builtin.applies_to(static):
            raise self.fail(f"Unsupported member '{name}' on {_type_name(static)}", f": use one of {_builtin_names(static)}.")
        if builtin.arity is None and call is not None:
            raise self.fail(f"'{name}' is a property, not a method")
        if builtin.arity is not None and call is None:
            raise self.fail(f"'{name}' is a method: call it as {name}(…)")
        if type_argument is not None or (call and call.named):
            raise self.fail(f"'{name}' takes no type or named arguments")
        arguments = tuple(argument.fn for argument in call.positional) if call else ()
        if builtin.arity is not None:
            fewest, most = builtin.arity
            if len(arguments) < fewest or (most is not None and len(arguments) > most):
                raise self.fail(f"Wrong number of arguments ({len(arguments)}) for '{name}'", f": it takes {_arity_text(fewest, most)}.")
        receiver = self.receiver(node, f"{'read' if builtin.arity is None else 'call'} '{name}'", safe)
        source, text = self.source, self.text(node)
        implementations = builtin.implementations
        fallback = implementations.get(object)

        def dynamic_member(context: Context) -> Any:
            value = receiver(context)
            implementation = implementations.get(type(value), fallback)
            if implementation is None:
                kind = type(value)
                allowed = _builtin_names(kind)
                raise _runtime_error(source, f"'{name}' is not available on {_type_name(kind)} '{text}' (use one of {allowed})")
            values = [argument(context) for argument in arguments]
            try:
                return implementation(value, *values)
            except ValueError as exc:
                raise _runtime_error(source, f"'{name}' on '{text}' failed: {exc}") from None
            except _CALL_ERRORS:
                given = ", ".join(_value_type_name(v) for v in values)
                raise _runtime_error(source, f"'{name}' on '{text}' cannot take ({given})") from None

        return _Node(dynamic_member, builtin.returns, node.start, end)

    def index(self, node: _Node, safe: bool) -> _Node:
        opener = self.advance()
        if self.at("]"):
            raise self.fail(f"Empty indexer at character {opener.start + 1}")
        key = self.expression()
        if not self.at("]"):
            raise self.fail(f"Missing ']' for '[' at character {opener.start + 1}") if self.token.kind == "end" else self.unexpected()
        end = self.advance().end
        receiver = self.receiver(node, "index", safe)
        if node.type in (dict, list, Any):
            return _Node(self.dynamic_index(receiver, key, node), Any, node.start, end)
        indexer = None if node.type in _VALUE_TYPES else _indexer(node.type)
        if indexer is None or indexer.parameters is None or len(indexer.parameters) != 1:
            raise self.fail(f"{_type_name(node.type)} '{self.text(node)}' has no indexer")
        hint = indexer.hints.get(indexer.parameters[0].name, Any)
        if not _accepts(hint, key.type):
            raise self.fail(f"The key of '{self.text(node)}' must be {_type_name(_static(hint))}, not {_type_name(key.type)}")
        return _Node(self.class_index(receiver, key, node), _static(indexer.type), node.start, end)

    def class_index(self, receiver: _Evaluator, key: _Node, node: _Node) -> _Evaluator:
        source, text, key_fn = self.source, self.text(node), key.fn

        def index(context: Context) -> Any:
            obj, name = receiver(context), key_fn(context)
            try:
                return obj[name]
            except (LookupError, TypeError):
                raise _runtime_error(source, f"Key {name!r} not found in '{text}'") from None

        return index

    def dynamic_index(self, receiver: _Evaluator, key: _Node, node: _Node) -> _Evaluator:
        """JObject indexers return null for a missing key; JArray indexers need an index in range."""
        source, text, key_fn = self.source, self.text(node), key.fn

        def index(context: Context) -> Any:
            obj, name = receiver(context), key_fn(context)
            if type(obj) is dict and type(name) is str:
                return obj.get(name)
            if type(obj) is list and type(name) is int and 0 <= name < len(obj):
                return obj[name]
            if type(obj) is list and type(name) is int:
                raise _runtime_error(source, f"Index {name} is out of range for '{text}' ({len(obj)} items)")
            raise _runtime_error(source, f"Cannot index {_value_type_name(obj)} '{text}' with {_value_type_name(name)}")

        return index

    def receiver(self, node: _Node, action: str, safe: bool) -> _Evaluator:
        """The evaluator of a member's target, which stops on null: with `?.` the chain yields null, else it fails."""
        fn = node.fn
        if fn is _root:
            return fn
        if safe:

            def conditional(context: Context) -> Any:
                value = fn(context)
                if value is None:
                    raise _NullChain
                return value

            return conditional
        source, text = self.source, self.text(node)

        def required(context: Context) -> Any:
            value = fn(context)
            if value is None:
                raise _runtime_error(source, f"Cannot {action}: '{text}' is null (use '?.' or '?[' to get null instead)")
            return value

        return required

    def cast(self) -> _Node:
        opener = self.advance()
        name = self.advance().value
        self.advance()
        if name not in _TYPES:
            raise self.fail(f"Unsupported cast to '{name}'", f": use one of {', '.join(_TYPES)}.")
        operand = self.unary()
        if operand.type not in _VALUE_TYPES:
            raise self.fail(f"Cannot cast {_type_name(operand.type)} '{self.text(operand)}' to {name}")
        static, convert = _TYPES[name]
        fn, source = operand.fn, self.source

        def cast(context: Context) -> Any:
            value = fn(context)
            try:
                return convert(value)
            except ValueError as exc:
                raise _runtime_error(source, f"Cannot cast {_value_type_name(value)} to {name} ({exc})") from None

        return _Node(cast, static, opener.start, operand.end)

    def negate(self, operand: _Node, start: int) -> _Node:
        self.numeric(operand, "-")
        if type(operand.constant) in _NUMBERS:
            return _constant(-operand.constant, operand.type, start, operand.end)
        fn, source, text = operand.fn, self.source, self.text(operand)

        def negate(context: Context) -> Any:
            value = fn(context)
            if type(value) in _NUMBERS:
                return -value
            if value is None:
                return None
            raise _runtime_error(source, f"Operator '-' needs a number, but '{text}' is {_value_type_name(value)}")

        return _Node(negate, operand.type, start, operand.end)

    # Operators

    def combine(self, op: str, left: _Node, right: _Node) -> _Node:
        start, end = left.start, right.end
        if op in ("||", "&&"):
            left_fn, right_fn = self.boolean(left, f"The left operand of '{op}'"), self.boolean(right, f"The right operand of '{op}'")
            if op == "||":
                return _Node(lambda context: left_fn(context) or right_fn(context), bool, start, end)
            return _Node(lambda context: left_fn(context) and right_fn(context), bool, start, end)
        if op in ("==", "!="):
            return _Node(_equality(op, left, right), bool, start, end)
        if op == "+" and str in (left.type, right.type):
            left_fn, right_fn = left.fn, right.fn
            return _Node(lambda context: _text(left_fn(context)) + _text(right_fn(context)), str, start, end)
        self.numeric(left, op)
        self.numeric(right, op)
        text = self.source[start:end]
        if op in _COMPARISONS:
            return _Node(_comparison(op, left.fn, right.fn, self.source, text), bool, start, end)
        static = _join(left.type, right.type) if {left.type, right.type} <= _NUMBERS else Any
        return _Node(_arithmetic(op, left.fn, right.fn, self.source, text), static, start, end)

    def boolean(self, node: _Node, role: str) -> _Evaluator:
        """A closure that yields the node's value as a bool; C# has no truthiness, so anything else fails."""
        if node.type is bool:
            return node.fn
        if node.type is not Any:
            raise self.fail(f"{role} must be a bool, but '{self.text(node)}' is {_type_name(node.type)}")
        fn, source, text = node.fn, self.source, self.text(node)

        def checked(context: Context) -> bool:
            value = fn(context)
            if type(value) is bool:
                return value
            raise _runtime_error(source, f"{role} must be a bool, but '{text}' is {_value_type_name(value)}")

        return checked

    def numeric(self, node: _Node, op: str) -> None:
        allowed = _NUMERIC_OPERANDS | {_dt.datetime} if op in _COMPARISONS else _NUMERIC_OPERANDS
        if node.type not in allowed:
            raise self.fail(f"Operator '{op}' needs numbers, but '{self.text(node)}' is {_type_name(node.type)}")


def _short_circuit(node: _Node) -> _Node:
    """Close a member chain that contains `?.`: a null met there makes the whole chain null."""
    fn = node.fn

    def chain(context: Context) -> Any:
        try:
            return fn(context)
        except _NullChain:
            return None

    return replace(node, fn=chain)


def _equality(op: str, left: _Node, right: _Node) -> _Evaluator:
    left_fn, right_fn = left.fn, right.fn
    if {left.type, right.type} <= {str, int, float, NoneType}:
        if op == "==":
            return lambda context: left_fn(context) == right_fn(context)
        return lambda context: left_fn(context) != right_fn(context)
    if op == "==":
        return lambda context: _equals(left_fn(context), right_fn(context))
    return lambda context: not _equals(left_fn(context), right_fn(context))


def _comparison(op: str, left: _Evaluator, right: _Evaluator, source: str, text: str) -> _Evaluator:
    """C# relational operators: numbers (or dates); a null operand makes the comparison false."""
    compare = _COMPARISONS[op]

    def comparison(context: Context) -> bool:
        a, b = left(context), right(context)
        if (type(a) in _NUMBERS and type(b) in _NUMBERS) or (isinstance(a, _dt.datetime) and isinstance(b, _dt.datetime)):
            return compare(a, b)
        if a is None or b is None:
            return False
        raise _runtime_error(source, f"Cannot compare {_value_type_name(a)} and {_value_type_name(b)} in '{text}'")

    return comparison


def _arithmetic(op: str, left: _Evaluator, right: _Evaluator, source: str, text: str) -> _Evaluator:
    """C# arithmetic on numbers; `+` concatenates when either value is a string; a null operand gives null."""
    apply = _ARITHMETIC[op]

    def arithmetic(context: Context) -> Any:
        a, b = left(context), right(context)
        if type(a) in _NUMBERS and type(b) in _NUMBERS:
            try:
                return apply(a, b)
            except ZeroDivisionError:
                raise _runtime_error(source, f"Division by zero in '{text}'") from None
        if op == "+" and (type(a) is str or type(b) is str):
            return _text(a) + _text(b)
        if a is None or b is None:
            return None
        raise _runtime_error(source, f"Operator '{op}' cannot take {_value_type_name(a)} and {_value_type_name(b)} in '{text}'")

    return arithmetic
