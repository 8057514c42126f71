"""Azure OpenAI backends: where a deployment is served and how the gateway authenticates there.

Configuration comes from settings, in one of two forms:

* `GATEWAY_BACKENDS`: a JSON list, one object per backend::

      [{"id": "east", "url": "https://east.openai.azure.com", "deployments": ["gpt-4o"],
        "api_key_setting": "EAST_OPENAI_KEY"},
       {"id": "west", "url": "https://west.openai.azure.com", "deployments": ["*"],
        "managed_identity": {"client_id": "<user-assigned identity client id>"}}]

  An API key is never written in the JSON itself: `api_key_setting` names the setting that holds it, so a
  Key Vault reference in App Settings works. `"managed_identity": true` uses the system-assigned identity.
* `AZURE_OPENAI_ENDPOINT` (+ `AZURE_OPENAI_API_KEY`, or managed identity with an optional
  `AZURE_OPENAI_CLIENT_ID`): one backend serving every deployment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.credentials import TokenProvider, managed_identity_credential
from gateway.sensitive import Secret

ANY_DEPLOYMENT = "*"


@dataclass(frozen=True)
class ApiKeyAuth:
    key: Secret


@dataclass(frozen=True)
class ManagedIdentityAuth:
    client_id: str | None = None


@dataclass(frozen=True)
class BackendConfig:
    id: str
    #: Resource endpoint without the `/openai` suffix, e.g. https://name.openai.azure.com
    url: str
    deployments: frozenset[str]
    auth: ApiKeyAuth | ManagedIdentityAuth | None

    def serves(self, deployment: str) -> bool:
        return deployment in self.deployments or ANY_DEPLOYMENT in self.deployments


class Backend:
    """A configured backend plus the live state it needs to authenticate requests."""

    def __init__(self, config: BackendConfig, token_provider: TokenProvider | None = None) -> None:
        self.config = config
        self.id = config.id
        self.base_url = config.url
        self._token_provider = token_provider
        auth = config.auth
        self._static_headers: tuple[tuple[str, str], ...] = (
            (("api-key", auth.key.reveal()),) if isinstance(auth, ApiKeyAuth) else ()
        )

    async def auth_headers(self) -> tuple[tuple[str, str], ...]:
        if self._token_provider is None:
            return self._static_headers
        return (("authorization", "Bearer " + await self._token_provider.token()),)


class BackendRegistry:
    """Maps a deployment name to the backend serving it; one shared token provider per identity."""

    def __init__(self, configs: tuple[BackendConfig, ...]) -> None:
        providers: dict[str | None, TokenProvider] = {}
        self.backends: list[Backend] = []
        for config in configs:
            provider = None
            if isinstance(config.auth, ManagedIdentityAuth):
                client_id = config.auth.client_id
                if client_id not in providers:
                    providers[client_id] = TokenProvider(managed_identity_credential(client_id))
                provider = providers[client_id]
            self.backends.append(Backend(config, provider))
        self._providers = list(providers.values())
        self._exact = {d: b for b in reversed(self.backends) for d in b.config.deployments if d != ANY_DEPLOYMENT}
        self._wildcard = next((b for b in self.backends if ANY_DEPLOYMENT in b.config.deployments), None)
        self._by_id = {b.id: b for b in self.backends}
        self._by_url = {b.base_url: b for b in reversed(self.backends)}

    def for_deployment(self, deployment: str) -> Backend | None:
        return self._exact.get(deployment, self._wildcard)

    def by_id(self, backend_id: str) -> Backend | None:
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
    def serves_any_deployment(self) -> bool:
        return self._wildcard is not None

    @property
    def default(self) -> Backend | None:
        """For operations without a deployment (list models, get a response): the wildcard or first backend."""
        return self._wildcard or next(iter(self.backends), None)

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()


def parse_backends(env: Mapping[str, str]) -> tuple[BackendConfig, ...]:
    raw = env.get("GATEWAY_BACKENDS")
    if raw:
        try:
            items: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Setting 'GATEWAY_BACKENDS' is not valid JSON ({exc.msg} at position {exc.pos}).") from None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValueError("Setting 'GATEWAY_BACKENDS' must be a JSON list of backend objects.")
        configs = tuple(_backend_from_json(item, env) for item in items)
        ids = [c.id for c in configs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Setting 'GATEWAY_BACKENDS' repeats a backend id: {ids}.")
        return configs
    endpoint = env.get("AZURE_OPENAI_ENDPOINT")
    if not endpoint:
        return ()
    key = env.get("AZURE_OPENAI_API_KEY")
    auth = ApiKeyAuth(Secret(key)) if key else ManagedIdentityAuth(env.get("AZURE_OPENAI_CLIENT_ID") or None)
    return (BackendConfig("default", _endpoint(endpoint, "Setting 'AZURE_OPENAI_ENDPOINT'"), frozenset({ANY_DEPLOYMENT}), auth),)


def _backend_from_json(item: dict[str, Any], env: Mapping[str, str]) -> BackendConfig:
    backend_id = item.get("id")
    if not isinstance(backend_id, str) or not backend_id:
        raise ValueError(f"Setting 'GATEWAY_BACKENDS': every backend needs a string 'id' (got {item.get('id')!r}).")
    where = f"Setting 'GATEWAY_BACKENDS', backend {backend_id!r}"
    url = _endpoint(item.get("url"), where)
    deployments = item.get("deployments", [ANY_DEPLOYMENT])
    if not isinstance(deployments, list) or not deployments or not all(isinstance(d, str) and d for d in deployments):
        raise ValueError(f"{where}: 'deployments' must be a non-empty list of names (or [\"*\"]).")
    auth: ApiKeyAuth | ManagedIdentityAuth | None = None
    key_setting = item.get("api_key_setting")
    identity = item.get("managed_identity")
    if key_setting and identity:
        raise ValueError(f"{where}: use either 'api_key_setting' or 'managed_identity', not both.")
    if key_setting:
        key = env.get(key_setting)
        if not key:
            raise ValueError(f"{where}: its key setting {key_setting!r} is missing or empty.")
        auth = ApiKeyAuth(Secret(key))
    elif identity:
        client_id = identity.get("client_id") if isinstance(identity, dict) else None
        auth = ManagedIdentityAuth(client_id)
    return BackendConfig(backend_id, url, frozenset(deployments), auth)


def _endpoint(value: object, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError(f"{where}: {value!r} is not an http(s) URL.")
    url = value.rstrip("/")
    return url.removesuffix("/openai")
