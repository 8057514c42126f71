"""The two ways an expression fails: at load (ExpressionError) or at run time (ExpressionRuntimeError)."""

from __future__ import annotations


class ExpressionError(ValueError):
    """An expression that cannot be compiled: raised at policy load, so a bad policy never serves a request."""


class ExpressionRuntimeError(Exception):
    """A compiled expression failed on a request: null dereference, missing key, bad cast, division by zero."""


def _load_error(source: str, problem: str, hint: str = "") -> ExpressionError:
    return ExpressionError(f"{problem} in expression '{source}'{hint}")


def _runtime_error(source: str, problem: str) -> ExpressionRuntimeError:
    return ExpressionRuntimeError(f"{problem} in expression '{source}'")
