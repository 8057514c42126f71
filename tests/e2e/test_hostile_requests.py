"""Hostile requests against a gateway process with policies in force (semantic cache, token limit, token metric,
headers from expressions): none ends in a 500 with a traceback or in plain text, and one caller's prompt cannot
switch the semantic cache off for the others."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.dev import devstack
from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator
from tests.stack_helpers import apply, logged_gateway, token_env

POLICY = """<policies>
  <inbound><base />
    <azure-openai-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="sim" />
    <azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="100000000" estimate-prompt-tokens="false" />
    <azure-openai-emit-token-metric namespace="hostile"><dimension name="Client" value='@(context.Request.Headers.GetValueOrDefault("x-client", ""))' /></azure-openai-emit-token-metric>
    <set-header name="x-client-echo" exists-action="override"><value>@(context.Request.Headers.GetValueOrDefault("x-client", "none"))</value></set-header>
  </inbound>
  <backend><base /></backend>
  <outbound><base /><azure-openai-semantic-cache-store duration="60" /></outbound>
</policies>"""


@dataclass(frozen=True)
class LoggedGateway:
    url: str
    log: Path
    key: str

    def text(self, since: int = 0) -> str:
        """The log, from character `since` (a test reads only what its own requests logged)."""
        return self.log.read_text()[since:]

    def mark(self) -> int:
        return len(self.log.read_text())


@pytest.fixture(scope="module")
def hostile(
    gateway_env: dict[str, str], simulator: Simulator, create_subscription: Callable[..., Keys], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoggedGateway]:
    backends = [{"id": "sim", "url": simulator.url, "api_key_setting": "SIMULATOR_KEY", "embeddings_deployment": "text-embedding-3-small"}]
    env = token_env(gateway_env, GATEWAY_BACKENDS=json.dumps(backends))
    folder = tmp_path_factory.mktemp("hostile")
    apply(env, POLICY, folder)
    key = create_subscription("hostile", env=env).primary
    with logged_gateway(env, folder / "gateway.log") as url:
        yield LoggedGateway(url, folder / "gateway.log", key)


def chat(gateway: LoggedGateway, body: bytes | dict, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": gateway.key, "content-type": "application/json", **headers},
        content=content,
        timeout=60,
    )


def assert_no_unhandled_error(gateway: LoggedGateway, since: int) -> None:
    text = gateway.text(since)
    assert "Unhandled error" not in text and "Traceback" not in text, text[-3000:]


def test_deeply_nested_json_is_answered_not_a_500(hostile: LoggedGateway) -> None:
    mark = hostile.mark()
    nested = "[" * 300 + "1" + "]" * 300  # parsed (1,024 levels) but deeper than orjson writes (254)
    body = ('{"messages": [{"role": "user", "content": "nested"}], "metadata": %s}' % nested).encode()
    answer = chat(hostile, body)
    assert answer.status_code != 500, answer.text
    if answer.status_code == 200:
        assert answer.headers["x-semantic-cache"] == "BYPASS"
    else:
        assert answer.json()["error"]["code"]  # refused in the OpenAI shape
    assert_no_unhandled_error(hostile, mark)


def test_a_huge_prompt_bypasses_only_its_own_lookup(hostile: LoggedGateway) -> None:
    mark = hostile.mark()
    huge = chat(hostile, {"messages": [{"role": "user", "content": "word " * 2_000_000}]})  # 10 MB
    assert (huge.status_code, huge.headers["x-semantic-cache"]) == (200, "BYPASS")
    for n in range(3):  # everyone else still has the cache
        answer = chat(hostile, {"messages": [{"role": "user", "content": f"what is the capital of country {n}?"}]})
        assert answer.headers["x-semantic-cache"] in ("MISS", "HIT")
    text = hostile.text(mark)
    assert "without the cache" not in text and "cannot be reached" not in text
    assert_no_unhandled_error(hostile, mark)


def test_a_client_that_leaves_mid_upload_is_a_quiet_end(hostile: LoggedGateway) -> None:
    mark = hostile.mark()
    port = int(hostile.url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = (
                f"POST /openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\napi-key: {hostile.key}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"messages": [{"role": "user", "content": "')
            time.sleep(0.2)  # the gateway is reading the body when the client goes
    time.sleep(0.5)
    assert httpx.get(f"{hostile.url}/health").status_code == 200
    assert_no_unhandled_error(hostile, mark)


@pytest.mark.parametrize(("method", "path"), [("TRACE", "/openai/v1/models"), ("PROPFIND", "/health"), ("CONNECT", "/ops/backends")])
def test_the_hosts_own_refusals_are_json(hostile: LoggedGateway, method: str, path: str) -> None:
    answer = httpx.request(method, hostile.url + path)
    assert answer.status_code == 405
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "405"


def test_ops_routes_answer_a_storage_outage_with_json(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], azurite: devstack.AzuritePorts
) -> None:
    dead = azurite.connection_string().replace(f":{azurite.table}/", f":{devstack.free_port()}/")
    admin_key = "admin-" + secrets.token_hex(12)
    gateway = start_gateway({**token_env(gateway_env), "GATEWAY_STORAGE_CONNECTION": dead, "GATEWAY_ADMIN_KEY": admin_key})
    for path in ("/ops/backends", "/ops/dashboard"):
        answer = httpx.get(gateway.url + path, headers={"x-admin-key": admin_key}, timeout=30)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["error"]["code"] == "StorageUnavailable"
        assert answer.headers["retry-after"]
