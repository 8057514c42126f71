"""Parsing policy XML safely, with line numbers, the way APIM accepts it.

APIM lets expressions hold raw C# inside attributes and text — `value="@(ctx.Headers.GetValueOrDefault("x", "y"))"`
or `@(n < 5)` — which is not well-formed XML. Like APIM, we escape the inside of every `@( … )` and `@{ … }`
before the XML parser sees it (already-escaped entities are left alone), keeping line numbers intact. The
scan understands C# strings (verbatim and interpolated, holes included), char literals and comments, so a
quote or bracket inside any of them cannot end an expression early or late. defusedxml then refuses DTDs,
entity declarations and external references, so XML bombs cannot load.

Bounds, checked while parsing (a document past them is refused with PolicyLoadError):

    MAX_DOCUMENT_CHARS   262,144 characters in one document
    MAX_XML_DEPTH        32 levels of nested elements (<policies> and its sections included)
    MAX_XML_ELEMENTS     4,000 elements in one document

Everything here is linear in the document's length.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import XMLParser

from policies.errors import PolicyLoadError

MAX_DOCUMENT_CHARS = 256 * 1024
MAX_XML_DEPTH = 32
MAX_XML_ELEMENTS = 4_000
_ENTITY = re.compile(r"&(?:quot|amp|lt|gt|apos|#[0-9]+|#x[0-9a-fA-F]+);")
_ESCAPES = {"<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
#: What the escaper looks for: markup comments and CDATA (skipped whole) and expression openers.
_LANDMARK = re.compile(r"<!--|<!\[CDATA\[|@[({]")
#: `&quot;` is a quote too: documents written for XML escape the quotes inside attribute values.
_STRING_OPENERS = ('$@"', '@$"', '$"', '@"', '"', "$&quot;", "&quot;")
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_CODE_LANDMARK = re.compile(r"[/'\"$@()\[\]{}]|&quot;")
_STRING_LANDMARK = re.compile(r'[\\"{}\n]|&quot;')


class PolicyElement(ET.Element):
    """An element that remembers the line it starts on."""

    line: int = 0


class _LineTreeBuilder(ET.TreeBuilder):
    """Builds PolicyElements with line numbers, refusing documents nested or sized past the bounds."""

    def __init__(self) -> None:
        super().__init__(element_factory=PolicyElement)
        self.expat: object | None = None
        self.depth = 0
        self.elements = 0

    def start(self, tag: str, attrs: dict[str, str]) -> PolicyElement:
        line = self.expat.CurrentLineNumber  # type: ignore[union-attr]
        self.depth += 1
        self.elements += 1
        if self.depth > MAX_XML_DEPTH:
            raise PolicyLoadError(f"Elements are nested more than {MAX_XML_DEPTH} levels deep.", tag, line)
        if self.elements > MAX_XML_ELEMENTS:
            raise PolicyLoadError(f"The document has more than {MAX_XML_ELEMENTS:,} elements.", tag, line)
        element: PolicyElement = super().start(tag, attrs)  # type: ignore[assignment]
        element.line = line
        return element

    def end(self, tag: str) -> PolicyElement:
        self.depth -= 1
        return super().end(tag)  # type: ignore[return-value]


def parse(text: str) -> PolicyElement:
    """Parse a policy document into elements carrying `.line`; raise PolicyLoadError on any problem."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise PolicyLoadError(f"The document has {len(text):,} characters; at most {MAX_DOCUMENT_CHARS:,} are accepted.")
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
        reason = str(exc).split(": line ")[0]
        raise PolicyLoadError(f"Malformed XML: {reason} (column {column}).", line=line) from None
    except (ValueError, UnicodeError) as exc:
        if isinstance(exc, PolicyLoadError):
            raise
        raise PolicyLoadError(f"Malformed XML: {exc}.") from None
    return root


def escape_expressions(text: str) -> str:
    """Escape XML-special characters inside `@( … )` and `@{ … }` so raw C# survives the XML parser."""
    out: list[str] = []
    i = 0
    while (landmark := _LANDMARK.search(text, i)) is not None:
        start, found = landmark.start(), landmark.group()
        if found[0] == "<":
            close = text.find("-->" if found == "<!--" else "]]>", landmark.end())
            end = len(text) if close < 0 else close + 3
            out.append(text[i:end])
            i = end
            continue
        end = _matching_close(text, start + 1)
        out.append(text[i : start + 2])
        escaped = _escape(text[start + 2 : end])
        # An attribute's line breaks would become spaces (XML normalises them), and a `//` comment would then
        # swallow the rest of the block: keep each as a character reference, followed by the break itself so
        # that line numbers stay where they were.
        out.append(escaped.replace("\n", "&#10;\n") if _in_attribute(text, start) else escaped)
        i = end
    out.append(text[i:])
    return "".join(out)


def _in_attribute(text: str, at: int) -> bool:
    """Whether the `@` at `at` starts an attribute's value (`name="@(`), not an element's text."""
    before = text[max(at - 64, 0) : at].rstrip()
    return before[-1:] in ('"', "'") and before[:-1].rstrip().endswith("=")


def _matching_close(text: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at`, past C# strings, char literals and comments.

    One stack holds both brackets (their closing character) and string literals being read (a tuple saying
    whether verbatim and interpolated); an interpolation hole pushes its `}` above its string. No recursion.
    """
    stack: list[str | tuple[bool, bool]] = [_CLOSERS[text[open_at]]]
    i, n = open_at + 1, len(text)
    while i < n:
        top = stack[-1]
        if isinstance(top, tuple):
            i = _in_string(text, i, top, stack)
            continue
        found = _CODE_LANDMARK.search(text, i)
        if found is None:
            break
        i, char = found.start(), found.group()
        if char == "/":
            if text.startswith("//", i):
                newline = text.find("\n", i)
                i = n if newline < 0 else newline
            elif text.startswith("/*", i):
                close = text.find("*/", i + 2)
                i = n if close < 0 else close + 2
            else:
                i += 1
            continue
        if char == "'":
            i = _after_char_literal(text, i)
            continue
        opener = next((o for o in _STRING_OPENERS if text.startswith(o, i)), None) if char[0] in '"$@&' else None
        if opener is not None:
            stack.append(("@" in opener, "$" in opener))
            i += len(opener)
            continue
        if char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char == top:
            stack.pop()
            if not stack:
                return i
        i += 1
    return n  # unbalanced: leave the rest as is; the expression compiler reports it


def _in_string(text: str, i: int, mode: tuple[bool, bool], stack: list[str | tuple[bool, bool]]) -> int:
    """Past the next step inside a string literal (an escape, the closing quote, a hole); returns where to go on."""
    verbatim, interpolated = mode
    found = _STRING_LANDMARK.search(text, i)
    if found is None:
        return len(text)
    i, char = found.start(), found.group()
    if char == "\\":
        return i + 1 if verbatim else i + 2
    if char in ('"', "&quot;"):
        if verbatim and text.startswith(char * 2, i):
            return i + 2 * len(char)
        stack.pop()
        return i + len(char)
    if char in "{}":
        if not interpolated or text.startswith(char * 2, i):
            return i + (1 if not interpolated else 2)
        if char == "{":
            stack.append("}")
        return i + 1
    if not verbatim:
        stack.pop()  # a line break ends an unterminated regular string: the compiler reports it
    return i + 1


def _after_char_literal(text: str, quote_at: int) -> int:
    """Past a char literal (`'x'`, `'\\''`, `'\\u0041'`); a lone apostrophe is just skipped."""
    close = text.find("'", quote_at + (3 if text.startswith("\\'", quote_at + 1) else 2), quote_at + 9)
    return close + 1 if close >= 0 else quote_at + 1


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
