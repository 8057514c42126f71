"""Tokenising C# expression text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policies.expressions._errors import ExpressionError, _load_error


@dataclass(frozen=True, slots=True)
class _Token:
    #: "name", "number", "string", "template" (interpolated string), "op" or "end".
    kind: str
    #: The name, operator, number or string; a template's parts are strings and token tuples (the holes).
    value: Any
    start: int
    end: int


_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(\w*)")
_NAME = re.compile(r"[^\W\d]\w*")
_OPERATOR = re.compile(r"=>|==|!=|<=|>=|&&|\|\||\?\?|\?\.(?![0-9])|\+\+|--|[-+*/%!<>=?:.,()\[\]]")
_SPACE = re.compile(r"\s+")
#: Operators outside the supported subset, refused as soon as they are seen: (what it is, what to do instead).
_FORBIDDEN = {
    "=>": ("Lambda ('=>')", ": expressions cannot define functions (no LINQ)."),
    "=": ("Assignment ('=')", ": expressions cannot change values; compare with '=='."),
    "++": ("Increment ('++')", ": expressions cannot change values."),
    "--": ("Decrement ('--')", ": expressions cannot change values."),
}
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_STRING_OPENERS = ('$@"', '@$"', '$"', '@"', '"', "'")


class _Lexer:
    """Splits C# source into tokens; interpolated strings carry their holes as nested token lists."""

    def __init__(self, source: str) -> None:
        self.source = source

    def tokens(self, pos: int, in_hole: bool = False) -> tuple[list[_Token], int]:
        """Tokens from `pos` to the end, or to the `}` closing an interpolation hole; ends with an "end" token."""
        source, tokens = self.source, []
        while pos < len(source):
            char = source[pos]
            if in_hole and char == "}":
                tokens.append(_Token("end", None, pos, pos))
                return tokens, pos + 1
            if space := _SPACE.match(source, pos):
                pos = space.end()
                continue
            token = self._token(pos)
            if token.kind == "op" and token.value in _FORBIDDEN:
                what, hint = _FORBIDDEN[token.value]
                raise self.error(f"{what} at character {pos + 1} is not supported", hint)
            tokens.append(token)
            pos = token.end
        if in_hole:
            raise self.error("Unterminated '{' in interpolated string")
        tokens.append(_Token("end", None, pos, pos))
        return tokens, pos

    def _token(self, pos: int) -> _Token:
        source = self.source
        char = source[pos]
        if char in "\"'@$":
            return self._string(pos)
        if number := _NUMBER.match(source, pos):
            return self._number(number)
        if name := _NAME.match(source, pos):
            return _Token("name", name.group(), pos, name.end())
        if op := _OPERATOR.match(source, pos):
            return _Token("op", op.group(), pos, op.end())
        raise self.error(f"Unexpected character {char!r} at character {pos + 1}")

    def _number(self, match: re.Match[str]) -> _Token:
        text, suffix = match.group(), match.group(1)
        digits = text[: len(text) - len(suffix)]
        integral = not any(c in digits for c in ".eE")
        if suffix.lower() not in ("", "l", "d", "f", "m") or (suffix.lower() == "l" and not integral):
            raise self.error(f"Invalid number {text!r} at character {match.start() + 1}")
        value: int | float = int(digits) if integral and suffix.lower() in ("", "l") else float(digits)
        return _Token("number", value, match.start(), match.end())

    def _string(self, start: int) -> _Token:
        opener = next((o for o in _STRING_OPENERS if self.source.startswith(o, start)), None)
        if opener is None:
            raise self.error(f"Unexpected character {self.source[start]!r} at character {start + 1}")
        if opener == "'":
            return self._char(start)
        parts, end = self._string_parts(start, start + len(opener), verbatim="@" in opener, interpolated="$" in opener)
        if "$" not in opener:
            return _Token("string", parts[0], start, end)
        return _Token("template", tuple(parts), start, end)

    def _string_parts(self, start: int, pos: int, verbatim: bool, interpolated: bool) -> tuple[list[Any], int]:
        source, parts, chunk = self.source, [], []
        while True:
            char = source[pos] if pos < len(source) else ""
            if char == "" or (char == "\n" and not verbatim):
                raise self.error(f"Unterminated string starting at character {start + 1}")
            if char == '"' and verbatim and source.startswith('""', pos):
                chunk.append('"')
                pos += 2
            elif char == '"':
                parts.append("".join(chunk))
                return parts, pos + 1
            elif interpolated and char in "{}" and source.startswith(char * 2, pos):
                chunk.append(char)
                pos += 2
            elif interpolated and char == "}":
                raise self.error(f"Unescaped '}}' in interpolated string at character {pos + 1} (write '}}}}')")
            elif interpolated and char == "{":
                parts.append("".join(chunk))
                chunk = []
                hole, pos = self.tokens(pos + 1, in_hole=True)
                parts.append(tuple(hole))
            elif char == "\\" and not verbatim:
                decoded, pos = self._escape(pos)
                chunk.append(decoded)
            else:
                chunk.append(char)
                pos += 1

    def _escape(self, pos: int) -> tuple[str, int]:
        code = self.source[pos + 1 : pos + 2]
        if code and code in _ESCAPES:
            return _ESCAPES[code], pos + 2
        digits = self.source[pos + 2 : pos + 6]
        if code == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
            return chr(int(digits, 16)), pos + 6
        raise self.error(f"Unsupported escape sequence '\\{code}' at character {pos + 1}")

    def _char(self, start: int) -> _Token:
        source = self.source
        escaped = source[start + 1 : start + 2] == "\\"
        if escaped:
            value, pos = self._escape(start + 1)
        else:
            value, pos = source[start + 1 : start + 2], start + 2
        if (not escaped and value in ("", "'", "\n")) or source[pos : pos + 1] != "'":
            raise self.error(f"Invalid character literal at character {start + 1} (a char is one character in single quotes)")
        return _Token("string", value, start, pos + 1)

    def error(self, problem: str, hint: str = "") -> ExpressionError:
        return _load_error(self.source, problem, hint)
