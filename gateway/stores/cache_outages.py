"""The semantic cache's failing dependencies (its table, an embeddings backend): a lookup that cannot be
answered from the cache is bypassed, and an outage is logged once, then not retried for a while."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("gateway.stores.semantic_cache")

#: How long a failed dependency is not tried again (lookups bypass the cache meanwhile).
RETRY_AFTER_FAILURE = 5.0


class Bypass(Exception):
    """The lookup cannot be answered from the cache; with a `source`, that dependency failed (an outage)."""

    def __init__(self, source: str | None, message: str) -> None:
        super().__init__(message)
        self.source = source
        self.message = message


class Outages:
    """Failing dependencies: each outage is logged once (and its end once), and not retried for a while."""

    def __init__(self) -> None:
        self._retry_at: dict[str, float] = {}

    def skipping(self, source: str) -> bool:
        return self._retry_at.get(source, 0.0) > time.monotonic()

    def failed(self, source: str, message: str) -> None:
        if source not in self._retry_at:
            logger.warning(
                "Semantic cache: %s. Requests go to the backend without the cache until it recovers (retried every %.0f s).",
                message,
                RETRY_AFTER_FAILURE,
            )
        self._retry_at[source] = time.monotonic() + RETRY_AFTER_FAILURE

    def recovered(self, source: str) -> None:
        if self._retry_at.pop(source, None) is not None:
            logger.info("Semantic cache: %s works again.", source)
