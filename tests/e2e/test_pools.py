"""Backend pools end to end, with faults injected into real simulators on loopback: priority failover on 429,
Retry-After, breakers tripping and resetting on time, hung and refusing backends, weighted splits, the 503 when
every member is out, streaming failover before the first byte, health shared by two gateway processes, and the
health view (route and CLI).

Every gateway here applies one policy: `set-backend-service` names the pool from header `x-pool` (default
"pool"), and `<retry count="2">` around `<forward-request/>` fails over on 429 and 5xx.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from click.testing import CliRunner
from openai import AzureOpenAI

from gateway.cli.main import main as cli
from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys

SYNC_SECONDS = 0.3
ADMIN_KEY = "admin-" + secrets.token_hex(12)
POLICY = """<policies>
  <inbound><base /><set-backend-service backend-id='@(context.Request.Headers.GetValueOrDefault("x-pool", "pool"))' /></inbound>
  <backend>
    <retry condition="@(context.Response.StatusCode == 429 || context.Response.StatusCode &gt;= 500)" count="2" interval="0" first-fast-retry="true">
      <forward-request buffer-request-body="true" />
    </retry>
  </backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>"""


@dataclass(frozen=True)
class Sim:
    """One simulator process with its own key, faults and request counter."""

    url: str
    key: str
    key_setting: str
    process: subprocess.Popen[bytes]

    def count(self) -> int:
        return int(httpx.get(f"{self.url}/sim/stats").json()["requests"])

    def fault(self, **spec: object) -> None:
        httpx.post(f"{self.url}/sim/faults", json=spec).raise_for_status()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/sim/faults").raise_for_status()

    def backend(self, backend_id: str, **extra: object) -> dict:
        return {"id": backend_id, "url": self.url, "api_key_setting": self.key_setting, **extra}


@pytest.fixture(scope="module")
def sims() -> Iterator[list[Sim]]:
    started: list[Sim] = []
    try:
        for index in range(3):
            port, key = devstack.free_port(), "sim-" + secrets.token_hex(8)
            process = devstack.start_python(["gateway", "simulator", "--port", str(port)], {"SIMULATOR_API_KEY": key}, port)
            started.append(Sim(f"http://127.0.0.1:{port}", key, f"POOL_SIM_{index}_KEY", process))
        yield started
    finally:
        for sim in started:
            devstack.stop(sim.process)


@pytest.fixture(autouse=True)
def no_faults_left(sims: list[Sim]) -> Iterator[None]:
    yield
    for sim in sims:
        sim.clear()


@pytest.fixture(scope="module")
def pool_gateways(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    create_subscription: Callable[..., Keys],
    sims: list[Sim],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., tuple[list[GatewayProcess], str]]:
    """Start `instances` gateways sharing fresh tables, with these backends and the failover policy."""

    def start(backends: list[dict], instances: int = 1) -> tuple[list[GatewayProcess], str]:
        env = {
            **gateway_env,
            "GATEWAY_TABLE_PREFIX": "b" + secrets.token_hex(4),
            "GATEWAY_BACKENDS": json.dumps(backends),
            "GATEWAY_HEALTH_SYNC_SECONDS": str(SYNC_SECONDS),
            "GATEWAY_ADMIN_KEY": ADMIN_KEY,
            "GATEWAY_LOCAL_QUEUE_WORKER": "false",  # the policy-updates queue is shared by every test gateway
            **{sim.key_setting: sim.key for sim in sims},
        }
        policy = tmp_path_factory.mktemp("pool-policy") / "policy.xml"
        policy.write_text(POLICY)
        applied = CliRunner().invoke(cli, ["policies", "apply", str(policy), "--scope", "global"], env=env)
        assert applied.exit_code == 0, applied.output
        key = create_subscription("pools", env=env).primary
        return [start_gateway(env) for _ in range(instances)], key

    return start


def pool(*services: dict, pool_id: str = "pool") -> dict:
    return {"id": pool_id, "type": "pool", "pool": {"services": list(services)}}


def breaker(
    count: int, trip: str, *, statuses: tuple[int, int] | None = None, reasons: tuple[str, ...] = (), accept_retry_after: bool = False
) -> dict:
    condition: dict = {"count": count, "interval": "PT10S", "errorReasons": list(reasons)}
    if statuses is not None:
        condition["statusCodeRanges"] = [{"min": statuses[0], "max": statuses[1]}]
    return {"rules": [{"name": "rule", "failureCondition": condition, "tripDuration": trip, "acceptRetryAfter": accept_retry_after}]}


def dead_backend(backend_id: str, **extra: object) -> dict:
    """A backend on a loopback port nobody listens on: connections are refused."""
    return {"id": backend_id, "url": f"http://127.0.0.1:{devstack.free_port()}", **extra}


def sdk(gateway: GatewayProcess, key: str, pool_id: str = "pool") -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=gateway.url, api_key=key, api_version=API_VERSION, max_retries=0, timeout=20, default_headers={"x-pool": pool_id}
    )


def ask(client: AzureOpenAI, text: str = "pool test") -> str:
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content or ""


def ops_backends(gateway: GatewayProcess) -> dict[str, dict]:
    response = httpx.get(f"{gateway.url}/ops/backends", headers={"x-admin-key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    return {entry["id"]: entry for entry in response.json()["backends"]}


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def test_priority_failover_on_429_with_retry_after_streaming_included(pool_gateways: Callable, sims: list[Sim]) -> None:
    ptu, paygo, _ = sims
    rule = breaker(1, "PT1M", statuses=(429, 429), accept_retry_after=True)
    (gateway,), key = pool_gateways(
        [ptu.backend("ptu", circuitBreaker=rule), paygo.backend("paygo"), pool({"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2})]
    )
    client = sdk(gateway, key)
    before = (ptu.count(), paygo.count())
    assert all(ask(client, f"q{i}") == f"Simulated answer to: q{i}" for i in range(5))
    assert (ptu.count() - before[0], paygo.count() - before[1]) == (5, 0)  # priority 1 serves while healthy

    ptu.fault(status=429, retry_after=2, count=-1)
    before = (ptu.count(), paygo.count())
    throttled_at = time.monotonic()
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a b c"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Simulated answer to: a b c"  # the whole stream, after the first member's 429
    assert all(ask(client, f"r{i}").startswith("Simulated answer") for i in range(10))
    assert ptu.count() - before[0] == 1  # one 429 tripped it for the Retry-After; nothing more went there
    assert paygo.count() - before[1] == 11
    view = ops_backends(gateway)
    assert view["ptu"]["state"] == "open" and view["ptu"]["waitUntil"] is not None
    assert view["pool"]["state"] == "active"

    ptu.clear()
    back = before[0] + 1
    wait_until(lambda: ask(client) is not None and ptu.count() > back, timeout=5, step=0.05)
    reset_after = time.monotonic() - throttled_at
    assert 2.0 <= reset_after < 3.5  # Retry-After: 2, honoured, then traffic resumes at priority 1


def test_weighted_split_and_round_robin(pool_gateways: Callable, sims: list[Sim]) -> None:
    _, left, right = sims
    (gateway,), key = pool_gateways(
        [
            left.backend("left"),
            right.backend("right"),
            pool({"id": "left", "weight": 75}, {"id": "right", "weight": 25}),
            pool({"id": "left"}, {"id": "right"}, pool_id="even"),
        ]
    )
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    body = {"messages": [{"role": "user", "content": "split"}]}
    with httpx.Client(headers={"api-key": key}, timeout=10) as client:
        for pool_id, requests, left_share in (("pool", 1000, 0.75), ("even", 200, 0.5)):
            before = (left.count(), right.count())
            for _ in range(requests):
                assert client.post(url, json=body, headers={"x-pool": pool_id}).status_code == 200
            got = (left.count() - before[0], right.count() - before[1])
            assert sum(got) == requests
            assert abs(got[0] / requests - left_share) <= 0.03, (pool_id, got)


def test_breaker_trips_on_server_errors_and_resets_on_time(pool_gateways: Callable, sims: list[Sim]) -> None:
    _, backup, flaky = sims
    (gateway,), key = pool_gateways(
        [
            flaky.backend("flaky", circuitBreaker=breaker(3, "PT2S", statuses=(500, 599))),
            backup.backend("backup"),
            pool({"id": "flaky", "priority": 1}, {"id": "backup", "priority": 2}),
        ]
    )
    client = sdk(gateway, key)
    flaky.fault(status=500, count=-1)
    before = flaky.count()
    for i in range(10):
        if i == 2:
            tripped_at = time.monotonic()  # the third failure trips it
        assert ask(client, f"f{i}") == f"Simulated answer to: f{i}"  # 100 % success: backup had capacity
    assert flaky.count() - before == 3
    view = ops_backends(gateway)
    assert view["flaky"]["state"] == "open" and view["flaky"]["waitUntil"] is None

    flaky.clear()
    wait_until(lambda: ask(client) is not None and flaky.count() > before + 3, timeout=5, step=0.05)
    assert 2.0 <= time.monotonic() - tripped_at < 3.5  # tripDuration PT2S, then it resets on time


def test_hung_and_refusing_members_fail_over_fast(pool_gateways: Callable, sims: list[Sim]) -> None:
    hung, healthy, _ = sims
    (gateway,), key = pool_gateways(
        [
            hung.backend("hung", timeouts={"firstByte": 0.5}, circuitBreaker=breaker(1, "PT30S", reasons=("timeout",))),
            dead_backend("refusing", circuitBreaker=breaker(1, "PT30S", reasons=("ConnectionFailure",))),
            healthy.backend("healthy"),
            pool({"id": "hung", "priority": 1}, {"id": "refusing", "priority": 1}, {"id": "healthy", "priority": 2}),
        ]
    )
    client = sdk(gateway, key)
    hung.fault(hang_s=5, count=-1)
    before = hung.count()
    started = time.monotonic()
    assert ask(client, "first") == "Simulated answer to: first"  # hung (0.5 s), refused, then healthy
    first = time.monotonic() - started
    assert all(ask(client, f"n{i}") == f"Simulated answer to: n{i}" for i in range(10))
    assert 0.5 <= first < 2.0
    assert time.monotonic() - started < first + 2.0  # the rest skip both tripped members
    assert hung.count() - before == 1
    wait_until(lambda: {ops_backends(gateway)[b]["state"] for b in ("hung", "refusing")} == {"open"}, timeout=2)
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x y"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Simulated answer to: x y"


def test_first_byte_and_idle_timeouts_are_per_backend_and_distinct(pool_gateways: Callable, sims: list[Sim]) -> None:
    _, _, sim = sims
    (gateway,), key = pool_gateways([sim.backend("slow", timeouts={"firstByte": 3, "idle": 0.5}), pool({"id": "slow"})])
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    headers = {"api-key": key, "x-pool": "slow"}
    late = httpx.post(
        url, json={"messages": [{"role": "user", "content": "late"}]}, headers={**headers, "x-sim-fault": "hang", "x-sim-hang-s": "1"}, timeout=10
    )
    assert late.status_code == 200  # 1 s to the first byte: within firstByte, though above idle

    started = time.monotonic()
    body = {"messages": [{"role": "user", "content": "one two"}], "stream": True}
    received = b""
    with httpx.stream("POST", url, json=body, headers={**headers, "x-sim-token-ms": "1500"}, timeout=10) as stalled:
        assert stalled.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the client sees the cut: its response is aborted
            for chunk in stalled.iter_bytes():
                received += chunk
    assert b'"role":"assistant"' in received and b"[DONE]" not in received  # cut after 0.5 s of silence
    assert time.monotonic() - started < 1.4


def test_every_member_down_is_503_pool_is_inactive_revealing_nothing(pool_gateways: Callable) -> None:
    refusing = breaker(1, "PT30S", reasons=("connection failure",))
    east, west = dead_backend("dead-east", circuitBreaker=refusing), dead_backend("dead-west", circuitBreaker=refusing)
    (gateway,), key = pool_gateways([east, west, pool({"id": "dead-east"}, {"id": "dead-west"})])
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    body = {"messages": [{"role": "user", "content": "anyone?"}]}
    for _ in range(2):  # the first trips both members on its way; the second is refused at once
        response = httpx.post(url, json=body, headers={"api-key": key}, timeout=10)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "PoolIsInactive"
        assert "backend pool is temporarily unavailable" in error["message"].lower()
        assert 1 <= int(response.headers["retry-after"]) <= 30
        for secret in ("127.0.0.1", "dead-east", "dead-west", east["url"], west["url"], "http"):
            assert secret not in response.text
    direct = httpx.post(url, json=body, headers={"api-key": key, "x-pool": "dead-east"}, timeout=10)
    assert direct.status_code == 503 and direct.json()["error"]["code"] == "CircuitBreakerOpen"
    assert "dead-east" not in direct.text and "127.0.0.1" not in direct.text


def test_a_trip_seen_by_one_gateway_is_avoided_by_the_other_within_the_bound(pool_gateways: Callable, sims: list[Sim]) -> None:
    ptu, paygo, _ = sims
    rule = breaker(1, "PT1M", statuses=(429, 429), accept_retry_after=True)
    (first, second), key = pool_gateways(
        [ptu.backend("ptu", circuitBreaker=rule), paygo.backend("paygo"), pool({"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2})],
        instances=2,
    )
    one, other = sdk(first, key), sdk(second, key)
    before = ptu.count()
    ask(one), ask(other)
    assert ptu.count() - before == 2  # both prefer the PTU while nobody knows better

    ptu.fault(status=429, retry_after=30, count=1)  # one 429: after it, the PTU would answer again
    assert ask(one, "trip") == "Simulated answer to: trip"
    tripped_at = time.monotonic()

    def second_avoids_ptu() -> bool:
        count = ptu.count()
        ask(other)
        return ptu.count() == count

    learned = wait_until(second_avoids_ptu, timeout=SYNC_SECONDS + 2)
    assert learned <= SYNC_SECONDS + 1.0  # the bound: sync interval + one table write + one read (+ test overhead)
    before = ptu.count()
    assert all(ask(other, f"s{i}") == f"Simulated answer to: s{i}" for i in range(10))
    assert ptu.count() == before
    assert time.monotonic() - tripped_at < 30


def test_a_trip_outlives_the_sigkilled_instance_that_saw_it(
    pool_gateways: Callable, start_gateway: Callable[[dict[str, str]], GatewayProcess], sims: list[Sim]
) -> None:
    ptu, paygo, _ = sims
    rule = breaker(1, "PT1M", statuses=(429, 429), accept_retry_after=True)
    (witness,), key = pool_gateways(
        [ptu.backend("ptu", circuitBreaker=rule), paygo.backend("paygo"), pool({"id": "ptu", "priority": 1}, {"id": "paygo", "priority": 2})]
    )
    ptu.fault(status=429, retry_after=30, count=1)  # one 429: after it, the PTU would answer again
    assert ask(sdk(witness, key), "trip") == "Simulated answer to: trip"
    time.sleep(SYNC_SECONDS + 0.5)  # the trip's table write, made at once in the background
    witness.process.send_signal(signal.SIGKILL)  # no shutdown code runs
    witness.process.wait()

    newcomer = start_gateway(witness.env)  # the scale-out that replaces it
    time.sleep(SYNC_SECONDS + 0.5)  # it reads the shared trips at start, then every sync interval
    before = ptu.count()
    client = sdk(newcomer, key)
    assert all(ask(client, f"n{i}") == f"Simulated answer to: n{i}" for i in range(5))
    assert ptu.count() == before  # the dead instance's trip still steers the new one away from the PTU


def test_health_view_needs_the_admin_key_and_matches_the_cli(pool_gateways: Callable, sims: list[Sim], gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/ops/backends").status_code == 404  # no GATEWAY_ADMIN_KEY: no route
    ptu, _, _ = sims
    (pool_gateway,), key = pool_gateways([ptu.backend("ptu"), pool({"id": "ptu"})])
    assert httpx.get(f"{pool_gateway.url}/ops/backends").status_code == 401
    refused = httpx.get(f"{pool_gateway.url}/ops/backends", headers={"x-admin-key": ADMIN_KEY + "x"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "401"
    ask(sdk(pool_gateway, key))
    wait_until(lambda: ops_backends(pool_gateway)["ptu"]["recentRequests"] >= 1, timeout=2)  # stats ride the sync
    entry = ops_backends(pool_gateway)["ptu"]
    assert entry["state"] == "closed" and entry["available"] and entry["latencyP50Ms"] > 0 and entry["instances"] == 1

    env = pool_gateway.env
    as_json = CliRunner().invoke(cli, ["backends", "status", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    report = {entry["id"]: entry for entry in json.loads(as_json.stdout)}
    assert report["ptu"]["state"] == "closed" and report["pool"]["members"][0]["id"] == "ptu"
    table = CliRunner().invoke(cli, ["backends", "status"], env=env)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["backend", "state", "open"]
    assert "pool pool: active: ptu (priority 1, weight 1)" in table.stdout
