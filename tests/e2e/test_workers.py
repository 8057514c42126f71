"""`gateway serve --workers N`: several processes on one port, each a gateway instance, limits shared through storage."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys
from tests.stack_helpers import apply, token_env

QUOTA = 600
MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]
POLICY = """<policies>
  <inbound><base />
    <llm-token-limit counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;x-phase&quot;, &quot;&quot;) + &quot;{key}&quot;)"
                     token-quota="{quota}" token-quota-period="Monthly" estimate-prompt-tokens="true" />
  </inbound>
  <outbound><base />
    <set-header name="x-gateway-id" exists-action="override"><value>@(context.Deployment.Gateway.Id)</value></set-header>
  </outbound>
</policies>"""


@pytest.fixture
def workers(gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path) -> Iterator[tuple[GatewayProcess, Keys]]:
    env = token_env(gateway_env)
    keys = create_subscription("workers", env=env)
    apply(env, POLICY.format(key=secrets.token_hex(4), quota=QUOTA), tmp_path)
    port = devstack.free_port()
    process = devstack.start_python(["gateway", "serve", "--port", str(port), "--workers", "2"], env, port)
    try:
        yield GatewayProcess(f"http://127.0.0.1:{port}", env, process), keys
    finally:
        devstack.stop(process)
    assert process.returncode == 0  # the supervisor stopped its workers and exited cleanly


def ask(gateway: GatewayProcess, keys: Keys, phase: str) -> httpx.Response:
    # A new connection per request: the kernel hands each to whichever worker accepts it first.
    return httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "x-phase": phase},
        json={"messages": MESSAGES, "max_tokens": 10},
        timeout=10,
    )


def wait_for_both_workers(gateway: GatewayProcess, keys: Keys) -> set[str]:
    """The port opens before the workers have started: ask (against a quota of its own) until both answered."""
    seen: set[str] = set()
    for _ in range(25):
        response = ask(gateway, keys, "warm-up-")
        assert response.status_code == 200, response.text
        seen.add(response.headers["x-gateway-id"])
        if len(seen) == 2:
            break
    return seen


def test_two_workers_share_the_port_and_one_token_quota(workers: tuple[GatewayProcess, Keys]) -> None:
    gateway, keys = workers
    assert len(wait_for_both_workers(gateway, keys)) == 2
    served_by: set[str] = set()
    admitted: list[int] = []
    refused = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal refused
        for _ in range(30):
            response = ask(gateway, keys, "quota-")
            with lock:
                if response.status_code == 200:
                    served_by.add(response.headers["x-gateway-id"])
                    admitted.append(response.json()["usage"]["total_tokens"])
                else:
                    assert response.status_code == 403, response.text  # the quota is spent
                    refused += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(served_by) == 2 and all(worker.startswith("local-") for worker in served_by)
    assert refused > 0
    one_request = max(admitted)
    lease = -(-QUOTA * 5 // 100)  # GATEWAY_LEASE_FRACTION 0.05: what each worker may hold back unused
    assert sum(admitted) <= QUOTA  # reservations (prompt estimate + max_tokens) never let the two exceed it
    assert sum(admitted) >= QUOTA - 2 * lease - one_request
