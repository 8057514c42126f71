"""Values that must never reach a log line, an error message or a response."""

from __future__ import annotations


class Secret:
    """A string that never shows itself in `repr`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __bool__(self) -> bool:
        return bool(self._value)
