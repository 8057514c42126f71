"""`System.Text.RegularExpressions`: Regex (static and instance), Match and Group, with a match timeout.

Patterns run on the `regex` package, which reads .NET's syntax (named groups `(?<name>…)`, `\\k<name>`) and
stops a match at its timeout: the smaller of a timeout the policy passes and MAX_SECONDS.
Replacement strings use .NET's `$1`, `${name}`, `$0`/`$&` and `$$`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import re as _re
from collections.abc import Callable
from typing import Any, TypeVar

from policies.expressions._errors import DotNetError
from policies.expressions._library import CONSTRUCTORS, enum_type, method, static, type_argument
from policies.expressions._limits import MAX_SECONDS, sized
from policies.expressions._types import BOOL, STRING, register_class, sequence

_T = TypeVar("_T")


class RegexOptions(enum.IntFlag):
    None_ = 0
    IgnoreCase = 1
    Multiline = 2
    ExplicitCapture = 4
    Compiled = 8
    Singleline = 16
    IgnorePatternWhitespace = 32
    ECMAScript = 256
    CultureInvariant = 512


OPTIONS = enum_type(RegexOptions, ("RegexOptions", "System.Text.RegularExpressions.RegexOptions"))
_FLAGS = {RegexOptions.IgnoreCase: "IGNORECASE", RegexOptions.Multiline: "MULTILINE",
          RegexOptions.Singleline: "DOTALL", RegexOptions.IgnorePatternWhitespace: "VERBOSE"}  # fmt: skip


@functools.cache
def _regex() -> Any:
    """The `regex` package, imported with the first pattern: most gateways never run one, and it costs ~20 ms at start."""
    import regex

    return regex


def _compiled(pattern: str, options: int) -> Any:
    """The compiled pattern; short ones (what policies write) are cached, long ones (from request data) are not."""
    return _cached(pattern, options) if len(pattern) <= 1024 else _compile(pattern, options)


@functools.lru_cache(maxsize=256)
def _cached(pattern: str, options: int) -> Any:
    return _compile(pattern, options)


def _compile(pattern: str, options: int) -> Any:
    regex = _regex()
    flags = regex.V0
    for option, flag in _FLAGS.items():
        if options & option:
            flags |= getattr(regex, flag)
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise DotNetError("ArgumentException", f"Invalid pattern '{pattern[:60]}': {exc}") from None


def _settings(arguments: tuple[Any, ...]) -> tuple[int, float]:
    options = next((a for a in arguments if isinstance(a, RegexOptions)), RegexOptions.None_)
    limit = next((a.total_seconds() for a in arguments if type(a) is _dt.timedelta), MAX_SECONDS)
    return int(options), max(min(limit, MAX_SECONDS), 0.001)


def _run(operation: Callable[[], _T]) -> _T:
    try:
        return operation()
    except TimeoutError:
        raise DotNetError("RegexMatchTimeoutException", "The regular expression timed out.") from None


class Group:
    """One capture group of a match."""

    def __init__(self, match: Any, key: int | str) -> None:
        self._match, self._key = match, key

    @property
    def Success(self) -> bool:  # noqa: N802 - .NET's names
        return self._match is not None and self._match.start(self._key) >= 0

    @property
    def Value(self) -> str:  # noqa: N802
        return (self._match.group(self._key) or "") if self.Success else ""

    @property
    def Index(self) -> int:  # noqa: N802
        return max(self._match.start(self._key), 0) if self.Success else 0

    @property
    def Length(self) -> int:  # noqa: N802
        return len(self.Value)

    def ToString(self) -> str:  # noqa: N802
        return self.Value


class Groups:
    """`match.Groups[1]`, `match.Groups["name"]`: a group that did not take part has Success false."""

    def __init__(self, match: Any) -> None:
        self._match = match

    def __getitem__(self, key: Any) -> Group:
        if self._match is None:
            return Group(None, 0)
        try:
            self._match.start(key)
        except (IndexError, _regex().error):
            return Group(None, 0)
        return Group(self._match, key)

    @property
    def Count(self) -> int:  # noqa: N802
        return (len(self._match.groups()) + 1) if self._match is not None else 0


class RegexMatch(Group):
    """A match (or a failed one: Success false, Value empty)."""

    def __init__(self, match: Any) -> None:
        super().__init__(match, 0)

    @property
    def Groups(self) -> Groups:  # noqa: N802
        return Groups(self._match)


register_class(Group, "Group", "System.Text.RegularExpressions")
register_class(Groups, "GroupCollection", "System.Text.RegularExpressions")
MATCH = register_class(RegexMatch, "Match", "System.Text.RegularExpressions")
MATCHES = sequence(MATCH, "MatchCollection")
_REPLACEMENT = _re.compile(r"\$(?:\{(\w+)\}|(\d+)|([$&`']))")


def _replacer(replacement: str) -> Callable[[Any], str]:
    """A function giving .NET's replacement text for a match."""

    def replace(match: Any) -> str:
        def token(found: _re.Match[str]) -> str:
            name, number, symbol = found.groups()
            if symbol == "$":
                return "$"
            if symbol == "&":
                whole: str = match.group(0)
                return whole
            if symbol in ("`", "'"):
                subject: str = match.string
                return subject[: match.start()] if symbol == "`" else subject[match.end() :]
            key: int | str = int(number) if number is not None else name
            try:
                return match.group(key) or ""
            except (IndexError, _regex().error):
                return found.group()

        return _REPLACEMENT.sub(token, replacement)

    return replace


class Regex:
    """`new Regex(pattern, options, timeout)`: the same operations as the static members, pattern compiled once."""

    def __init__(self, pattern: str, *settings: Any) -> None:
        if type(pattern) is not str:
            raise DotNetError("ArgumentNullException", "Value cannot be null. (Parameter 'pattern')")
        options, self._timeout = _settings(settings)
        self._pattern = _compiled(pattern, options)

    def IsMatch(self, input: str) -> bool:  # noqa: N802, A002 - .NET's names
        return self._search(input) is not None

    def Match(self, input: str) -> RegexMatch:  # noqa: N802, A002
        return RegexMatch(self._search(input))

    def _search(self, input: str) -> Any:  # noqa: A002
        return _run(lambda: self._pattern.search(_text(input), timeout=self._timeout))

    def Matches(self, input: str) -> list[RegexMatch]:  # noqa: N802, A002
        found = _run(lambda: list(self._pattern.finditer(_text(input), timeout=self._timeout)))
        return sized([RegexMatch(m) for m in found])

    def Replace(self, input: str, replacement: str) -> str:  # noqa: N802, A002
        replaced: str = _run(lambda: self._pattern.sub(_replacer(_text(replacement)), _text(input), timeout=self._timeout))
        return sized(replaced)

    def Split(self, input: str) -> list[str]:  # noqa: N802, A002
        return sized(_run(lambda: self._pattern.split(_text(input), timeout=self._timeout)))

    def ToString(self) -> str:  # noqa: N802
        return str(self._pattern.pattern)


def _text(value: Any) -> str:
    if type(value) is not str:
        raise DotNetError("ArgumentNullException", "Value cannot be null. (Parameter 'input')")
    return value


register_class(Regex, "Regex", "System.Text.RegularExpressions")
CONSTRUCTORS["Regex"] = method(Regex, type_argument, 1, 3)
static(
    "Regex",
    ("System.Text.RegularExpressions.Regex",),
    IsMatch=method(lambda input, pattern, *settings: Regex(pattern, *settings).IsMatch(input), BOOL, 2, 4, costly=True),
    Match=method(lambda input, pattern, *settings: Regex(pattern, *settings).Match(input), MATCH, 2, 4, costly=True),
    Matches=method(lambda input, pattern, *settings: Regex(pattern, *settings).Matches(input), MATCHES, 2, 4, costly=True),
    Replace=method(lambda input, pattern, replacement, *settings: Regex(pattern, *settings).Replace(input, replacement), STRING, 3, 5, costly=True),
    Split=method(lambda input, pattern, *settings: Regex(pattern, *settings).Split(input), sequence(STRING), 2, 4, costly=True),
    Escape=method(lambda value: _regex().escape(_text(value), special_only=True), STRING, 1),
)
