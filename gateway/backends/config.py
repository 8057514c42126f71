"""Backend configuration: what `GATEWAY_BACKENDS` (or `AZURE_OPENAI_ENDPOINT`) declares, parsed and checked once.

Configuration comes from settings, in one of two forms:

* `GATEWAY_BACKENDS`: a JSON list, one object per backend::

      [{"id": "east", "url": "https://east.openai.azure.com", "deployments": ["gpt-4o"],
        "api_key_setting": "EAST_OPENAI_KEY"},
       {"id": "west", "url": "https://west.openai.azure.com", "deployments": ["*"],
        "managed_identity": {"client_id": "<user-assigned identity client id>"}}]

  An API key is never written in the JSON itself: `api_key_setting` names the setting that holds it, so a
  Key Vault reference in App Settings works. `"managed_identity": true` uses the system-assigned identity.

  A backend may also carry APIM's circuit breaker (one rule; ISO-8601 durations) and its own timeouts::

      {"id": "ptu", "url": "https://ptu.openai.azure.com", "deployments": ["gpt-4o"], "api_key_setting": "PTU_KEY",
       "circuitBreaker": {"rules": [{"name": "throttled", "tripDuration": "PT1M", "acceptRetryAfter": true,
           "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 429, "max": 429}],
                                "errorReasons": ["timeout", "connection failure"]}}]},
       "timeouts": {"connect": 5, "firstByte": 120, "idle": 30}}

  and a pool (APIM's `"type": "pool"`) groups backends; it serves deployments and is named by
  `set-backend-service backend-id` like a backend::

      {"id": "gpt-4o-pool", "type": "pool", "deployments": ["gpt-4o"],
       "pool": {"services": [{"id": "ptu", "priority": 1}, {"id": "paygo-east", "priority": 2, "weight": 50},
                             {"id": "paygo-west", "priority": 2, "weight": 50}]}}

  For deployment routing, pools come before single backends (exact names first, then "*"), so members can
  still list "*" for direct use. `"deployments": []` makes a backend that serves no model and is reached only by
  id: an Azure AI Content Safety resource for `llm-content-safety`, for instance.

  `"embeddings_deployment": "text-embedding-3-small"` names the deployment semantic-cache lookups with
  `embeddings-backend-id="<this backend>"` get embeddings from. APIM's way of naming it is accepted too: a
  `url` ending in `/openai/deployments/<deployment>/embeddings` (the backend then serves chat as usual).
* `AZURE_OPENAI_ENDPOINT` (+ `AZURE_OPENAI_API_KEY`, or managed identity with an optional
  `AZURE_OPENAI_CLIENT_ID`, and `AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT` for the semantic cache): one backend,
  id `default`, serving every deployment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.backends.health import ERROR_REASONS, SERVER_ERRORS, BreakerRule
from gateway.config.sensitive import Secret

#: Most members a pool may have (APIM's limit).
MAX_MEMBERS = 30
ANY_DEPLOYMENT = "*"
_SETTING = "Setting 'GATEWAY_BACKENDS'"
_COMMON_KEYS = frozenset({"id", "type", "deployments", "description", "title"})
_BACKEND_KEYS = _COMMON_KEYS | {"url", "api_key_setting", "managed_identity", "circuitBreaker", "timeouts", "embeddings_deployment"}
#: APIM's embeddings backend URL form, accepted as `url` for a backend's embeddings deployment.
_EMBEDDINGS_URL = re.compile(r"^(?P<resource>.+?)/openai/deployments/(?P<deployment>[^/?#]+)/embeddings/?$")
_POOL_KEYS = _COMMON_KEYS | {"pool"}


@dataclass(frozen=True)
class ApiKeyAuth:
    key: Secret


@dataclass(frozen=True)
class ManagedIdentityAuth:
    client_id: str | None = None


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect, to the response headers ("first byte"), and between chunks of a body ("idle").

    None takes the gateway-wide value (`GATEWAY_UPSTREAM_CONNECT_TIMEOUT`, `GATEWAY_UPSTREAM_READ_TIMEOUT`).
    """

    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None

    def resolve(self, defaults: Timeouts) -> Timeouts:
        return Timeouts(
            self.connect if self.connect is not None else defaults.connect,
            self.first_byte if self.first_byte is not None else defaults.first_byte,
            self.idle if self.idle is not None else defaults.idle,
        )


#: The platform ends an HTTP response after 230 s (Azure Functions' front end): a backend silent for longer than
#: this gets the gateway's own timeout error (or a stream's orderly end) before the platform's 502 would come.
READ_TIMEOUT_SECONDS = 220.0
DEFAULT_TIMEOUTS = Timeouts(10.0, READ_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class BackendConfig:
    id: str
    #: Resource endpoint without the `/openai` suffix, e.g. https://name.openai.azure.com
    url: str
    deployments: frozenset[str]
    auth: ApiKeyAuth | ManagedIdentityAuth | None
    circuit_breaker: BreakerRule | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: The deployment semantic-cache lookups naming this backend get embeddings from.
    embeddings_deployment: str | None = None

    def serves(self, deployment: str) -> bool:
        return deployment in self.deployments or ANY_DEPLOYMENT in self.deployments


@dataclass(frozen=True)
class PoolMemberConfig:
    id: str
    #: Lower is preferred (APIM: 1 is the highest priority); 1 when the pool sets no priorities.
    priority: int
    #: Relative share within the priority group; 1 each when the group sets no weights.
    weight: int


@dataclass(frozen=True)
class PoolConfig:
    id: str
    deployments: frozenset[str]
    members: tuple[PoolMemberConfig, ...]


Config = BackendConfig | PoolConfig


def parse_backends(env: Mapping[str, str]) -> tuple[Config, ...]:
    raw = env.get("GATEWAY_BACKENDS")
    if raw:
        try:
            items: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{_SETTING} is not valid JSON ({exc.msg} at position {exc.pos}).") from None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValueError(f"{_SETTING} must be a JSON list of backend objects.")
        configs = tuple(_config_from_json(item, env) for item in items)
        ids = [c.id for c in configs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{_SETTING} repeats a backend id: {ids}.")
        _check_pool_members(configs)
        return configs
    endpoint = env.get("AZURE_OPENAI_ENDPOINT")
    if not endpoint:
        return ()
    key = env.get("AZURE_OPENAI_API_KEY")
    auth = ApiKeyAuth(Secret(key)) if key else ManagedIdentityAuth(env.get("AZURE_OPENAI_CLIENT_ID") or None)
    url = _endpoint(endpoint, "Setting 'AZURE_OPENAI_ENDPOINT'")
    embeddings = env.get("AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT") or None
    return (BackendConfig("default", url, frozenset({ANY_DEPLOYMENT}), auth, embeddings_deployment=embeddings),)


def _config_from_json(item: dict[str, Any], env: Mapping[str, str]) -> Config:
    backend_id = item.get("id")
    if not isinstance(backend_id, str) or not backend_id:
        raise ValueError(f"{_SETTING}: every backend needs a string 'id' (got {item.get('id')!r}).")
    where = f"{_SETTING}, backend {backend_id!r}"
    kind = item.get("type", "single")
    if not isinstance(kind, str) or kind.lower() not in ("single", "pool"):
        raise ValueError(f'{where}: \'type\' must be "single" (the default) or "pool", not {kind!r}.')
    is_pool = kind.lower() == "pool"
    unknown = sorted(set(item) - (_POOL_KEYS if is_pool else _BACKEND_KEYS))
    if unknown:
        if is_pool and unknown[0] in _BACKEND_KEYS:
            raise ValueError(f"{where}: a pool has no {unknown[0]!r} of its own; set it on its member backends.")
        allowed = ", ".join(sorted(_POOL_KEYS if is_pool else _BACKEND_KEYS))
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {allowed}.")
    deployments = item.get("deployments", [ANY_DEPLOYMENT])
    if not isinstance(deployments, list) or not all(isinstance(d, str) and d for d in deployments) or (is_pool and not deployments):
        raise ValueError(f"{where}: 'deployments' must be a list of names (or [\"*\"]; [] for a backend only named by id).")
    if is_pool:
        return PoolConfig(backend_id, frozenset(deployments), _pool_members(item.get("pool"), where))
    url_value, embeddings_deployment = _embeddings_deployment(item, where)
    url = _endpoint(url_value, where)
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
    breaker = _breaker_rule(item.get("circuitBreaker"), where)
    return BackendConfig(backend_id, url, frozenset(deployments), auth, breaker, _timeouts(item.get("timeouts"), where), embeddings_deployment)


def _pool_members(value: object, where: str) -> tuple[PoolMemberConfig, ...]:
    """APIM's `pool.services`: ids with optional priority and weight (0-100); all members or none set each."""
    if not isinstance(value, dict) or "services" not in value:
        raise ValueError(f'{where}: a pool needs "pool": {{"services": [{{"id": "<backend id>"}}, ...]}}.')
    if set(value) - {"services"}:
        raise ValueError(f"{where}: 'pool' takes only 'services' (session affinity is not supported).")
    services = value["services"]
    if not isinstance(services, list) or not 1 <= len(services) <= MAX_MEMBERS:
        raise ValueError(f"{where}: 'pool.services' must list 1 to {MAX_MEMBERS} member backends.")
    members: list[tuple[str, int | None, int | None]] = []
    for service in services:
        if not isinstance(service, dict) or not isinstance(service.get("id"), str) or set(service) - {"id", "priority", "weight"}:
            raise ValueError(f'{where}: each pool member is {{"id": "<backend id>", "priority": 1, "weight": 50}}, got {service!r}.')
        members.append(
            (service["id"], _percent_int(service.get("priority"), where, "priority"), _percent_int(service.get("weight"), where, "weight"))
        )
    ids = [member_id for member_id, _, _ in members]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: a member appears twice in 'pool.services': {ids}.")
    if len({priority is None for _, priority, _ in members}) > 1:
        raise ValueError(f"{where}: give every pool member a 'priority', or none.")
    for group in {priority for _, priority, _ in members}:
        if len({weight is None for _, priority, weight in members if priority == group}) > 1:
            raise ValueError(f"{where}: give every member of priority group {1 if group is None else group} a 'weight', or none.")
    return tuple(PoolMemberConfig(m, 1 if p is None else p, 1 if w is None else w) for m, p, w in members)


def _percent_int(value: object, where: str, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{where}: a pool member's {name!r} must be an integer from 0 to 100, got {value!r}.")
    return value


def _check_pool_members(configs: Sequence[Config]) -> None:
    singles = {c.id: c for c in configs if isinstance(c, BackendConfig)}
    for pool in configs:
        if not isinstance(pool, PoolConfig):
            continue
        where = f"{_SETTING}, pool {pool.id!r}"
        for member in pool.members:
            if member.id not in singles:
                kind = "is a pool (pools hold single backends only)" if member.id in {c.id for c in configs} else "is not configured"
                raise ValueError(f"{where}: member {member.id!r} {kind}; backends: {', '.join(sorted(singles)) or 'none'}.")
        for deployment in sorted(pool.deployments - {ANY_DEPLOYMENT}):
            if not any(singles[m.id].serves(deployment) for m in pool.members):
                raise ValueError(f"{where}: no member serves deployment {deployment!r}; add it to a member's 'deployments'.")


_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
#: errorReasons as written ("Server errors", "ConnectionFailure", "timeout"), by their letters only.
_ERROR_REASON_NAMES = {"".join(ch for ch in reason if ch.isalpha()): reason for reason in ERROR_REASONS} | {"servererror": SERVER_ERRORS}


def _duration(value: object, where: str) -> float:
    """ISO-8601 durations as APIM writes them ("PT1M", "PT30S", "P1D"); years and months are ambiguous, so refused."""
    match = _ISO_DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{where} {value!r} is not an ISO-8601 duration such as "PT30S" or "PT1M".')
    weeks, days, hours, minutes, seconds = (float(part or 0) for part in match.groups())
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"{where} {value!r} must be longer than zero.")
    return total


def _breaker_rule(value: object, where: str) -> BreakerRule | None:
    """APIM's `circuitBreaker`: exactly one rule, as APIM allows one per backend."""
    if value is None:
        return None
    rules = value.get("rules") if isinstance(value, dict) and set(value) == {"rules"} else None
    if not isinstance(rules, list) or len(rules) != 1 or not isinstance(rules[0], dict):
        raise ValueError(f"{where}: 'circuitBreaker' must be {{\"rules\": [<one rule>]}} (APIM allows one rule per backend).")
    rule = rules[0]
    where = f"{where}, circuit breaker"
    unknown = sorted(set(rule) - {"name", "failureCondition", "tripDuration", "acceptRetryAfter"})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: acceptRetryAfter, failureCondition, name, tripDuration.")
    condition = rule.get("failureCondition")
    if not isinstance(condition, dict):
        raise ValueError(
            f'{where}: \'failureCondition\' is required, e.g. {{"count": 3, "interval": "PT1M", "statusCodeRanges": [{{"min": 500, "max": 599}}]}}.'
        )
    unknown = sorted(set(condition) - {"count", "percentage", "interval", "statusCodeRanges", "errorReasons"})
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} in 'failureCondition'; allowed: count, errorReasons, interval, percentage, statusCodeRanges."
        )
    count, percentage = condition.get("count"), condition.get("percentage")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"{where}: 'count' must be a positive integer, got {count!r}.")
    if percentage is not None and (isinstance(percentage, bool) or not isinstance(percentage, int | float) or not 0 < percentage <= 100):
        raise ValueError(f"{where}: 'percentage' must be a number above 0 and at most 100, got {percentage!r}.")
    if count is None and percentage is None:
        raise ValueError(f"{where}: 'failureCondition' needs a 'count' or a 'percentage' of failures.")
    ranges = condition.get("statusCodeRanges", [])
    if not isinstance(ranges, list) or not all(_status_range(r) for r in ranges):
        raise ValueError(f'{where}: \'statusCodeRanges\' must be a list of {{"min": 500, "max": 599}} with codes from 200 to 599.')
    reasons = condition.get("errorReasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise ValueError(f"{where}: 'errorReasons' must be a list of strings.")
    normalized = []
    for reason in reasons:
        name = _ERROR_REASON_NAMES.get("".join(ch for ch in reason.lower() if ch.isalpha()))
        if name is None:
            raise ValueError(f"{where}: unknown error reason {reason!r}; known: {', '.join(sorted(ERROR_REASONS))}.")
        normalized.append(name)
    if not ranges and not normalized:
        raise ValueError(f"{where}: 'failureCondition' needs 'statusCodeRanges' or 'errorReasons', or nothing counts as a failure.")
    accept = rule.get("acceptRetryAfter", False)
    if not isinstance(accept, bool):
        raise ValueError(f"{where}: 'acceptRetryAfter' must be true or false.")
    name = rule.get("name", "rule")
    return BreakerRule(
        name=str(name),
        interval=_duration(condition.get("interval"), f"{where}: 'interval'"),
        trip_duration=_duration(rule.get("tripDuration"), f"{where}: 'tripDuration'"),
        count=count,
        percentage=None if percentage is None else float(percentage),
        status_ranges=tuple((r["min"], r["max"]) for r in ranges),
        error_reasons=frozenset(normalized),
        accept_retry_after=accept,
    )


def _status_range(value: object) -> bool:
    if not isinstance(value, dict) or set(value) != {"min", "max"}:
        return False
    low, high = value["min"], value["max"]
    return all(isinstance(v, int) and not isinstance(v, bool) and 200 <= v <= 599 for v in (low, high)) and low <= high


_TIMEOUT_NAMES = {"connect": "connect", "firstByte": "first_byte", "idle": "idle"}


def _timeouts(value: object, where: str) -> Timeouts:
    if value is None:
        return Timeouts()
    if not isinstance(value, dict) or set(value) - set(_TIMEOUT_NAMES):
        raise ValueError(f'{where}: \'timeouts\' takes seconds for connect, firstByte and idle, e.g. {{"firstByte": 120, "idle": 30}}.')
    for name, seconds in value.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
            raise ValueError(f"{where}: timeout {name!r} must be a number of seconds above 0 and at most 3600, got {seconds!r}.")
    return Timeouts(**{_TIMEOUT_NAMES[name]: float(seconds) for name, seconds in value.items()})


def _embeddings_deployment(item: dict[str, Any], where: str) -> tuple[object, str | None]:
    """The backend's URL and embeddings deployment: `embeddings_deployment`, or APIM's form of an embeddings
    backend, `url` = `https://<resource>/openai/deployments/<deployment>/embeddings` (taken apart here)."""
    url, deployment = item.get("url"), item.get("embeddings_deployment")
    if deployment is not None and (not isinstance(deployment, str) or not deployment):
        raise ValueError(f"{where}: 'embeddings_deployment' must be a deployment name, e.g. \"text-embedding-3-small\".")
    match = _EMBEDDINGS_URL.match(url) if isinstance(url, str) else None
    if match is None:
        return url, deployment
    if deployment is not None and deployment != match["deployment"]:
        raise ValueError(f"{where}: 'url' names embeddings deployment {match['deployment']!r} but 'embeddings_deployment' is {deployment!r}.")
    return match["resource"], match["deployment"]


def _endpoint(value: object, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError(f"{where}: {value!r} is not an http(s) URL.")
    url = value.rstrip("/")
    return url.removesuffix("/openai")
