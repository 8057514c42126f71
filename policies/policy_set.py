"""A validated set of policy documents, one per scope, and the effective pipeline of each request kind.

This is what a gateway instance holds in force: the documents loaded from storage (validated all together, so
a set either loads whole or not at all), merged per (product, API, operation) at `<base />` the first time such
a request comes, and kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.document import DEFAULT_DOCUMENT, PolicyDocument, Scope, effective_sections, load_document
from policies.pipeline import Pipeline
from policies.statement import Loader


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


def compile_policy_set(xml_by_scope: Mapping[str, str], version: int, loader: Loader) -> PolicySet:
    """Load every document; the first failure raises PolicyLoadError naming the scope."""
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
