"""Pools, circuit breakers and timeouts in GATEWAY_BACKENDS: the APIM shapes load, and every mistake fails at
load time with a message naming the setting, the backend and what to write instead."""

from __future__ import annotations

import json

import pytest

from gateway.backends.config import DEFAULT_TIMEOUTS, BackendConfig, PoolConfig, Timeouts, parse_backends
from gateway.backends.health import PredictiveRouting
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import Settings

BASE = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}
RULE = {
    "name": "throttled",
    "failureCondition": {
        "count": 1,
        "interval": "PT1M",
        "statusCodeRanges": [{"min": 429, "max": 429}],
        "errorReasons": ["Server errors", "Timeout", "ConnectionFailure"],
    },
    "tripDuration": "PT1M",
    "acceptRetryAfter": True,
}
CONDITION_KEYS = frozenset({"count", "percentage", "interval", "statusCodeRanges", "errorReasons"})


def load(*items: dict) -> tuple:
    return parse_backends({"GATEWAY_BACKENDS": json.dumps(list(items))})


def backend(backend_id: str = "a", **extra: object) -> dict:
    return {"id": backend_id, "url": f"https://{backend_id}.example", **extra}


def pool(services: list[dict], pool_id: str = "p", **extra: object) -> dict:
    return {"id": pool_id, "type": "pool", "pool": {"services": services}, **extra}


def with_rule(**changes: object) -> dict:
    """A backend with RULE, changed: failure-condition keys go into `failureCondition`, the others into the rule."""
    rule = json.loads(json.dumps(RULE))
    for key, value in changes.items():
        (rule["failureCondition"] if key in CONDITION_KEYS else rule)[key] = value
    return backend(circuitBreaker={"rules": [rule]})


def test_apim_shaped_backend_with_breaker_timeouts_and_pool_loads() -> None:
    a, b, p = load(
        with_rule(),
        backend("b", timeouts={"connect": 2, "firstByte": 90, "idle": 15}),
        pool([{"id": "a", "priority": 1}, {"id": "b", "priority": 2, "weight": 100}], type="Pool", deployments=["gpt-4o"]),
    )
    assert isinstance(a, BackendConfig) and isinstance(p, PoolConfig)
    rule = a.circuit_breaker
    assert rule is not None
    assert (rule.name, rule.count, rule.interval, rule.trip_duration, rule.accept_retry_after) == ("throttled", 1, 60.0, 60.0, True)
    assert rule.status_ranges == ((429, 429),)
    assert rule.error_reasons == {"server errors", "timeout", "connection failure"}
    assert b.timeouts == Timeouts(2.0, 90.0, 15.0)
    assert [(m.id, m.priority, m.weight) for m in p.members] == [("a", 1, 1), ("b", 2, 100)]
    assert p.deployments == {"gpt-4o"}


def test_backends_without_new_keys_load_as_before() -> None:
    (a,) = load(backend())
    assert a.circuit_breaker is None and a.timeouts == Timeouts()


def test_unset_timeouts_take_the_gateway_wide_values() -> None:
    (a,) = load(backend(timeouts={"idle": 20}))
    registry = BackendRegistry((a,), Timeouts(3.0, 100.0, 100.0))
    assert registry.backends[0].timeouts == Timeouts(3.0, 100.0, 20.0)
    assert BackendRegistry((a,)).backends[0].timeouts == Timeouts(DEFAULT_TIMEOUTS.connect, DEFAULT_TIMEOUTS.first_byte, 20.0)


@pytest.mark.parametrize(
    ("duration", "seconds"), [("PT30S", 30), ("PT1M", 60), ("PT1H", 3600), ("P1D", 86400), ("PT1.5S", 1.5), ("P1W", 604800), ("P1DT2H", 93600)]
)
def test_iso_8601_durations(duration: str, seconds: float) -> None:
    (a,) = load(with_rule(tripDuration=duration))
    assert a.circuit_breaker.trip_duration == seconds


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([backend(), pool([{"id": "missing"}])], "pool 'p': member 'missing' is not configured"),
        ([backend(), pool([{"id": "a"}], "inner"), pool([{"id": "inner"}], "outer")], "member 'inner' is a pool"),
        ([backend(), pool([{"id": "a"}] * 2)], "appears twice"),
        ([*(backend(f"b{i}") for i in range(31)), pool([{"id": f"b{i}"} for i in range(31)])], "1 to 30 member"),
        ([backend(), pool([{"id": "a", "priority": 101}])], "'priority' must be an integer from 0 to 100"),
        ([backend(), pool([{"id": "a", "weight": "50"}])], "'weight' must be an integer from 0 to 100"),
        ([backend(), backend("b"), pool([{"id": "a", "priority": 1}, {"id": "b"}])], "give every pool member a 'priority', or none"),
        ([backend(), backend("b"), pool([{"id": "a", "priority": 2, "weight": 5}, {"id": "b", "priority": 2}])], "priority group 2 a 'weight'"),
        ([backend(), pool([{"id": "a"}], url="https://x.example")], "a pool has no 'url' of its own"),
        ([backend(), {"id": "p", "type": "pool"}], "a pool needs"),
        ([backend(), {"id": "p", "type": "pool", "pool": {"services": [{"id": "a"}], "sessionAffinity": {}}}], "session affinity is not supported"),
        ([backend(deployments=["gpt-4o"]), pool([{"id": "a"}], deployments=["whisper"])], "no member serves deployment 'whisper'"),
        ([backend(type="gateway")], "'type' must be"),
        ([backend(circuitbreaker={})], "unknown key 'circuitbreaker'"),
        ([backend(circuitBreaker={"rules": [RULE, RULE]})], "one rule per backend"),
        ([backend(circuitBreaker={"rules": [{"name": "r", "tripDuration": "PT1M"}]})], "'failureCondition' is required"),
        ([with_rule(interval="1m")], "'interval' '1m' is not an ISO-8601 duration"),
        ([with_rule(tripDuration="PT0S")], "'tripDuration' 'PT0S' must be longer than zero"),
        ([with_rule(tripDuration="P1M")], "is not an ISO-8601 duration"),  # months are ambiguous
        ([with_rule(count=0)], "'count' must be a positive integer"),
        ([with_rule(count=None, percentage=150)], "'percentage' must be a number above 0"),
        ([with_rule(count=None)], "needs a 'count' or a 'percentage'"),
        ([with_rule(statusCodeRanges=[{"min": 100, "max": 200}])], "'statusCodeRanges' must be a list"),
        ([with_rule(statusCodeRanges=[{"min": 500, "max": 429}])], "'statusCodeRanges' must be a list"),
        ([with_rule(errorReasons=["Weird"])], "unknown error reason 'Weird'"),
        ([with_rule(statusCodeRanges=[], errorReasons=[])], "nothing counts as a failure"),
        ([with_rule(acceptRetryAfter="yes")], "'acceptRetryAfter' must be true or false"),
        ([with_rule(halfOpen=True)], "unknown key 'halfOpen'"),
        ([backend(timeouts={"first_byte": 5})], "'timeouts' takes seconds for connect, firstByte and idle"),
        ([backend(timeouts={"idle": 0})], "timeout 'idle' must be a number of seconds above 0"),
    ],
)
def test_config_mistakes_fail_at_load_naming_setting_and_backend(items: list[dict], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Settings.from_env({**BASE, "GATEWAY_BACKENDS": json.dumps(items)})
    text = str(raised.value)
    assert message in text
    assert text.startswith("Setting 'GATEWAY_BACKENDS'")
    assert "backend '" in text or "pool '" in text


def test_health_settings_and_admin_key() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "GATEWAY_HEALTH_SYNC_SECONDS": "0.5",
            "GATEWAY_PREDICTIVE_ROUTING": "true",
            "GATEWAY_PREDICTIVE_MIN_TOKENS": "2000",
            "GATEWAY_ADMIN_KEY": "k" * 16,
        }
    )
    assert settings.health_sync_seconds == 0.5
    assert settings.predictive_routing == PredictiveRouting(min_tokens=2000, min_requests=1)
    assert settings.admin_key is not None and "k" * 16 not in repr(settings)
    defaults = Settings.from_env(BASE)
    assert (defaults.health_sync_seconds, defaults.predictive_routing, defaults.admin_key) == (2.0, None, None)
    with pytest.raises(ValueError, match="GATEWAY_ADMIN_KEY"):
        Settings.from_env({**BASE, "GATEWAY_ADMIN_KEY": "short"})
    with pytest.raises(ValueError, match="GATEWAY_HEALTH_SYNC_SECONDS"):
        Settings.from_env({**BASE, "GATEWAY_HEALTH_SYNC_SECONDS": "0"})


def test_a_backend_without_deployments_is_reached_only_by_id() -> None:
    registry = BackendRegistry(load(backend("content-safety", deployments=[]), backend("aoai", deployments=["gpt-4o"])))
    assert registry.by_id("content-safety") is not None
    assert registry.for_deployment("other") is None and not registry.serves_any_deployment
    with pytest.raises(ValueError, match="a list of names"):
        load(pool([{"id": "a"}], deployments=[]), backend())
