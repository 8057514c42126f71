"""Parsing policy XML safely, with line numbers, the way APIM accepts it.

APIM lets expressions hold raw C# inside attributes and text — `value="@(ctx.Headers.GetValueOrDefault("x", "y"))"`
or `@(n < 5)` — which is not well-formed XML. Like APIM, we escape the inside of every `@( … )` and `@{ … }`
before the XML parser sees it (already-escaped entities are left alone), keeping line numbers intact.
defusedxml then refuses DTDs, entity declarations and external references, so XML bombs cannot load.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import XMLParser

from policies.errors import PolicyLoadError

#: Larger documents are refused before parsing.
MAX_DOCUMENT_CHARS = 256 * 1024
_ENTITY = re.compile(r"&(?:quot|amp|lt|gt|apos|#[0-9]+|#x[0-9a-fA-F]+);")
_ESCAPES = {"<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


class PolicyElement(ET.Element):
    """An element that remembers the line it starts on."""

    line: int = 0


class _LineTreeBuilder(ET.TreeBuilder):
    def __init__(self) -> None:
        super().__init__(element_factory=PolicyElement)
        self.expat: object | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> PolicyElement:  # type: ignore[override]
        element: PolicyElement = super().start(tag, attrs)  # type: ignore[assignment]
        element.line = self.expat.CurrentLineNumber  # type: ignore[attr-defined]
        return element


def parse(text: str) -> PolicyElement:
    """Parse a policy document into elements carrying `.line`; raise PolicyLoadError on any problem."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise PolicyLoadError(f"The document has {len(text)} characters; at most {MAX_DOCUMENT_CHARS} are accepted.")
    builder = _LineTreeBuilder()
    parser = XMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = parser.parser
    try:
        parser.feed(escape_expressions(text))
        root: PolicyElement = parser.close()
    except DefusedXmlException as exc:
        raise PolicyLoadError(f"Forbidden XML construct ({type(exc).__name__}): DTDs and entities are not allowed.") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise PolicyLoadError(f"Malformed XML: {exc.msg if hasattr(exc, 'msg') else exc} (column {column}).", line=line) from None
    return root


def escape_expressions(text: str) -> str:
    """Escape XML-special characters inside `@( … )` and `@{ … }` so raw C# survives the XML parser."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("@", i)
        if start < 0 or start + 1 >= n:
            out.append(text[i:])
            break
        if text[start + 1] not in "({" or _inside_markup_comment(text, start):
            out.append(text[i : start + 1])
            i = start + 1
            continue
        end = _matching_close(text, start + 1)
        out.append(text[i : start + 2])
        out.append(_escape(text[start + 2 : end]))
        i = end
    return "".join(out)


def _inside_markup_comment(text: str, position: int) -> bool:
    opened = text.rfind("<!--", 0, position)
    return opened >= 0 and text.rfind("-->", opened, position) < 0


def _matching_close(text: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at`, skipping C# string and char literals."""
    closer = {"(": ")", "{": "}"}
    stack = [closer[text[open_at]]]
    i = open_at + 1
    n = len(text)
    while i < n and stack:
        ch = text[i]
        if ch in "\"'":
            i = _end_of_literal(text, i)
            continue
        if ch in "({[":
            stack.append({"(": ")", "{": "}", "[": "]"}[ch])
        elif ch == stack[-1]:
            stack.pop()
            if not stack:
                return i
        i += 1
    return n  # unbalanced: leave the rest as is; the expression compiler reports it


def _end_of_literal(text: str, quote_at: int) -> int:
    quote = text[quote_at]
    verbatim = quote == '"' and quote_at > 0 and text[quote_at - 1] == "@"
    i = quote_at + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and not verbatim:
            i += 2
            continue
        if ch == quote:
            if verbatim and i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _escape(expression: str) -> str:
    parts: list[str] = []
    i = 0
    for match in _ENTITY.finditer(expression):
        parts.append(_escape_plain(expression[i : match.start()]))
        parts.append(match.group())
        i = match.end()
    parts.append(_escape_plain(expression[i:]))
    return "".join(parts)


def _escape_plain(text: str) -> str:
    text = text.replace("&", "&amp;")
    for raw, escaped in _ESCAPES.items():
        text = text.replace(raw, escaped)
    return text
