"""Tokenising C# text: names, literals, operators and punctuation; comments are skipped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policies.expressions._errors import ExpressionError, _load_error
from policies.expressions._limits import MAX_NESTING
from policies.expressions._types import DOUBLE, INT, LONG, CType


@dataclass(frozen=True, slots=True)
class _Token:
    #: "name", "number", "string", "char", "template" (interpolated string), "op" or "end".
    kind: str
    #: The name, operator, number or text; a template's parts are strings and _Holes.
    value: Any
    start: int
    end: int
    #: A number's static type (int, long or double).
    ctype: CType | None = None


@dataclass(frozen=True, slots=True)
class _Hole:
    """`{expression,alignment:format}` inside an interpolated string."""

    tokens: tuple[_Token, ...]
    alignment: int | None
    format: str | None


_NUMBER = re.compile(r"0[xX][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9][0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?")
_SUFFIX = re.compile(r"[uUlLfFdDmM]{0,2}")
_NAME = re.compile(r"[^\W\d]\w*")
_OPERATOR = re.compile(r"\?\?=|=>|==|!=|<=|>=|&&|\|\||\?\?|\?\.(?![0-9])|\+\+|--|\+=|-=|\*=|/=|%=|&=|\|=|\^=|[-+*/%!<>=?:.,()\[\]{};&|^~]")
_SPACE = re.compile(r"\s+")
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_STRING_OPENERS = ('$@"', '@$"', '$"', '@"', '"', "'")
_LONG_MAX = (1 << 63) - 1
_INT_MAX = (1 << 31) - 1
_OPENERS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1}


class _Lexer:
    """Splits C# source into tokens; interpolated strings carry their holes as nested token lists."""

    def __init__(self, source: str) -> None:
        self.source = source

    def tokens(self, pos: int = 0, depth: int = 0, in_hole: bool = False) -> tuple[list[_Token], int, _Hole | None]:
        """Tokens from `pos` to the end (or to the `}` closing a hole, with its alignment and format)."""
        if depth > MAX_NESTING:
            raise self.error(f"Interpolated strings are nested more than {MAX_NESTING} deep", start=pos)
        source, tokens, nesting = self.source, [], 0
        alignment: int | None = None
        while pos < len(source):
            char = source[pos]
            if in_hole and nesting == 0 and char in "}:,":
                if char == ",":
                    alignment, pos = self._alignment(pos + 1)
                    char = source[pos : pos + 1]
                form = None
                if char == ":":
                    close = source.find("}", pos)
                    if close < 0:
                        break
                    form, pos = source[pos + 1 : close], close
                if source[pos : pos + 1] != "}":
                    break
                tokens.append(_Token("end", None, pos, pos))
                return tokens, pos + 1, _Hole(tuple(tokens), alignment, form)
            if char.isspace():
                pos = _SPACE.match(source, pos).end()  # type: ignore[union-attr]
                continue
            if char == "/" and source.startswith("//", pos):
                newline = source.find("\n", pos)
                pos = len(source) if newline < 0 else newline + 1
                continue
            if char == "/" and source.startswith("/*", pos):
                close = source.find("*/", pos + 2)
                if close < 0:
                    raise self.error(f"Unterminated comment starting at character {pos + 1}", start=pos)
                pos = close + 2
                continue
            token = self._token(pos, depth)
            if token.kind == "op" and token.value in _OPENERS:
                nesting += _OPENERS[token.value]
            elif token.kind == "op" and token.value == "}" and nesting > 0:
                nesting -= 1
            tokens.append(token)
            pos = token.end
        if in_hole:
            raise self.error("Unterminated '{' in interpolated string", start=pos)
        tokens.append(_Token("end", None, pos, pos))
        return tokens, pos, None

    def _alignment(self, pos: int) -> tuple[int, int]:
        match = re.compile(r"\s*(-?[0-9]{1,4})\s*").match(self.source, pos)
        if match is None:
            raise self.error(f"Invalid alignment in interpolated string at character {pos + 1}", start=pos)
        return int(match.group(1)), match.end()

    def _token(self, pos: int, depth: int) -> _Token:
        source = self.source
        char = source[pos]
        if char in "\"'@$":
            return self._string(pos, depth)
        if number := _NUMBER.match(source, pos):
            return self._number(number)
        if name := _NAME.match(source, pos):
            return _Token("name", name.group(), pos, name.end())
        if op := _OPERATOR.match(source, pos):
            return _Token("op", op.group(), pos, op.end())
        raise self.error(f"Unexpected character {char!r} at character {pos + 1}", start=pos)

    def _number(self, match: re.Match[str]) -> _Token:
        text = match.group().replace("_", "")
        suffix_match = _SUFFIX.match(self.source, match.end())
        suffix = suffix_match.group().lower() if suffix_match else ""
        end = match.end() + len(suffix)
        if _NAME.match(self.source, end) or self.source[end : end + 1].isdigit():
            raise self.error(f"Invalid number {self.source[match.start() : end + 1]!r} at character {match.start() + 1}", start=match.start())
        hexadecimal = text[:2].lower() == "0x"
        integral = hexadecimal or not any(c in text for c in ".eE")
        if integral and suffix not in ("f", "d", "m"):
            digits = text[2:] if hexadecimal else text.lstrip("0") or "0"
            if len(digits) > (16 if hexadecimal else 19) or int(digits, 16 if hexadecimal else 10) > _LONG_MAX:
                raise self.error(
                    f"The number {text} at character {match.start() + 1} is too large (the largest is a long, {_LONG_MAX})", start=match.start()
                )
            value = int(digits, 16 if hexadecimal else 10)
            ctype = LONG if "l" in suffix or value > _INT_MAX else INT
            return _Token("number", value, match.start(), end, ctype)
        if hexadecimal or "u" in suffix or "l" in suffix:
            raise self.error(f"Invalid number {self.source[match.start() : end]!r} at character {match.start() + 1}", start=match.start())
        number = float(text)
        if number in (float("inf"), float("-inf")):
            raise self.error(f"The number {text[:40]} at character {match.start() + 1} is outside the range of double", start=match.start())
        return _Token("number", number, match.start(), end, DOUBLE)

    def _string(self, start: int, depth: int) -> _Token:
        opener = next((o for o in _STRING_OPENERS if self.source.startswith(o, start)), None)
        if opener is None:
            raise self.error(f"Unexpected character {self.source[start]!r} at character {start + 1}", start=start)
        if opener == "'":
            return self._char(start)
        parts, end = self._string_parts(start, start + len(opener), "@" in opener, "$" in opener, depth)
        if "$" not in opener:
            return _Token("string", parts[0], start, end)
        return _Token("template", tuple(parts), start, end)

    def _string_parts(self, start: int, pos: int, verbatim: bool, interpolated: bool, depth: int) -> tuple[list[Any], int]:
        source = self.source
        parts: list[Any] = []
        chunk: list[str] = []
        while True:
            char = source[pos] if pos < len(source) else ""
            if char == "" or (char == "\n" and not verbatim):
                raise self.error(f"Unterminated string starting at character {start + 1}", start=start)
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
                raise self.error(f"Unescaped '}}' in interpolated string at character {pos + 1} (write '}}}}')", start=pos)
            elif interpolated and char == "{":
                parts.append("".join(chunk))
                chunk = []
                _, pos, hole = self.tokens(pos + 1, depth + 1, in_hole=True)
                assert hole is not None
                parts.append(hole)
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
        if code == "x" and (hexdigits := re.match(r"[0-9A-Fa-f]{1,4}", self.source[pos + 2 : pos + 6])):
            return chr(int(hexdigits.group(), 16)), pos + 2 + len(hexdigits.group())
        raise self.error(f"Unsupported escape sequence '\\{code}' at character {pos + 1}", start=pos)

    def _char(self, start: int) -> _Token:
        source = self.source
        escaped = source[start + 1 : start + 2] == "\\"
        if escaped:
            value, pos = self._escape(start + 1)
        else:
            value, pos = source[start + 1 : start + 2], start + 2
        if (not escaped and value in ("", "'", "\n")) or source[pos : pos + 1] != "'":
            raise self.error(f"Invalid character literal at character {start + 1} (a char is one character in single quotes)", start=start)
        return _Token("char", value, start, pos + 1)

    def error(self, problem: str, hint: str = "", start: int = 0) -> ExpressionError:
        return _load_error(self.source, problem, hint, start)


def tokenize(source: str) -> list[_Token]:
    return _Lexer(source).tokens()[0]
