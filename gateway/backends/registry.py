"""The backends and pools in force: which one serves a deployment or an id, one token provider per identity.

Configuration and its parsing live in gateway/backends/config.py; this is the run-time side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.backends.backend import Backend
from gateway.backends.config import ANY_DEPLOYMENT, DEFAULT_TIMEOUTS, BackendConfig, Config, ManagedIdentityAuth, PoolConfig, Timeouts
from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.backends.health import PredictiveRouting
from gateway.backends.pools import Pool, PoolMember

#: What a deployment or a `backend-id` names: both answer `select(deployment, tried) -> Backend`.
Target = Backend | Pool


class BackendRegistry:
    """Maps a deployment name or id to a backend or pool; one shared token provider per identity.

    `timeouts` fills what a backend leaves unset; `predictive` enables routing on rate-limit headroom; `clock`
    (wall-clock seconds) is replaceable for tests.
    """

    def __init__(
        self,
        configs: Sequence[Config],
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        predictive: PredictiveRouting | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        providers: dict[str | None, TokenProvider] = {}
        self.backends: list[Backend] = []
        for config in configs:
            if not isinstance(config, BackendConfig):
                continue
            provider = None
            if isinstance(config.auth, ManagedIdentityAuth):
                client_id = config.auth.client_id
                if client_id not in providers:
                    providers[client_id] = TokenProvider(managed_identity_credential(client_id))
                provider = providers[client_id]
            self.backends.append(Backend(config, provider, timeouts, predictive, clock))
        self._providers = list(providers.values())
        singles = {b.id: b for b in self.backends}
        self.pools = [
            Pool(c.id, c.deployments, [PoolMember(singles[m.id], m.priority, m.weight) for m in c.members], predictive is not None, clock)
            for c in configs
            if isinstance(c, PoolConfig)
        ]
        targets: list[Target] = [*self.pools, *self.backends]
        self._exact = {d: t for t in reversed(targets) for d in t.deployments if d != ANY_DEPLOYMENT}
        self._wildcard = next((t for t in targets if ANY_DEPLOYMENT in t.deployments), None)
        self._by_id: dict[str, Target] = {t.id: t for t in targets}
        self._by_url = {b.base_url: b for b in reversed(self.backends)}

    def for_deployment(self, deployment: str) -> Target | None:
        return self._exact.get(deployment, self._wildcard)

    def by_id(self, backend_id: str) -> Target | None:
        return self._by_id.get(backend_id)

    def by_url(self, base_url: str) -> Backend | None:
        """The configured backend at this URL, so `set-backend-service base-url` still gets its credentials."""
        return self._by_url.get(base_url.rstrip("/").removesuffix("/openai"))

    def known_deployments(self) -> list[str]:
        return sorted(self._exact)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    @property
    def embeddings_ids(self) -> frozenset[str]:
        """Backends with an embeddings deployment, and pools whose members all have one."""
        singles = {b.id for b in self.backends if b.config.embeddings_deployment}
        return frozenset(singles | {p.id for p in self.pools if all(m.backend.id in singles for m in p.members)})

    @property
    def serves_any_deployment(self) -> bool:
        return self._wildcard is not None

    @property
    def default(self) -> Target | None:
        """For operations without a deployment (list models, get a response): the wildcard or first backend."""
        return self._wildcard or next(iter(self.backends), None)

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()
