"""How an expression fails: at load (ExpressionError) or at run time (ExpressionRuntimeError).

Run-time errors carry the .NET exception type APIM would raise (`kind`), so `catch (FormatException)` in a
`@{ }` block catches what C# would. A bound exceeded (steps, time, size) is an ExpressionLimitError, which no
`catch` can swallow: a loop that catches everything must still stop.
"""

from __future__ import annotations

#: Messages quote at most this much of an expression; a policy may hold a 64 KiB block.
_QUOTE_CHARS = 160


class ExpressionError(ValueError):
    """An expression that cannot be compiled: raised at policy load, so a bad policy never serves a request."""


class ExpressionRuntimeError(Exception):
    """A compiled expression failed on a request: null dereference, missing key, bad cast, division by zero."""

    def __init__(self, message: str, kind: str = "Exception", problem: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        #: The .NET exception type APIM would throw, for `catch (T ex)`.
        self.kind = kind
        #: The message without the expression quoted.
        self.problem = problem if problem is not None else message
        #: The exception's own message, as `ex.Message` shows it in a `catch`.
        self.detail = detail if detail is not None else self.problem


class ExpressionLimitError(ExpressionRuntimeError):
    """An evaluation went past a bound (steps, time, size of a value): never caught by `catch`."""


class DotNetError(Exception):
    """Raised by library members with the .NET exception type and message; the call site adds where it happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def describe(source: str, start: int = 0) -> str:
    """Where in an expression: the whole text when short, else the line and an excerpt."""
    if len(source) <= _QUOTE_CHARS and "\n" not in source:
        return f"expression '{source}'"
    if not source[:start].strip():
        start = len(source) - len(source.lstrip())
    line = source.count("\n", 0, start) + 1
    line_start = source.rfind("\n", 0, start) + 1
    line_end = source.find("\n", start)
    excerpt = source[line_start : line_end if line_end >= 0 else len(source)].strip()[:80]
    return f"expression at its line {line} ('{excerpt}')"


def excerpt(source: str, start: int, end: int) -> str:
    """A sub-expression's text for a message, cut short when long."""
    text = source[start:end]
    return text if len(text) <= 80 else text[:77] + "..."


def part(source: str, start: int, end: int) -> str:
    """` in '<sub-expression>'` for a message, or nothing when the part is the whole expression."""
    if source[:start].strip() == "" and source[end:].strip() == "":
        return ""
    return f" in '{excerpt(source, start, end)}'"


def _load_error(source: str, problem: str, hint: str = "", start: int = 0) -> ExpressionError:
    return ExpressionError(f"{problem} in {describe(source, start)}{hint}")


def _runtime_error(source: str, problem: str, kind: str = "Exception", start: int = 0, detail: str | None = None) -> ExpressionRuntimeError:
    return ExpressionRuntimeError(f"{problem} in {describe(source, start)}", kind, problem, detail)


def _limit_error(source: str, problem: str, start: int = 0) -> ExpressionLimitError:
    return ExpressionLimitError(f"{problem} in {describe(source, start)}", "LimitExceeded", problem)
