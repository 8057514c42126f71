"""Policy documents, their scopes, and the effective document for one request.

Scopes, broadest first: global → product → API → operation. The effective document is the narrowest
one, with each `<base />` replaced by its parent's same section; a section without `<base />` drops what it
would inherit; a section left out of a document inherits unchanged. The built-in default is the parent of
the global document (it forwards the request in `<backend>`), so `<base />` at global keeps forwarding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.errors import PolicyLoadError
from policies.statement import SECTIONS, Expansion, Loader, Statement
from policies.xml import PolicyElement, parse

SCOPE_KINDS = ("global", "product", "api", "operation")
DEFAULT_DOCUMENT = """<policies>
    <inbound />
    <backend><forward-request /></backend>
    <outbound />
    <on-error />
</policies>"""


@dataclass(frozen=True, order=True)
class Scope:
    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, name = text.partition(":")
        if kind not in SCOPE_KINDS or (kind == "global") != (name == ""):
            raise ValueError(f"Invalid scope {text!r}: use global, product:NAME, api:ID or operation:ID.")
        return cls(kind, name)

    def __str__(self) -> str:
        return self.kind if self.kind == "global" else f"{self.kind}:{self.name}"


class Base:
    """The `<base />` marker: the parent scope's section goes here."""


Item = Statement | Base


@dataclass(frozen=True)
class PolicyDocument:
    scope: Scope
    xml: str
    #: Only the sections the document contains; absent ones inherit.
    sections: Mapping[str, tuple[Item, ...]]


def load_document(xml: str, scope: Scope, loader: Loader) -> PolicyDocument:
    """Parse and validate a whole document; any problem raises PolicyLoadError and nothing is kept."""
    root = parse(xml)
    loader = dataclasses.replace(loader, expanded=Expansion())
    if root.tag != "policies":
        raise PolicyLoadError("The root element must be <policies>.", root.tag, root.line)
    sections: dict[str, tuple[Item, ...]] = {}
    for element in root:
        assert isinstance(element, PolicyElement)
        if element.tag not in SECTIONS:
            raise PolicyLoadError(f"Unknown section; use {', '.join(SECTIONS)}.", element.tag, element.line)
        if element.tag in sections:
            raise PolicyLoadError("Section appears twice.", element.tag, element.line)
        sections[element.tag] = _load_section(element, dataclasses.replace(loader, section=element.tag))
    return PolicyDocument(scope, xml, sections)


def _load_section(section: PolicyElement, loader: Loader) -> tuple[Item, ...]:
    items: list[Item] = []
    bases = 0
    for element in section:
        assert isinstance(element, PolicyElement)
        if element.tag == "base":
            if element.attrib or len(element):
                raise loader.fail(element, "<base /> takes no attributes or children.")
            bases += 1
            if bases > 1:
                raise loader.fail(element, "<base /> may appear once per section.")
            items.append(Base())
        else:
            items.extend(loader.statements([element]))
    return tuple(items)


def effective_sections(chain: Sequence[PolicyDocument | None], default: PolicyDocument) -> dict[str, tuple[Statement, ...]]:
    """Merge `chain` (global, product, API, operation; None where a scope has no document) onto `default`."""
    merged: dict[str, tuple[Statement, ...]] = {name: _resolve(default.sections.get(name, ()), ()) for name in SECTIONS}
    for document in chain:
        if document is None:
            continue
        for name in SECTIONS:
            if name in document.sections:
                merged[name] = _resolve(document.sections[name], merged[name])
    return merged


def _resolve(items: Sequence[Item], parent: tuple[Statement, ...]) -> tuple[Statement, ...]:
    resolved: list[Statement] = []
    for item in items:
        if isinstance(item, Base):
            resolved.extend(parent)
        else:
            resolved.append(item)
    return tuple(resolved)
