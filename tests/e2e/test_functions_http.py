"""`function_app.py` over the HTTP streaming extension's own server and handshake (tests/functions_host.py): what
calling the handlers directly cannot show. Route parameters come from the host's routing and reach the function
through the extension's synchroniser; requests and answers are paired by invocation id; streams and request
bodies pass through the extension's uvicorn server; its access log is what the platform would keep."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openai import AzureOpenAI

from gateway.dev import devstack
from tests import functions_host
from tests.conftest import API_VERSION, Keys, Simulator


@pytest.fixture(scope="module")
def served(
    gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[functions_host.FunctionsApp, Keys]]:
    env = {**gateway_env, "GATEWAY_TABLE_PREFIX": "f" + secrets.token_hex(4), "GATEWAY_LOCAL_QUEUE_WORKER": "false"}
    keys = create_subscription("functions", env=env)
    app = functions_host.start(env, tmp_path_factory.mktemp("functions") / "worker.log")
    yield app, keys
    functions_host.stop(app)


def client(app: functions_host.FunctionsApp, keys: Keys) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=app.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0)


def test_a_chat_completion_reaches_the_function_with_its_route_parameter(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, keys = served
    # The extension's own route captures the whole path ("openai/deployments/…"); only the host's route
    # parameter ("deployments/…"), copied in by the synchroniser, makes this an operation the gateway knows.
    answer = client(app, keys).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "over the extension"}])
    assert answer.choices[0].message.content == "Simulated answer to: over the extension"
    unknown = httpx.get(f"{app.url}/openai/v1/unknown", headers={"api-key": keys.primary})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "404")  # the gateway's answer, not the host's


def test_concurrent_requests_are_paired_with_their_own_invocations(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, keys = served
    answers: dict[int, str | None] = {}

    def ask(number: int) -> None:
        reply = client(app, keys).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"question {number}"}])
        answers[number] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {number: f"Simulated answer to: question {number}" for number in range(8)}


def test_a_stream_arrives_chunk_by_chunk_before_it_ends(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, keys = served
    question = "one two three four five six seven eight"
    stream = client(app, keys).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}], stream=True, extra_headers={"x-sim-token-ms": "100"}
    )
    arrivals, text = [], ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == f"Simulated answer to: {question}"
    assert len(arrivals) >= 10
    # 11 tokens 100 ms apart: buffered, they would all arrive together at the end.
    assert arrivals[-1] - arrivals[0] > 0.6


def test_a_large_chunked_request_body_reaches_the_backend_intact(served: tuple[functions_host.FunctionsApp, Keys], simulator: Simulator) -> None:
    app, keys = served
    body = json.dumps({"messages": [{"role": "user", "content": "word " * 400_000}]}).encode()  # 2 MB

    def pieces() -> Iterator[bytes]:  # no Content-Length: sent chunked, forwarded chunked
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    answer = httpx.post(
        f"{app.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "content-type": "application/json"},
        content=pieces(),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] == 400_000
    digest = hashlib.sha256(body).hexdigest()
    assert any(record["body_sha256"] == digest and record["body_len"] == len(body) for record in simulator.requests())


def test_the_openapi_route_parameter_and_forwarded_host(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, _ = served
    document = httpx.get(f"{app.url}/openapi/2024-10-21.json")
    assert document.status_code == 200
    # Under Functions the host is one trusted hop: its X-Forwarded-Host names the gateway's public address.
    assert document.json()["servers"][0]["url"] == f"{app.url}/openai"


def test_liveness_and_readiness(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, _ = served
    assert httpx.get(f"{app.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{app.url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["storage"]["available"] is True


def test_the_platform_log_has_the_access_lines_without_keys_or_sdk_chatter(served: tuple[functions_host.FunctionsApp, Keys]) -> None:
    app, keys = served
    assert httpx.get(f"{app.url}/openai/v1/models", params={"subscription-key": keys.primary}).status_code == 200
    logged = app.log.read_text()
    assert '"GET /openai/v1/models?subscription-key=REDACTED HTTP/1.1" 200' in logged
    assert keys.primary not in logged
    assert "Received HTTP request for invocation" in logged  # the worker's own lines are there: INFO does reach stdout
    assert "Request URL:" not in logged  # the Azure SDK's per-request logging is quieted


def test_not_ready_while_storage_is_unreachable(gateway_env: dict[str, str], tmp_path: Path) -> None:
    closed = devstack.free_port()  # nothing listens there
    connection = devstack.AzuritePorts(closed, closed, closed).connection_string()
    app = functions_host.start({**gateway_env, "GATEWAY_STORAGE_CONNECTION": connection}, tmp_path / "worker.log")
    try:
        assert httpx.get(f"{app.url}/health", timeout=10).status_code == 200  # liveness: the process serves
        ready = httpx.get(f"{app.url}/health/ready", timeout=30)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not-ready" and body["policies"] == {"loaded": False}
        assert body["storage"]["available"] is False and body["storage"]["lastError"]
        assert body["storage"]["unavailableSince"] <= time.time()
    finally:
        functions_host.stop(app)
