"""One configured backend at run time: its credentials, health (breaker, waits) and resolved timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from gateway.backends.config import DEFAULT_TIMEOUTS, ApiKeyAuth, BackendConfig, Timeouts
from gateway.backends.credentials import TokenProvider
from gateway.backends.health import BackendHealth, PredictiveRouting
from gateway.errors import BackendUnavailable


class Backend:
    """A configured backend plus its live state: credentials, health (breaker, waits) and resolved timeouts."""

    def __init__(
        self,
        config: BackendConfig,
        token_provider: TokenProvider | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        predictive: PredictiveRouting | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.id = config.id
        self.base_url = config.url
        self.deployments = config.deployments
        self.timeouts = config.timeouts.resolve(timeouts)
        self.health = BackendHealth(config.id, config.circuit_breaker, predictive, clock)
        self._token_provider = token_provider
        auth = config.auth
        self._static_headers: tuple[tuple[str, str], ...] = (("api-key", auth.key.reveal()),) if isinstance(auth, ApiKeyAuth) else ()

    def serves(self, deployment: str) -> bool:
        return self.config.serves(deployment)

    async def auth_headers(self) -> tuple[tuple[str, str], ...]:
        if self._token_provider is None:
            return self._static_headers
        return (("authorization", "Bearer " + await self._token_provider.token()),)

    def select(self, deployment: str | None, tried: Collection[str]) -> Backend:
        """A backend named directly is its own choice, unless its breaker is open: then 503, as APIM answers."""
        wait = self.health.tripped_until - self.health.clock()
        if wait > 0:
            raise BackendUnavailable(wait)
        return self
