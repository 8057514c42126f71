"""Policy expressions: the subset of C# APIM accepts in `@( … )` and `@{ … }`, compiled safely.

The text is tokenised and parsed here (never `eval`/`exec`, no reflection, no host access) and compiled once,
at policy load, into a tree of Python closures that each request only calls. Every member is checked at load
against a declared model: the context's typed classes (`policies.context`) and the .NET library surface the
`_lib_*` and `_linq` modules declare (strings, Newtonsoft JSON, LINQ, Convert, Encoding, hashing, DateTime,
Regex, …). JSON values and `object`s are dynamic: their members are checked against the whole library at load
and picked by the run-time type. Bounds on size, nesting, steps, time and allocation are in `_limits`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from policies.context import Context
from policies.expressions import _context_types, _lib_jwt, _lib_regex, _lib_web  # noqa: F401 - they register members
from policies.expressions._base import _Evaluator
from policies.expressions._errors import DotNetError, ExpressionLimitError, _limit_error, _load_error, _runtime_error
from policies.expressions._errors import ExpressionError as ExpressionError
from policies.expressions._errors import ExpressionRuntimeError as ExpressionRuntimeError
from policies.expressions._lexer import tokenize
from policies.expressions._limits import MAX_EXPRESSION_CHARS, Frame
from policies.expressions._runtime import text
from policies.expressions._statements import Compiler


class Expression:
    """A compiled `@( … )` or `@{ … }`: parsed once, then `evaluate` runs per request."""

    __slots__ = ("source", "_evaluate", "_masks", "_slots", "_timed", "_frame_mode")

    def __init__(self, source: str, compiled: Compiler, evaluate: _Evaluator, masks: tuple[tuple[str, str], ...] = ()) -> None:
        self.source = source
        self._evaluate = evaluate
        self._masks = masks
        self._slots = compiled.slot_count
        self._timed = compiled.timed
        self._frame_mode = compiled.frame_mode

    def evaluate(self, context: Context) -> Any:
        try:
            if self._frame_mode:
                return self._evaluate(Frame(context, self._slots, self._timed))
            return self._evaluate(context)
        except ExpressionLimitError as exc:
            raise _limit_error(_redact(self.source, self._masks), exc.problem) from None
        except ExpressionRuntimeError as exc:
            if not self._masks:
                raise
            raise ExpressionRuntimeError(_redact(str(exc), self._masks), exc.kind, _redact(exc.problem, self._masks)) from exc.__cause__
        except DotNetError as exc:
            raise _runtime_error(_redact(self.source, self._masks), exc.message, exc.kind) from None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class Value:
    """An attribute or element value as written in policy XML: a constant, or an expression to run per request.

    `source` is the text as written, before named values are substituted, so it never shows their contents.
    """

    __slots__ = ("source", "is_constant", "constant", "_evaluate")

    def __init__(self, source: str, *, constant: Any = None, expression: Expression | None = None) -> None:
        self.source = source
        self.is_constant = expression is None
        self.constant = constant
        self._evaluate = expression.evaluate if expression is not None else None

    @classmethod
    def of(cls, constant: Any) -> Value:
        """A constant that did not come from policy text, such as an attribute's default."""
        return cls(text(constant), constant=constant)

    def evaluate(self, context: Context) -> Any:
        evaluate = self._evaluate
        return self.constant if evaluate is None else evaluate(context)

    def __repr__(self) -> str:
        return f"Value({self.source!r})"


def compile_expression(source: str) -> Expression:
    """Compile the C# text inside `@(` `)`; raises ExpressionError naming what is wrong."""
    compiled, evaluate = _compile(source, block=False)
    return Expression(source, compiled, evaluate)


def compile_block(source: str) -> Expression:
    """Compile the C# statements inside `@{` `}`; every path must end with `return …;`."""
    compiled, evaluate = _compile(source, block=True)
    return Expression(source, compiled, evaluate)


_NAMED_VALUE = re.compile(r"\{\{([A-Za-z0-9._-]+)\}\}")


def compile_value(text_: str, named_values: Mapping[str, str]) -> Value:
    """Substitute `{{named values}}` as raw text (as APIM does), then compile `@( … )`, `@{ … }` or keep the literal."""
    used: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in named_values:
            raise ExpressionError(f"Named value {name!r} is not defined in {_short(text_)!r}: define it or remove '{{{{{name}}}}}'.")
        used[name] = named_values[name]
        return used[name]

    resolved = _NAMED_VALUE.sub(substitute, text_)
    stripped = resolved.strip()
    block = stripped.startswith("@{")
    if not block and not stripped.startswith("@("):
        return Value(text_, constant=resolved)
    if not stripped.endswith("}" if block else ")"):
        opener, closer = ("@{", "}") if block else ("@(", ")")
        raise ExpressionError(
            f"Value {_short(text_)!r} starts an expression with '{opener}' but does not end with its '{closer}': "
            f"a value is either literal text or one whole '{opener} … {closer}'."
        )
    masks = tuple(sorted(((value, f"{{{{{name}}}}}") for name, value in used.items() if value), key=lambda mask: -len(mask[0])))
    source = stripped[2:-1]
    try:
        compiled, evaluate = _compile(source, block)
    except ExpressionError as exc:
        raise ExpressionError(_redact(str(exc), masks)) from None
    return Value(text_, expression=Expression(source, compiled, evaluate, masks))


def _short(text_: str) -> str:
    return text_ if len(text_) <= 120 else text_[:117] + "..."


def _redact(message: str, masks: tuple[tuple[str, str], ...]) -> str:
    """Put `{{name}}` back where a named value's contents appear, since named values often hold secrets."""
    for value, placeholder in masks:
        message = message.replace(value, placeholder)
    return message


def _compile(source: str, block: bool) -> tuple[Compiler, _Evaluator]:
    if len(source) > MAX_EXPRESSION_CHARS:
        raise _load_error(source[:100], f"The expression has {len(source):,} characters; at most {MAX_EXPRESSION_CHARS:,} are accepted")
    tokens = tokenize(source)
    compiler = Compiler(source, tokens, frame_mode=block or _needs_frame(tokens))
    if block:
        evaluate, _ = compiler.block()
    else:
        evaluate = compiler.parse().fn
    return compiler, evaluate


def _needs_frame(tokens: Iterable[Any]) -> bool:
    """An `@( … )` needs a Frame only if it declares locals: lambda parameters, `out var`, `is T name`."""
    for token in tokens:
        if (token.kind == "op" and token.value == "=>") or (token.kind == "name" and token.value in ("out", "is")):
            return True
        if token.kind == "template" and any(not isinstance(part, str) and _needs_frame(part.tokens) for part in token.value):
            return True
    return False
