"""A validated set of policy documents, one per scope, and the effective pipeline of each request kind.

This is what a gateway instance holds in force: the documents loaded from storage (validated all together, so
a set either loads whole or not at all), merged per (product, API, operation) at `<base />` the first time such
a request comes, and kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from policies.document import DEFAULT_DOCUMENT, PolicyDocument, Scope, effective_sections, load_document
from policies.errors import PolicyLoadError
from policies.pipeline import Pipeline
from policies.statement import SECTIONS, Expansion, Loader
from policies.statements.include_fragment import check_fragment_id, fragment_statements


class PolicySet:
    """Validated documents by scope, and the effective pipeline per (product, API, operation), built once."""

    def __init__(self, documents: Mapping[Scope, PolicyDocument], version: int, default: PolicyDocument) -> None:
        self.documents = dict(documents)
        self.version = version
        self._default = default
        self._pipelines: dict[tuple[str | None, str, str], Pipeline] = {}

    def pipeline(self, product: str | None, api: str, operation: str) -> Pipeline:
        key = (product, api, operation)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            chain = [
                self.documents.get(Scope("global")),
                self.documents.get(Scope("product", product)) if product else None,
                self.documents.get(Scope("api", api)),
                self.documents.get(Scope("operation", operation)),
            ]
            sections = effective_sections(chain, self._default)
            pipeline = Pipeline(sections["inbound"], sections["backend"], sections["outbound"], sections["on-error"])
            self._pipelines[key] = pipeline
        return pipeline


def compile_policy_set(xml_by_scope: Mapping[str, str], version: int, loader: Loader, fragments: Mapping[str, str] | None = None) -> PolicySet:
    """Load every document, `include-fragment` resolved against `fragments` (by id; None: the loader's own).

    The first failure raises PolicyLoadError naming the scope.
    """
    if fragments is not None:
        loader = dataclasses.replace(loader, fragments=fragments)
    documents = {}
    for scope_text, xml in xml_by_scope.items():
        scope = Scope.parse(scope_text)
        documents[scope] = load_scoped(xml, scope, loader)
    return PolicySet(documents, version, load_document(DEFAULT_DOCUMENT, Scope("global"), loader))


def load_scoped(xml: str, scope: Scope, loader: Loader) -> PolicyDocument:
    try:
        return load_document(xml, scope, loader)
    except ValueError as exc:
        raise type(exc)(f"Policy for scope {scope}: {exc}") from None


def check_fragment(fragment_id: str, xml: str, loader: Loader) -> tuple[str, ...]:
    """Validate a fragment as it will be included: its id, its form, and its statements (fragments it includes
    resolved against `loader.fragments`) in every section; returns the sections it can be included in.

    Raises ValueError for a bad id, PolicyLoadError when the fragment fits no section: the error itself when
    every section refuses it alike, otherwise each section's.
    """
    check_fragment_id(fragment_id)
    statements = fragment_statements(xml)
    errors: dict[str, PolicyLoadError] = {}
    for section in SECTIONS:
        try:
            dataclasses.replace(loader, section=section, including=(fragment_id,), expanded=Expansion()).statements(statements)
        except PolicyLoadError as exc:
            errors[section] = exc
    fits = tuple(section for section in SECTIONS if section not in errors)
    if fits:
        return fits
    if len({str(error) for error in errors.values()}) == 1:
        raise errors["inbound"]
    raise PolicyLoadError("Its statements fit no one section: " + "; ".join(f"in <{name}>: {error}" for name, error in errors.items()))
