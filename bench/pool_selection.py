"""What pool selection adds per request, in-process (target: at most 0.05 ms).

    .venv/bin/python -m bench.pool_selection [--requests 200000]

Times what `forward()` does around the backend call for a pool: choose a member (`select`) and record its
answer (`record_response`, with Azure OpenAI's rate-limit headers). Compared with a single backend named
directly, which pays the same breaker check and record. No network: the backend call itself is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from gateway.backends.config import parse_backends
from gateway.backends.health import PredictiveRouting
from gateway.backends.registry import BackendRegistry

HEADERS = {
    "content-type": "application/json",
    "x-ratelimit-remaining-requests": "999",
    "x-ratelimit-remaining-tokens": "999000",
    "apim-request-id": "00000000-0000-0000-0000-000000000000",
}
RULE = {
    "rules": [
        {
            "name": "r",
            "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 429, "max": 429}]},
            "tripDuration": "PT1M",
            "acceptRetryAfter": True,
        }
    ]
}


def registry(members: int, predictive: bool = False) -> BackendRegistry:
    backends = [{"id": f"b{i}", "url": f"https://b{i}.example", "deployments": ["gpt-4o"], "circuitBreaker": RULE} for i in range(members)]
    services = [{"id": "b0", "priority": 1, "weight": 100}, *({"id": f"b{i}", "priority": 2, "weight": 10 + i} for i in range(1, members))]
    pool = {"id": "pool", "type": "pool", "deployments": ["gpt-4o"], "pool": {"services": services}}
    configs = parse_backends({"GATEWAY_BACKENDS": json.dumps([*backends, pool])})
    return BackendRegistry(configs, predictive=PredictiveRouting() if predictive else None)


def measure(label: str, target_id: str, reg: BackendRegistry, requests: int) -> None:
    target = reg.by_id(target_id)
    assert target is not None

    def one() -> None:
        backend = target.select("gpt-4o", ())
        backend.health.record_response(200, HEADERS, 0.2)

    samples = _samples(one, requests)
    print(
        f"{label:<46} mean {statistics.fmean(samples):6.2f} µs  p50 {samples[len(samples) // 2]:6.2f} µs"
        f"  p99 {samples[int(len(samples) * 0.99)]:6.2f} µs"
    )


def _samples(call: Callable[[], None], requests: int) -> list[float]:
    for _ in range(2000):
        call()
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return samples


def main(requests: int) -> None:
    print(f"per request: select + record_response, {requests} requests each")
    measure("single backend (breaker check only)", "b0", registry(3), requests)
    measure("pool of 3, priority 1 healthy", "pool", registry(3), requests)
    throttled = registry(3)
    throttled.by_id("b0").health.record_response(429, {"retry-after": "3600"}, 0.2)  # type: ignore[union-attr]
    measure("pool of 3, priority 1 waiting -> weighted 2", "pool", throttled, requests)
    measure("pool of 3, predictive routing on", "pool", registry(3, predictive=True), requests)
    big = registry(30)
    big.by_id("b0").health.record_response(429, {"retry-after": "3600"}, 0.2)  # type: ignore[union-attr]
    measure("pool of 30, weighted group of 29", "pool", big, requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    main(parser.parse_args().requests)
