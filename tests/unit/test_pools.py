"""Pool selection: priority groups, weights, round-robin, skipping tripped or waiting members, untried first,
predictive routing, and the 503 when nothing is left — all in memory with a fake clock."""

from __future__ import annotations

import json
from collections import Counter

import orjson
import pytest

from gateway.backends.config import parse_backends
from gateway.backends.health import PredictiveRouting
from gateway.backends.pools import Pool
from gateway.backends.registry import BackendRegistry
from gateway.errors import DeploymentNotFound, PoolUnavailable


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry(pool_services: list[dict], backends: list[dict] | None = None, **kwargs: object) -> tuple[BackendRegistry, FakeClock]:
    members = backends or [{"id": s["id"], "url": f"https://{s['id']}.example"} for s in pool_services]
    pool = {"id": "pool", "type": "pool", "pool": {"services": pool_services}}
    clock = FakeClock()
    configs = parse_backends({"GATEWAY_BACKENDS": json.dumps([*members, pool])})
    return BackendRegistry(configs, clock=clock, **kwargs), clock  # type: ignore[arg-type]


def pick(reg: BackendRegistry, n: int, deployment: str | None = "gpt-4o", tried: set[str] | None = None) -> Counter[str]:
    pool = reg.by_id("pool")
    assert isinstance(pool, Pool)
    return Counter(pool.select(deployment, tried or set()).id for _ in range(n))


def throttle(reg: BackendRegistry, backend_id: str, seconds: float) -> None:
    reg.by_id(backend_id).health.record_response(429, {"retry-after": str(seconds)}, 0.01)  # type: ignore[union-attr]


def test_round_robin_without_weights_is_even_and_interleaved() -> None:
    reg, _ = registry([{"id": "a"}, {"id": "b"}, {"id": "c"}])
    pool = reg.by_id("pool")
    order = [pool.select("gpt-4o", set()).id for _ in range(6)]  # type: ignore[union-attr]
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_weights_split_exactly_and_smoothly() -> None:
    reg, _ = registry([{"id": "a", "weight": 75}, {"id": "b", "weight": 25}])
    assert pick(reg, 1000) == {"a": 750, "b": 250}
    pool = reg.by_id("pool")
    window = [pool.select("gpt-4o", set()).id for _ in range(4)]  # type: ignore[union-attr]
    assert window.count("b") == 1  # one in every four, not 250 in a row


def test_priority_group_used_only_when_every_higher_member_is_unavailable() -> None:
    reg, clock = registry([{"id": "ptu", "priority": 1}, {"id": "ptu2", "priority": 1}, {"id": "paygo", "priority": 2}])
    assert pick(reg, 10) == {"ptu": 5, "ptu2": 5}
    throttle(reg, "ptu", 30)
    assert pick(reg, 10) == {"ptu2": 10}
    throttle(reg, "ptu2", 10)
    assert pick(reg, 10) == {"paygo": 10}
    clock.now += 11  # ptu2's wait is over; ptu still waits
    assert pick(reg, 10) == {"ptu2": 10}


def test_weight_zero_is_a_standby_within_its_group() -> None:
    reg, _ = registry([{"id": "a", "weight": 100}, {"id": "standby", "weight": 0}])
    assert pick(reg, 10) == {"a": 10}
    throttle(reg, "a", 5)
    assert pick(reg, 10) == {"standby": 10}


def test_tripped_member_is_skipped_until_its_breaker_resets() -> None:
    rule = {
        "rules": [{"name": "r", "failureCondition": {"count": 1, "interval": "PT1M", "errorReasons": ["ConnectionFailure"]}, "tripDuration": "PT30S"}]
    }
    backends = [{"id": "a", "url": "https://a.example", "circuitBreaker": rule}, {"id": "b", "url": "https://b.example"}]
    reg, clock = registry([{"id": "a", "priority": 1}, {"id": "b", "priority": 2}], backends)
    reg.by_id("a").health.record_failure("connection failure")  # type: ignore[union-attr]
    assert pick(reg, 5) == {"b": 5}
    clock.now += 30
    assert pick(reg, 5) == {"a": 5}


def test_a_retry_prefers_members_the_request_has_not_tried() -> None:
    reg, _ = registry([{"id": "ptu", "priority": 1}, {"id": "paygo1", "priority": 2}, {"id": "paygo2", "priority": 3}])
    assert pick(reg, 1, tried={"ptu"}) == {"paygo1": 1}
    assert pick(reg, 1, tried={"ptu", "paygo1"}) == {"paygo2": 1}
    assert pick(reg, 1, tried={"ptu", "paygo1", "paygo2"}) == {"ptu": 1}  # all tried: back to priority order


def test_members_not_serving_the_deployment_are_not_candidates() -> None:
    backends = [{"id": "ptu", "url": "https://ptu.example", "deployments": ["gpt-4o"]}, {"id": "any", "url": "https://any.example"}]
    reg, _ = registry([{"id": "ptu", "priority": 1}, {"id": "any", "priority": 2}], backends)
    assert pick(reg, 3, deployment="gpt-4o-mini") == {"any": 3}
    narrow = [{"id": "ptu", "url": "https://ptu.example", "deployments": ["gpt-4o"]}]
    reg, _ = registry([{"id": "ptu"}], narrow)
    with pytest.raises(DeploymentNotFound):
        pick(reg, 1, deployment="whisper")


def test_every_member_unavailable_is_503_pool_is_inactive_without_names() -> None:
    reg, _ = registry([{"id": "east-ptu", "priority": 1}, {"id": "west-paygo", "priority": 2}])
    throttle(reg, "east-ptu", 30)
    throttle(reg, "west-paygo", 12.2)
    with pytest.raises(PoolUnavailable) as raised:
        pick(reg, 1)
    response = raised.value.to_response()
    body = orjson.loads(response.body)
    assert response.status_code == 503
    assert body["error"]["code"] == "PoolIsInactive"
    assert "backend pool is temporarily unavailable" in body["error"]["message"].lower()
    assert response.headers["retry-after"] == "13"  # the earliest member back, rounded up
    assert "east" not in response.body.decode() and "west" not in response.body.decode() and "example" not in response.body.decode()


def test_predictive_routing_leaves_a_member_before_it_throttles() -> None:
    reg, clock = registry([{"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2}], predictive=PredictiveRouting(min_tokens=1000))
    ptu = reg.by_id("ptu").health  # type: ignore[union-attr]
    ptu.record_response(200, {"x-ratelimit-remaining-tokens": "5000"}, 0.01)
    assert pick(reg, 3) == {"ptu": 3}
    ptu.record_response(200, {"x-ratelimit-remaining-tokens": "400"}, 0.01)
    assert pick(reg, 3) == {"paygo": 3}
    reg.by_id("paygo").health.record_response(200, {"x-ratelimit-remaining-requests": "0"}, 0.01)  # type: ignore[union-attr]
    assert pick(reg, 3) == {"ptu": 3}  # nobody has headroom: priority decides again
    clock.now += 3  # the low reading expires, so ptu is probed again
    reg.by_id("paygo").health.record_response(200, {"x-ratelimit-remaining-requests": "50"}, 0.01)  # type: ignore[union-attr]
    assert pick(reg, 1) == {"ptu": 1}


def test_predictive_routing_is_off_by_default() -> None:
    reg, _ = registry([{"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2}])
    reg.by_id("ptu").health.record_response(200, {"x-ratelimit-remaining-tokens": "1"}, 0.01)  # type: ignore[union-attr]
    assert pick(reg, 3) == {"ptu": 3}


def test_pools_route_deployments_before_single_backends_and_are_backend_ids() -> None:
    env = {
        "GATEWAY_BACKENDS": json.dumps(
            [
                {"id": "a", "url": "https://a.example"},
                {"id": "b", "url": "https://b.example", "deployments": ["gpt-4o"]},
                {"id": "gpt4o-pool", "type": "pool", "deployments": ["gpt-4o"], "pool": {"services": [{"id": "a"}, {"id": "b"}]}},
            ]
        )
    }
    reg = BackendRegistry(parse_backends(env))
    assert reg.for_deployment("gpt-4o").id == "gpt4o-pool"  # type: ignore[union-attr]
    assert reg.for_deployment("other").id == "a"  # type: ignore[union-attr]
    assert reg.ids == {"a", "b", "gpt4o-pool"}
    assert reg.known_deployments() == ["gpt-4o"]
