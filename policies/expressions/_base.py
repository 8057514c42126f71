"""The compiler's foundation: the token cursor, the nesting bound, local variables and type names.

An expression compiles to a tree of Python closures, each taking the evaluation's Frame (or, for an
`@( … )` without locals or lambdas, the Context itself, which saves a Frame per evaluation). Nodes keep only
offsets into the source, never slices of it, so compiling uses memory linear in the expression's length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from policies.expressions._errors import ExpressionError, _load_error, excerpt
from policies.expressions._lexer import _Token
from policies.expressions._limits import MAX_NESTING
from policies.expressions._types import GENERIC_TYPES, NAMESPACES, TYPE_NAMES, CType, array_of

_Evaluator = Callable[[Any], Any]
NOT_CONSTANT: Any = object()


@dataclass(frozen=True, slots=True)
class _Local:
    name: str
    slot: int
    type: CType


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: its closure, its static type and its span in the source (for messages)."""

    fn: _Evaluator
    type: CType
    start: int
    end: int
    #: The value when the node is a literal or a fixed constant.
    constant: Any = NOT_CONSTANT
    #: What assigning to it means: a _Local, or an _IndexTarget.
    target: Any = None
    #: Allowed as a statement on its own (a call, `new`, an increment, an assignment).
    effect: bool = False
    #: For `context.A.B`: the attribute names read from the context, each with where its text ends.
    path: tuple[tuple[str, int], ...] | None = None


def _context_root(frame: Any) -> Any:
    return frame


def _frame_root(frame: Any) -> Any:
    return frame.context


class _Base:
    """Token cursor, error messages, scopes of local variables, and reading type names."""

    def __init__(self, source: str, tokens: list[_Token], frame_mode: bool) -> None:
        self.source = source
        self.tokens = tokens
        self.position = 0
        self.depth = 0
        self.frame_mode = frame_mode
        #: Reads `context`: from the Frame, or (no locals, no lambdas) the argument is the Context itself.
        self.root: _Evaluator = _frame_root if frame_mode else _context_root
        self.scopes: list[dict[str, _Local]] = [{}]
        self.slot_count = 0
        #: Whether evaluation loops or calls lambdas, so the Frame must keep time.
        self.timed = False
        self.statement_count = 0

    # Tokens

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

    def at_word(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token.kind == "name" and token.value == word

    def accept(self, op: str) -> bool:
        if self.at(op):
            self.advance()
            return True
        return False

    def expect(self, op: str, what: str = "") -> _Token:
        if not self.at(op):
            if self.token.kind == "end":
                raise self.fail(f"Expected '{op}'{f' {what}' if what else ''} but the expression ended")
            raise self.fail(f"Expected '{op}'{f' {what}' if what else ''} at character {self.token.start + 1}, not '{self.token_text()}'")
        return self.advance()

    def expect_name(self, what: str = "a name") -> _Token:
        if self.token.kind != "name":
            raise self.fail(f"Expected {what}") if self.token.kind == "end" else self.unexpected()
        return self.advance()

    def token_text(self, token: _Token | None = None) -> str:
        token = token or self.token
        return excerpt(self.source, token.start, token.end)

    # Messages

    def fail(self, problem: str, hint: str = "", start: int | None = None) -> ExpressionError:
        return _load_error(self.source, problem, hint, self.token.start if start is None else start)

    def unexpected(self) -> ExpressionError:
        token = self.token
        if token.kind == "end":
            return self.fail("Unexpected end")
        if self.at(")"):
            return self.fail(f"Unbalanced parentheses: unexpected ')' at character {token.start + 1}")
        return self.fail(f"Unexpected '{self.token_text()}' at character {token.start + 1}")

    def text(self, node: _Node) -> str:
        return excerpt(self.source, node.start, node.end)

    # Nesting and scopes

    @contextlib.contextmanager
    def nested(self) -> Iterator[None]:
        """One level deeper: parentheses, calls, indexers, initialisers, lambdas, holes and blocks count."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"The expression nests more than {MAX_NESTING} levels deep (parentheses, calls, blocks)")
        try:
            yield
        finally:
            self.depth -= 1

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        self.scopes.append({})
        try:
            yield
        finally:
            self.scopes.pop()

    def lookup(self, name: str) -> _Local | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def declare(self, token: _Token, ctype: CType) -> _Local:
        """A new local in the innermost scope; C# refuses a name already used by an enclosing local."""
        name = token.value
        if name == "context" or self.lookup(name) is not None:
            raise self.fail(f"A local named '{name}' is already defined here", start=token.start)
        if not self.frame_mode:
            raise self.fail("Local variables need a '@{ … }' block", start=token.start)
        local = _Local(name, self.slot_count, ctype)
        self.slot_count += 1
        self.scopes[-1][name] = local
        return local

    def hidden_slot(self) -> int:
        """A slot no name refers to (a catch clause keeps its exception there for `throw;`)."""
        self.slot_count += 1
        return self.slot_count - 1

    # Types

    def read_type(self, offset: int = 0, nullable: bool = True) -> tuple[CType | None, int]:
        """The type written at `offset` tokens ahead and how many tokens it spans; (None, 0) if none is there."""
        index = self.position + offset
        token = self.tokens[index]
        if token.kind != "name":
            return None, 0
        name = token.value
        index += 1
        while name in NAMESPACES and self._is(index, ".") and self.tokens[index + 1].kind == "name":
            name = f"{name}.{self.tokens[index + 1].value}"
            index += 2
        ctype: CType | None
        if self._is(index, "<"):
            ctype, index = self._generic(name.rsplit(".", 1)[-1], index + 1)
        else:
            ctype = TYPE_NAMES.get(name)
        if ctype is None:
            return None, 0
        while self._is(index, "[") and self._is(index + 1, "]"):
            ctype, index = array_of(ctype), index + 2
        if nullable and self._is(index, "?") and not self._starts_operand(index + 1):
            index += 1
        return ctype, index - self.position - offset

    def _generic(self, name: str, index: int) -> tuple[CType | None, int]:
        build = GENERIC_TYPES.get(name)
        if build is None:
            return None, index
        arguments: list[CType] = []
        while True:
            saved = self.position
            self.position = index
            try:
                with self.nested():
                    argument, length = self.read_type()
            finally:
                self.position = saved
            if argument is None:
                return None, index
            arguments.append(argument)
            index += length
            if self._is(index, ","):
                index += 1
                continue
            if not self._is(index, ">"):
                return None, index
            try:
                return build(arguments), index + 1
            except ValueError as exc:
                raise self.fail(f"'{name}' {exc}") from None

    def _is(self, index: int, op: str) -> bool:
        token = self.tokens[min(index, len(self.tokens) - 1)]
        return token.kind == "op" and token.value == op

    def _starts_operand(self, index: int) -> bool:
        token = self.tokens[min(index, len(self.tokens) - 1)]
        return token.kind in ("name", "number", "string", "char", "template") or (token.kind == "op" and token.value in ("(", "!", "-", "~"))

    def parse_type(self, what: str = "a type") -> CType:
        ctype, length = self.read_type()
        if ctype is None:
            if self.token.kind == "name":
                raise self.fail(f"Unknown type '{self.token_text()}'", f": {type_hint()}")
            raise self.fail(f"Expected {what}") if self.token.kind == "end" else self.unexpected()
        self.position += length
        return ctype


def type_hint() -> str:
    common = ("string", "int", "long", "double", "bool", "object", "JObject", "JArray", "JToken", "DateTime", "TimeSpan", "Jwt")
    return f"use a type the policy language offers, such as {', '.join(common)}"
