"""`<include-fragment fragment-id="auth" />`: the statements of a policy fragment, inlined where it stands.

A fragment is its own document, `<fragment>` holding statements and nothing else (no sections, no
`<base />`), known to the loader by id (`Loader.fragments`). It is resolved when the including document is
loaded: its statements are loaded in the section where it is included, as if written there, so an effective
document shows them and nothing is looked up per request. A problem inside a fragment is reported with the
including element's line and the fragment's own line. An unknown id and a fragment that includes itself,
directly or through others, are load errors. (APIM's current docs say fragments cannot include fragments;
they may here, to a depth of 10.) Inlining can multiply a document (a fragment included twice, which includes
another twice, …), so the elements fragments add to one document are bounded too: `MAX_EXPANDED_ELEMENTS`.

Fragment ids follow APIM's rule for fragment names (`check_fragment_id`): letters, digits, `_` and `-`, up to
80 characters, starting and ending with a letter, digit or `_`.
"""

from __future__ import annotations

import dataclasses
import re

from policies.errors import PolicyLoadError
from policies.statement import Loader, Settings, Statement, attr, elements_of, register
from policies.xml import MAX_XML_ELEMENTS, PolicyElement, parse

MAX_DEPTH = 10
#: Elements the fragments included in one document may add to it, nested inclusions counted each time.
MAX_EXPANDED_ELEMENTS = MAX_XML_ELEMENTS
_FRAGMENT_ID = re.compile(r"\w(?:[\w-]{0,78}\w)?", re.ASCII)


class IncludeFragmentSettings(Settings):
    fragment_id: str = attr()


@register
class IncludeFragment(Statement):
    element = "include-fragment"

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Statement:
        raise TypeError("include-fragment is expanded into its fragment's statements, never loaded as one statement.")

    @classmethod
    def expand(cls, element: PolicyElement, loader: Loader) -> list[Statement]:
        loader.children(element, ())
        fragment_id = loader.settings(element, IncludeFragmentSettings).fragment_id
        if fragment_id in loader.including:
            cycle = " → ".join((*loader.including[loader.including.index(fragment_id) :], fragment_id))
            raise loader.fail(element, f"Fragment {fragment_id!r} includes itself: {cycle}.")
        if len(loader.including) >= MAX_DEPTH:
            raise loader.fail(element, f"Fragments nest deeper than {MAX_DEPTH}: {' → '.join(loader.including)}.")
        xml = loader.fragments.get(fragment_id)
        if xml is None:
            known = ", ".join(sorted(loader.fragments)) or "none defined"
            raise loader.fail(element, f"Unknown fragment {fragment_id!r}; known fragments: {known}.")
        inner = dataclasses.replace(loader, including=(*loader.including, fragment_id))
        try:
            statements = fragment_statements(xml)
            loader.expanded.count += sum(1 for child in statements for _ in child.iter())
            if loader.expanded.count > MAX_EXPANDED_ELEMENTS:
                raise loader.fail(element, f"Fragments add more than {MAX_EXPANDED_ELEMENTS:,} elements to this document (each inclusion counts).")
            return inner.statements(statements)
        except PolicyLoadError as exc:
            if exc.element == cls.element:
                raise  # already names the include-fragment element nested deeper, with the chain
            raise loader.fail(element, f"In fragment {fragment_id!r}: {exc}") from None


def fragment_statements(xml: str) -> list[PolicyElement]:
    """The statement elements of a `<fragment>` document; PolicyLoadError if it is not one."""
    root = parse(xml)
    if root.tag != "fragment":
        raise PolicyLoadError("The root element of a fragment must be <fragment>.", root.tag, root.line)
    if root.attrib:
        raise PolicyLoadError("<fragment> takes no attributes.", root.tag, root.line)
    statements = elements_of(root)
    for child in statements:
        if child.tag in ("base", "inbound", "backend", "outbound", "on-error"):
            raise PolicyLoadError("A fragment holds statements only: no sections and no <base />.", child.tag, child.line)
    return statements


def check_fragment_id(fragment_id: str) -> str:
    """`fragment_id` if it follows APIM's naming rule for fragments; ValueError naming the rule otherwise."""
    if not _FRAGMENT_ID.fullmatch(fragment_id):
        raise ValueError(
            f"Invalid fragment id {fragment_id[:100]!r}: use up to 80 letters, digits, '_' and '-', starting and ending with a letter, digit or '_'."
        )
    return fragment_id


def included_ids(xml: str) -> set[str]:
    """The fragment ids a document or fragment includes directly (empty when it does not parse)."""
    try:
        root = parse(xml)
    except PolicyLoadError:
        return set()
    return {element.attrib.get("fragment-id", "") for element in root.iter(IncludeFragment.element)} - {""}
