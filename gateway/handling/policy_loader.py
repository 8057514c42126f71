"""The policy loader settings call for: the one `Loader` both the gateway and `policies check`/`apply` use."""

from __future__ import annotations

from gateway.backends.registry import BackendRegistry
from gateway.config.settings import Settings
from policies.statement import Loader


def policy_loader(settings: Settings, registry: BackendRegistry) -> Loader:
    """Named values, backend ids, the URL allow-list and the logger ids: what a document is checked against."""
    return Loader(
        named_values=settings.named_values,
        backend_ids=registry.ids,
        embeddings_backend_ids=registry.embeddings_ids,
        allowed_urls=settings.url_allow_list(),
        logger_ids=frozenset(settings.loggers),
    )
