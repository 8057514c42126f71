"""Streams end to end: truncated backend streams look truncated to the client, usage chunks only where the API has
them, and stream accounting that counts what is billed (schemas, tool-call arguments), through real processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AzureOpenAI, OpenAI

from gateway.dev import devstack
from gateway.handling.tokens import TokenCounter
from tests.conftest import API_VERSION, DEPLOYMENTS, GatewayProcess, Keys, Simulator
from tests.stack_helpers import apply, metric_sum, token_env, wait_for_metric

METRICS = """<policies><inbound><base />
  <azure-openai-emit-token-metric namespace="streams"><dimension name="Subscription ID" /></azure-openai-emit-token-metric>
  {extra}
</inbound></policies>"""
OLD_API_VERSION = "2024-02-01"  # streams cannot carry usage: the gateway must estimate
MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]
#: What truncated streams raise in the openai SDK (the transport error, or its APIError wrapping).
TRUNCATED = (httpx.HTTPError, openai.APIError)


def azure(gateway: GatewayProcess, key: str, api_version: str = API_VERSION) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=gateway.url, api_key=key, api_version=api_version, max_retries=0)


def tiktoken_count(text: str) -> int:
    return TokenCounter({}, "o200k_base").count_now(None, text)


@pytest.fixture(scope="module")
def metered(
    start_gateway: Callable[[dict[str, str]], GatewayProcess],
    gateway_env: dict[str, str],
    simulator: Simulator,
    create_subscription: Callable[..., Keys],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[GatewayProcess, dict[str, str], Keys]:
    """A gateway that meters every request, with a backend that may stay silent for at most 1 s mid-stream."""
    backend = {"id": "sim", "url": simulator.url, "deployments": DEPLOYMENTS, "api_key_setting": "SIMULATOR_KEY", "timeouts": {"idle": 1}}
    env = token_env(gateway_env, GATEWAY_BACKENDS=json.dumps([backend]))
    keys = create_subscription("streams", env=env)
    apply(env, METRICS.format(extra=""), tmp_path_factory.mktemp("streams"))
    return start_gateway(env), env, keys


def curl_stream(url: str, key: str, fault: str) -> subprocess.CompletedProcess[str]:
    body = json.dumps({"messages": MESSAGES, "stream": True})
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", f"api-key: {key}", "-H", f"x-sim-stream-fault: {fault}",
         "-H", "content-type: application/json", "-d", body,
         f"{url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def relayed_until_raises(stream: Any) -> list[str]:
    """The content the SDK delivered before the stream raised (it must raise)."""
    contents: list[str] = []
    with pytest.raises(TRUNCATED):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                contents.append(chunk.choices[0].delta.content)
    return contents


@pytest.mark.parametrize("fault", ["drop:3", "end:3"])
def test_a_backend_stream_that_breaks_off_makes_the_sdk_raise_and_curl_fail(gateway: GatewayProcess, keys: Keys, fault: str) -> None:
    stream = azure(gateway, keys.primary).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-sim-stream-fault": fault},  # type: ignore[arg-type]
    )
    assert relayed_until_raises(stream) == ["Simulated", " answer", " to:"]  # what arrived was relayed, then the abort
    curl = curl_stream(gateway.url, keys.primary, fault)
    assert curl.returncode == 18, curl.stderr  # transfer closed with outstanding read data remaining


def test_a_broken_stream_under_metering_is_aborted_and_billed_as_estimated(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    before_completion, before_estimated = metric_sum(env, "completion"), metric_sum(env, "estimated")
    stream = azure(gateway, keys.primary).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-sim-stream-fault": "drop:4"},  # type: ignore[arg-type]
    )
    assert relayed_until_raises(stream) == ["Simulated", " answer", " to:", " one"]
    assert wait_for_metric(env, "estimated", before_estimated + 1) == before_estimated + 1
    assert metric_sum(env, "completion") - before_completion == tiktoken_count("Simulated answer to: one")
    assert curl_stream(gateway.url, keys.primary, "end:2").returncode == 18  # the tapped relay aborts too


def test_a_silent_backend_is_aborted_after_its_idle_timeout(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, _, keys = metered
    started = time.monotonic()
    stream = azure(gateway, keys.primary).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-sim-stream-fault": "stall:2", "x-sim-hang-s": "20"},  # type: ignore[arg-type]
    )
    assert relayed_until_raises(stream) == ["Simulated", " answer"]
    assert time.monotonic() - started < 10  # the backend's 1 s idle timeout, not its 20 s silence


@pytest.fixture(scope="module")
def functions_server(gateway_env: dict[str, str], gateway: GatewayProcess) -> Iterator[str]:
    """The gateway served by the Functions HTTP streaming extension's web server (uvicorn + FastAPI)."""
    port = devstack.free_port()
    process = devstack.start_python(["tests.functions_web_server", "--port", str(port)], gateway_env, port)
    yield f"http://127.0.0.1:{port}"
    devstack.stop(process)


def test_the_functions_streaming_server_aborts_truncated_streams_too(functions_server: str, keys: Keys) -> None:
    client = AzureOpenAI(azure_endpoint=functions_server, api_key=keys.primary, api_version=API_VERSION, max_retries=0)
    whole = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert whole[-1].choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-sim-stream-fault": "drop:2"})  # type: ignore[arg-type]
    assert relayed_until_raises(stream) == ["Simulated", " answer"]
    assert curl_stream(functions_server, keys.primary, "end:2").returncode == 18


def test_no_stream_options_reach_responses_or_embeddings_backends(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    strict = {"x-sim-strict": "true"}  # the simulator answers 400 to fields an operation does not have, like Azure
    before_total, before_estimated = metric_sum(env, "total"), metric_sum(env, "estimated")
    v1 = OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=keys.primary, max_retries=0)
    events = list(v1.responses.create(model="gpt-4o", input="hi there", stream=True, extra_headers=strict))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage is not None and events[-1].response.usage.total_tokens == 2 + 5  # type: ignore[union-attr]
    assert wait_for_metric(env, "total", before_total + 7) == before_total + 7  # the completed event's usage, exactly
    embeddings = httpx.post(
        f"{gateway.url}/openai/deployments/text-embedding-3-small/embeddings",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, **strict},
        json={"input": "alpha beta", "stream": True},
    )
    # The backend refuses the client's own `stream`, and sees no `stream_options` from the gateway.
    assert embeddings.status_code == 400
    assert embeddings.json()["error"]["message"] == "Unrecognized request argument supplied: stream"
    chat = list(azure(gateway, keys.primary).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=strict))  # type: ignore[arg-type]
    assert all(chunk.usage is None for chunk in chat)  # asked upstream for the gateway's metrics, stripped for the client
    assert metric_sum(env, "estimated") == before_estimated


@pytest.mark.parametrize("metering", [False, True])
def test_a_client_that_asked_for_usage_gets_an_estimated_chunk_when_the_backend_sends_none(
    gateway: GatewayProcess, keys: Keys, metered: tuple[GatewayProcess, dict[str, str], Keys], metering: bool
) -> None:
    target, key = (metered[0], metered[2].primary) if metering else (gateway, keys.primary)
    before_estimated = metric_sum(metered[1], "estimated")
    chunks = list(
        azure(target, key).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True},  # type: ignore[arg-type]
            extra_headers={"x-sim-ignore-stream-options": "true"},
        )
    )  # fmt: skip
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    completion = tiktoken_count("Simulated answer to: one two three four five six seven eight")
    assert usage.completion_tokens == completion and usage.prompt_tokens >= 8 and usage.total_tokens == usage.prompt_tokens + completion
    assert chunks[-1].id == chunks[0].id
    if metering:
        assert wait_for_metric(metered[1], "estimated", before_estimated + 1) == before_estimated + 1


def schema_of_size(fields: int) -> dict[str, Any]:
    properties = {f"field_{i}": {"type": "string", "description": f"the value of field number {i}, in plain words"} for i in range(fields)}
    return {"type": "json_schema", "json_schema": {"name": "smuggled", "schema": {"type": "object", "properties": properties}}}


def test_a_schema_heavy_stream_without_usage_is_settled_at_least_at_its_tiktoken_count(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    schema = schema_of_size(300)
    schema_tokens = tiktoken_count(orjson.dumps(schema).decode())
    assert schema_tokens > 5_000
    before_prompt, before_estimated = metric_sum(env, "prompt"), metric_sum(env, "estimated")
    client = azure(gateway, keys.primary, OLD_API_VERSION)
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, response_format=schema))  # type: ignore[arg-type,call-overload]
    assert wait_for_metric(env, "estimated", before_estimated + 1) == before_estimated + 1
    assert metric_sum(env, "prompt") - before_prompt >= schema_tokens  # the simulator itself bills 8


def test_a_schema_heavy_stream_is_refused_by_a_limit_its_schema_exceeds(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    env = token_env(gateway_env)
    keys = create_subscription("smuggler", env=env)
    limit = '<azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="2000" estimate-prompt-tokens="true" />'
    apply(env, METRICS.format(extra=limit), tmp_path)
    gateway = start_gateway(env)
    client = azure(gateway, keys.primary, OLD_API_VERSION)
    assert list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, max_tokens=50))  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, max_tokens=50, response_format=schema_of_size(300))  # type: ignore[arg-type,call-overload]
    assert "Token limit is exceeded" in str(refused.value)


def test_streamed_tool_call_arguments_count_as_completion(metered: tuple[GatewayProcess, dict[str, str], Keys]) -> None:
    gateway, env, keys = metered
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"question": {"type": "string"}}}}}]
    before_completion, before_estimated = metric_sum(env, "completion"), metric_sum(env, "estimated")
    chunks = list(
        azure(gateway, keys.primary, OLD_API_VERSION).chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            tools=tools,
            tool_choice="required",  # type: ignore[arg-type]
        )
    )
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls)  # type: ignore[index,union-attr]
    assert json.loads(arguments) == {"question": MESSAGES[0]["content"]}
    assert wait_for_metric(env, "estimated", before_estimated + 1) == before_estimated + 1
    assert metric_sum(env, "completion") - before_completion >= tiktoken_count(arguments)
