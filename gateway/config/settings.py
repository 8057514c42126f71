"""Settings read once from the environment (App Settings in Azure, `local.settings.json` values locally).

Every mistake fails at load time with a message that names the setting and says what to do, so a
misconfigured Function App refuses to start instead of failing on the first request.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.backends.config import READ_TIMEOUT_SECONDS, BackendConfig, Config, Timeouts, parse_backends
from gateway.backends.health import PredictiveRouting
from gateway.config.loggers import LoggerConfig, parse_loggers
from gateway.config.sensitive import Secret
from policies.url_allow_list import UrlAllowList

DEFAULT_APIS = ("openai", "openai-v1")
#: More trusted proxies than any real chain: a larger setting is a typo, refused at load.
MAX_HOPS = 8


@dataclass(frozen=True)
class SemanticCacheSettings:
    """`GATEWAY_SEMANTIC_CACHE_*`: see gateway/semantic_cache.py for what the bounds mean."""

    #: Whose entries a request may see: its "subscription"'s, or its "product"'s (shared by its subscriptions).
    scope: str = "subscription"
    #: How old an instance's view of a partition may get: another instance's entry is served this long after its write.
    staleness_seconds: float = 2.0
    #: The longest a lookup holds a request (embedding, first load of a partition) before it goes to the backend.
    timeout_seconds: float = 1.0
    #: How often the local host deletes expired entries (under Azure Functions, a timer trigger does).
    cleanup_seconds: float = 600.0
    #: Memory all semantic-cache partitions of an instance may hold; past it, the least recently hit entries leave
    #: memory (not the table). A 512 MB Flex Consumption instance also holds the Functions host and the worker,
    #: which alone is ~150 MiB with the gateway loaded (bench/semantic_cache.py prints it), and requests in flight
    #: (~2 MiB per open stream): 128 MiB leaves them the rest. That is ~50k entries of 1536 dimensions with
    #: answers of ~0.5 KB compressed; raise it on 2 GB instances.
    max_mib: float = 128.0
    #: A storage connection of the cache's own; None keeps entries in the gateway's storage account.
    connection: Secret | None = None


@dataclass(frozen=True)
class ClientTimeouts:
    """`GATEWAY_CLIENT_*_TIMEOUT_SECONDS`: the local host's deadlines for slow clients (gateway/hosts/slow_clients.py)."""

    headers: float = 10.0
    body: float = 120.0
    #: Keep-alive silence between requests; uvicorn counts it in whole seconds.
    idle: float = 5.0


@dataclass(frozen=True)
class Settings:
    storage_connection: Secret
    key_pepper: Secret
    backends: tuple[Config, ...]
    table_prefix: str = "gateway"
    #: product name -> API ids the product grants access to.
    products: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: How long a verified key stays trusted in memory; bounds how late a suspension takes effect.
    subscription_cache_seconds: float = 5.0
    #: While storage is unavailable, a key verified less than this long ago keeps working (serve-stale).
    subscription_stale_seconds: float = 300.0
    #: Silence on an SSE stream longer than this gets a `: keep-alive` comment.
    sse_keepalive_seconds: float = 15.0
    upstream_connect_timeout: float = 10.0
    #: Longest wait for the backend's next bytes (first byte or between stream chunks); under the platform's 230 s.
    upstream_read_timeout: float = READ_TIMEOUT_SECONDS
    gateway_id: str = "local"
    region: str = "local"
    #: How often each instance checks the policy version row.
    policy_poll_seconds: float = 5.0
    #: APIM named values (`{{name}}` in policies).
    named_values: Mapping[str, str] = field(default_factory=dict)
    #: JWKS per OpenID configuration URL or tenant id, for validate-jwt without network access.
    openid_keys: Mapping[str, Any] = field(default_factory=dict)
    #: Proxies in front of the gateway whose X-Forwarded-* entries are trusted (see gateway/handling/forwarded.py);
    #: 1 under Azure Functions, whose host sets X-Forwarded-For to the peer it saw; 0 locally.
    trusted_proxy_hops: int = 0
    #: Deployment name -> model name, to pick the tokenizer (e.g. {"chat": "gpt-4o"}).
    deployment_models: Mapping[str, str] = field(default_factory=dict)
    #: Tokenizer for deployments not in `deployment_models`.
    default_encoding: str = "o200k_base"
    #: Completion tokens a token limit reserves for a request that sets no max_tokens.
    default_completion_reservation: int = 1024
    #: Share of a limit an instance leases at a time (see gateway/stores/counters.py for the bounds).
    lease_fraction: float = 0.05
    #: How long a lease lives without renewal: what a vanished instance can strand, and for how long.
    lease_seconds: float = 30.0
    #: What rate limits, token limits and quotas do while storage is unavailable: "local" or "refuse" (503).
    limits_on_storage_outage: str = "local"
    #: Window of tokens-per-minute limits. 60 in production; tests shorten it to see several windows quickly.
    token_rate_window_seconds: float = 60.0
    #: How often token metrics are written to the metrics table: what a hard kill can lose.
    metrics_flush_seconds: float = 5.0
    #: A graceful stop waits this long for open streams to end (the platform ends responses after 230 s).
    shutdown_drain_seconds: float = 230.0
    #: When set, token metrics also go to Application Insights as custom metrics.
    appinsights_connection: Secret = field(default_factory=lambda: Secret(""))
    #: The queue policy updates arrive on (Functions reads the same setting: `%GATEWAY_POLICY_QUEUE%`).
    policy_queue: str = "policy-updates"
    #: The local host polls the `policy-updates` queue itself (under Functions, the queue trigger does).
    local_queue_worker: bool = True
    #: How long a message that failed stays invisible before the local worker tries it again (host.json's
    #: `visibilityTimeout`, which the Functions trigger uses).
    policy_queue_retry_seconds: int = 30
    #: How often each instance reads the other instances' backend health (trips, waits) from Table Storage.
    health_sync_seconds: float = 2.0
    #: Route away from a pool member whose rate-limit headroom ran low (None: off).
    predictive_routing: PredictiveRouting | None = None
    #: Key for the `/ops/...` routes (header `x-admin-key`); None hides them (404).
    admin_key: Secret | None = None
    #: The gateway's public base URL (e.g. https://gw.example.com), for the OpenAPI document it serves;
    #: None takes it from the request (X-Forwarded-Host/-Proto first).
    public_url: str | None = None
    #: Semantic-cache scope, bounds and storage (`GATEWAY_SEMANTIC_CACHE_*`).
    semantic_cache: SemanticCacheSettings = field(default_factory=SemanticCacheSettings)
    #: How long the local host waits for a client's headers, body and next request (gateway/hosts/slow_clients.py).
    client_timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    #: Hosts and URL prefixes `base-url` and `send-request` may reach besides the backends (policies/url_allow_list.py).
    allowed_urls: tuple[str, ...] = ()
    #: The loggers `log-to-eventhub` names (`GATEWAY_LOGGERS`; gateway/config/loggers.py).
    loggers: Mapping[str, LoggerConfig] = field(default_factory=dict)

    def url_allow_list(self) -> UrlAllowList:
        """What policies may send requests to: every configured backend's URL, and `GATEWAY_ALLOWED_URLS`."""
        backends = [config.url for config in self.backends if isinstance(config, BackendConfig)]
        return UrlAllowList.parse([*backends, *self.allowed_urls])

    @property
    def upstream_timeouts(self) -> Timeouts:
        """What a backend without its own `timeouts` gets."""
        return Timeouts(self.upstream_connect_timeout, self.upstream_read_timeout, self.upstream_read_timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        connection = env.get("GATEWAY_STORAGE_CONNECTION") or env.get("AzureWebJobsStorage")
        if not connection:
            raise ValueError(
                "Setting 'GATEWAY_STORAGE_CONNECTION' (or 'AzureWebJobsStorage') is missing: set it to a storage "
                "connection string, e.g. 'UseDevelopmentStorage=true' for Azurite."
            )
        pepper = env.get("GATEWAY_KEY_PEPPER", "")
        if len(pepper) < 16:
            raise ValueError(
                "Setting 'GATEWAY_KEY_PEPPER' is missing or shorter than 16 characters: set it to a long random "
                "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`); keys are hashed with it."
            )
        prefix = env.get("GATEWAY_TABLE_PREFIX", "gateway")
        if not (prefix.isalnum() and prefix[:1].isalpha() and len(prefix) <= 40):
            raise ValueError(f"Setting 'GATEWAY_TABLE_PREFIX' has value {prefix!r}: use up to 40 letters and digits, starting with a letter.")
        return cls(
            storage_connection=Secret(connection),
            key_pepper=Secret(pepper),
            backends=parse_backends(env),
            table_prefix=prefix,
            products=_parse_products(env),
            subscription_cache_seconds=_number(env, "GATEWAY_SUBSCRIPTION_CACHE_SECONDS", 5.0),
            subscription_stale_seconds=_number(env, "GATEWAY_SUBSCRIPTION_STALE_SECONDS", 300.0),
            sse_keepalive_seconds=_number(env, "GATEWAY_SSE_KEEPALIVE_SECONDS", 15.0),
            upstream_connect_timeout=_number(env, "GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 10.0),
            upstream_read_timeout=_number(env, "GATEWAY_UPSTREAM_READ_TIMEOUT", READ_TIMEOUT_SECONDS),
            gateway_id=env.get("GATEWAY_ID") or env.get("WEBSITE_INSTANCE_ID", "local")[:32] or "local",
            region=env.get("REGION_NAME", "local"),
            policy_poll_seconds=_number(env, "GATEWAY_POLICY_POLL_SECONDS", 5.0),
            named_values=_json_object(env, "GATEWAY_NAMED_VALUES", str),
            openid_keys=_json_object(env, "GATEWAY_OPENID_KEYS", dict),
            trusted_proxy_hops=_trusted_proxy_hops(env),
            local_queue_worker=_flag(env, "GATEWAY_LOCAL_QUEUE_WORKER", default=True),
            policy_queue=_queue_name(env.get("GATEWAY_POLICY_QUEUE") or "policy-updates"),
            policy_queue_retry_seconds=round(_number(env, "GATEWAY_POLICY_QUEUE_RETRY_SECONDS", 30)),
            health_sync_seconds=_number(env, "GATEWAY_HEALTH_SYNC_SECONDS", 2.0),
            predictive_routing=_predictive_routing(env),
            admin_key=_admin_key(env),
            public_url=_public_url(env.get("GATEWAY_PUBLIC_URL")),
            semantic_cache=_semantic_cache(env),
            client_timeouts=ClientTimeouts(
                headers=_number(env, "GATEWAY_CLIENT_HEADER_TIMEOUT_SECONDS", ClientTimeouts.headers),
                body=_number(env, "GATEWAY_CLIENT_BODY_TIMEOUT_SECONDS", ClientTimeouts.body),
                idle=_number(env, "GATEWAY_CLIENT_IDLE_TIMEOUT_SECONDS", ClientTimeouts.idle),
            ),
            deployment_models=_json_object(env, "GATEWAY_DEPLOYMENT_MODELS", str),
            default_encoding=_choice(env, "GATEWAY_DEFAULT_ENCODING", ("o200k_base", "cl100k_base"), "o200k_base"),
            default_completion_reservation=int(_number(env, "GATEWAY_DEFAULT_COMPLETION_RESERVATION", 1024)),
            lease_fraction=_number(env, "GATEWAY_LEASE_FRACTION", 0.05),
            lease_seconds=_number(env, "GATEWAY_LEASE_SECONDS", 30.0),
            limits_on_storage_outage=_choice(env, "GATEWAY_LIMITS_ON_STORAGE_OUTAGE", ("local", "refuse"), "local"),
            metrics_flush_seconds=_number(env, "GATEWAY_METRICS_FLUSH_SECONDS", 5.0),
            shutdown_drain_seconds=_number(env, "GATEWAY_SHUTDOWN_DRAIN_SECONDS", 230.0),
            token_rate_window_seconds=_number(env, "GATEWAY_TOKEN_RATE_WINDOW_SECONDS", 60.0),
            appinsights_connection=Secret(env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "")),
            allowed_urls=_allowed_urls(env),
            loggers=parse_loggers(env),
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"Setting {name!r} has value {raw!r}: not a number.") from None
    if value <= 0:
        raise ValueError(f"Setting {name!r} has value {raw!r}: it must be greater than 0.")
    return value


def _json_setting(env: Mapping[str, str], name: str) -> Any:
    """A setting holding JSON, parsed; None when unset."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Setting {name!r} is not valid JSON ({exc.msg} at position {exc.pos}).") from None


def _json_object(env: Mapping[str, str], name: str, value_type: type) -> dict[str, Any]:
    data = _json_setting(env, name)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, value_type) for v in data.values()):
        raise ValueError(f"Setting {name!r} must be a JSON object whose values are {value_type.__name__}s.")
    return data


def _queue_name(name: str) -> str:
    """A queue name that leaves room for its poison queue, `<name>-poison` (63 characters at most)."""
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,54}[a-z0-9]", name):
        raise ValueError(f"Setting 'GATEWAY_POLICY_QUEUE' has value {name!r}: use 3-56 lowercase letters, digits and single hyphens.")
    return name


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ValueError(f"Setting {name!r} has value {value!r}: use one of {', '.join(choices)}.")
    return value


def _predictive_routing(env: Mapping[str, str]) -> PredictiveRouting | None:
    if not _flag(env, "GATEWAY_PREDICTIVE_ROUTING", default=False):
        return None
    return PredictiveRouting(
        min_tokens=int(_number(env, "GATEWAY_PREDICTIVE_MIN_TOKENS", 1000)),
        min_requests=int(_number(env, "GATEWAY_PREDICTIVE_MIN_REQUESTS", 1)),
    )


def _trusted_proxy_hops(env: Mapping[str, str]) -> int:
    """`GATEWAY_TRUSTED_PROXY_HOPS`; the older `GATEWAY_TRUST_FORWARDED_FOR=true` means one hop."""
    raw = env.get("GATEWAY_TRUSTED_PROXY_HOPS", "").strip()
    if not raw:
        under_functions = "FUNCTIONS_WORKER_RUNTIME" in env
        return int(_flag(env, "GATEWAY_TRUST_FORWARDED_FOR", default=under_functions))
    if not raw.isdigit() or int(raw) > MAX_HOPS:
        raise ValueError(
            f"Setting 'GATEWAY_TRUSTED_PROXY_HOPS' has value {raw!r}: use the number of proxies in front of the gateway, 0 to {MAX_HOPS}."
        )
    return int(raw)


def _admin_key(env: Mapping[str, str]) -> Secret | None:
    key = env.get("GATEWAY_ADMIN_KEY")
    if not key:
        return None
    if len(key) < 16:
        raise ValueError("Setting 'GATEWAY_ADMIN_KEY' is shorter than 16 characters: use a long random secret, or unset it to hide /ops routes.")
    return Secret(key)


def _public_url(raw: str | None) -> str | None:
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"Setting 'GATEWAY_PUBLIC_URL' has value {raw!r}: use the gateway's base URL, e.g. https://gw.example.com.")
    return raw.rstrip("/")


def _semantic_cache(env: Mapping[str, str]) -> SemanticCacheSettings:
    connection = env.get("GATEWAY_SEMANTIC_CACHE_CONNECTION")
    return SemanticCacheSettings(
        scope=_choice(env, "GATEWAY_SEMANTIC_CACHE_SCOPE", ("subscription", "product"), "subscription"),
        staleness_seconds=_number(env, "GATEWAY_SEMANTIC_CACHE_STALENESS_SECONDS", 2.0),
        timeout_seconds=_number(env, "GATEWAY_SEMANTIC_CACHE_TIMEOUT_SECONDS", 1.0),
        cleanup_seconds=_number(env, "GATEWAY_SEMANTIC_CACHE_CLEANUP_SECONDS", 600.0),
        max_mib=_number(env, "GATEWAY_SEMANTIC_CACHE_MAX_MIB", 128.0),
        connection=Secret(connection) if connection else None,
    )


def _allowed_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """`GATEWAY_ALLOWED_URLS`: a JSON list, or comma-separated hosts and URL prefixes; each entry checked here."""
    raw = env.get("GATEWAY_ALLOWED_URLS", "").strip()
    if raw.startswith("["):
        entries = _json_setting(env, "GATEWAY_ALLOWED_URLS")
        if not all(isinstance(entry, str) for entry in entries):
            raise ValueError("Setting 'GATEWAY_ALLOWED_URLS' must be a JSON list of strings (hosts or URL prefixes).")
    else:
        entries = [entry for entry in raw.split(",") if entry.strip()]
    try:
        UrlAllowList.parse(entries)
    except ValueError as exc:
        raise ValueError(f"Setting 'GATEWAY_ALLOWED_URLS': {exc}.") from None
    return tuple(entry.strip() for entry in entries)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", None):
        return default
    if raw not in ("true", "false", "1", "0"):
        raise ValueError(f"Setting {name!r} has value {raw!r}: use true or false.")
    return raw in ("true", "1")


def _parse_products(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """`GATEWAY_PRODUCTS` is JSON: {"gold": ["openai", "openai-v1"], ...}."""
    data = _json_setting(env, "GATEWAY_PRODUCTS")
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(apis, list) and all(isinstance(api, str) for api in apis) for apis in data.values()):
        raise ValueError('Setting \'GATEWAY_PRODUCTS\' must map product names to lists of API ids, e.g. {"gold": ["openai"]}.')
    unknown = {api for apis in data.values() for api in apis} - set(DEFAULT_APIS)
    if unknown:
        raise ValueError(f"Setting 'GATEWAY_PRODUCTS' names unknown APIs {sorted(unknown)}; known: {list(DEFAULT_APIS)}.")
    return {name: tuple(apis) for name, apis in data.items()}
