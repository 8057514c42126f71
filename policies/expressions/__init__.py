"""Policy expressions: the safe subset of C# that APIM accepts inside `@( … )`.

The text is tokenised and parsed here (never `eval`/`exec`) and compiled once, at policy load, into a tree of
Python closures that each request only calls. Member chains that start at `context` are checked against the
typed declarations in `policies.context`, so a typo or an unsupported member fails the load, not a request.
JSON values and variables are dynamic: on them only indexers, casts and a small whitelist of members
(`Length`, `ToLower()`, `Contains(…)`, …) work, dispatched on the runtime type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policies.context import Context
from policies.expressions._compiler import _Evaluator, _Parser
from policies.expressions._errors import ExpressionError as ExpressionError
from policies.expressions._errors import (
    ExpressionRuntimeError as ExpressionRuntimeError,
)
from policies.expressions._lexer import _Lexer
from policies.expressions._runtime import _text


class Expression:
    """A compiled `@( … )` expression: parsed once, then `evaluate` runs per request."""

    __slots__ = ("source", "_evaluate", "_masks")

    def __init__(self, source: str, evaluate: _Evaluator, masks: tuple[tuple[str, str], ...] = ()) -> None:
        self.source = source
        self._evaluate = evaluate
        self._masks = masks

    def evaluate(self, context: Context) -> Any:
        try:
            return self._evaluate(context)
        except ExpressionRuntimeError as exc:
            if not self._masks:
                raise
            raise ExpressionRuntimeError(_redact(str(exc), self._masks)) from exc.__cause__

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class Value:
    """An attribute or element value as written in policy XML: a constant, or an expression to run per request.

    `source` is the text as written, before named values are substituted, so it never shows their contents.
    """

    __slots__ = ("source", "is_constant", "constant", "_expression")

    def __init__(self, source: str, *, constant: Any = None, expression: Expression | None = None) -> None:
        self.source = source
        self.is_constant = expression is None
        self.constant = constant
        self._expression = expression

    @classmethod
    def of(cls, constant: Any) -> Value:
        """A constant that did not come from policy text, such as an attribute's default."""
        return cls(_text(constant), constant=constant)

    def evaluate(self, context: Context) -> Any:
        if self._expression is None:
            return self.constant
        return self._expression.evaluate(context)

    def __repr__(self) -> str:
        return f"Value({self.source!r})"


def compile_expression(source: str) -> Expression:
    """Compile the C# text inside `@(` `)`; raises ExpressionError naming what is wrong."""
    return Expression(source, _compile(source))


_NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


def compile_value(text: str, named_values: Mapping[str, str]) -> Value:
    """Substitute `{{named values}}` as raw text (as APIM does), then compile `@( … )` or keep the literal."""
    used: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in named_values:
            raise ExpressionError(f"Named value {name!r} is not defined in {text!r}: define it or remove '{{{{{name}}}}}'.")
        used[name] = named_values[name]
        return used[name]

    resolved = _NAMED_VALUE.sub(substitute, text)
    stripped = resolved.strip()
    if stripped.startswith("@{"):
        raise ExpressionError(
            f"Multi-statement expressions '@{{ … }}' are not supported in {text!r}: use a single expression '@( … )'."
        )
    if not stripped.startswith("@("):
        return Value(text, constant=resolved)
    if not stripped.endswith(")"):
        raise ExpressionError(
            f"Value {text!r} starts an expression with '@(' but does not end with its ')': "
            "a value is either literal text or one whole '@( … )'."
        )
    masks = tuple(sorted(((value, f"{{{{{name}}}}}") for name, value in used.items() if value), key=lambda mask: -len(mask[0])))
    source = stripped[2:-1]
    try:
        evaluate = _compile(source)
    except ExpressionError as exc:
        raise ExpressionError(_redact(str(exc), masks)) from None
    return Value(text, expression=Expression(source, evaluate, masks))


def _redact(message: str, masks: tuple[tuple[str, str], ...]) -> str:
    """Put `{{name}}` back where a named value's contents appear, since named values often hold secrets."""
    for value, placeholder in masks:
        message = message.replace(value, placeholder)
    return message


def _compile(source: str) -> _Evaluator:
    tokens, _ = _Lexer(source).tokens(0)
    return _Parser(source, tokens).parse().fn
