"""The bounds on expressions, and the per-evaluation frame that enforces the run-time ones.

Load time (an expression past them is refused with ExpressionError, so the policy is refused):

    MAX_EXPRESSION_CHARS   65,536 characters in one `@( )` or `@{ }` (after named values are substituted)
    MAX_NESTING            32 levels of parentheses, calls, indexers, initialisers, lambdas, interpolation holes
                           and blocks nested inside each other (chains such as `a + b + c` or `!!x` do not nest)
    MAX_BLOCK_STATEMENTS   1,000 statements in one `@{ }` block, nested blocks included
    number literals        integers within `long`, doubles within `double` (C# refuses larger constants)

These are checked by the compiler itself, not by Python's stack: a whole document at every bound (XML nesting
included) loads within 400 Python frames of its caller and runs within 100, far below Python's limit of 1,000,
so a policy the CLI accepts loads the same in a gateway, whose start path is deeper.

Run time (past them, the evaluation stops with ExpressionLimitError, which `catch` cannot swallow):

    MAX_STEPS              100,000 steps per evaluation: loop iterations, lambda calls, and what a library
                           call walks (one per item of a collection, one per KiB of text)
    MAX_SECONDS            0.5 s of wall time per evaluation (checked every 16 steps and after each costly call;
                           one regex match stops at the smaller of its own timeout and this bound)
    MAX_TEXT_CHARS         32 Mi characters (or bytes) in a string or byte array an expression creates
    MAX_ITEMS              1 Mi items in an array, list or JSON container an expression creates
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from policies.expressions._errors import ExpressionLimitError

if TYPE_CHECKING:
    from policies.context import Context

MAX_EXPRESSION_CHARS = 65_536
MAX_NESTING = 32
MAX_BLOCK_STATEMENTS = 1_000
MAX_STEPS = 100_000
MAX_SECONDS = 0.5
MAX_TEXT_CHARS = 32 * 1024 * 1024
MAX_ITEMS = 1024 * 1024

_EMPTY: list[Any] = []
_T = TypeVar("_T")


class Frame:
    """One evaluation: the context, the local variables' slots, the steps taken and when it started."""

    __slots__ = ("context", "slots", "steps", "started", "result")

    def __init__(self, context: Context, size: int, timed: bool) -> None:
        self.context = context
        self.slots: list[Any] = [None] * size if size else _EMPTY
        self.steps = 0
        #: perf_counter() at the start, taken only by expressions that loop or call lambdas.
        self.started = time.perf_counter() if timed else 0.0
        #: The value of the `return` being executed.
        self.result: Any = None

    def tick(self, count: int = 1) -> None:
        """Count `count` steps; every 16th step (and any bulk charge) also checks the step and time bounds."""
        before = self.steps
        self.steps = before + count
        if count > 1 or (self.steps & 15) == 0:
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.steps > MAX_STEPS:
            raise ExpressionLimitError(
                f"The expression took more than {MAX_STEPS:,} steps (loop iterations, lambda calls, elements processed).",
                "LimitExceeded",
            )
        if self.started and time.perf_counter() - self.started > MAX_SECONDS:
            raise ExpressionLimitError(f"The expression ran for more than {MAX_SECONDS:g} s.", "LimitExceeded")


def sized(value: _T) -> _T:
    """`value` unchanged when within the size bounds; raises ExpressionLimitError otherwise."""
    kind = type(value)
    # mypy does not narrow a TypeVar through `type(value) is ...`: the two ignores below stand for that check.
    if kind is str or kind is bytes:
        if len(value) > MAX_TEXT_CHARS:  # type: ignore[arg-type]
            raise ExpressionLimitError(f"A value the expression built is longer than {MAX_TEXT_CHARS:,} characters.", "LimitExceeded")
    elif (kind is list or kind is dict) and len(value) > MAX_ITEMS:  # type: ignore[arg-type]
        raise ExpressionLimitError(f"A collection the expression built has more than {MAX_ITEMS:,} items.", "LimitExceeded")
    return value
