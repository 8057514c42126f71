"""End to end through the real stack: the openai SDK -> gateway process -> simulated Azure OpenAI, Azurite for state."""

from __future__ import annotations

import hashlib
import time

import httpx
import numpy as np
import pytest
from openai import AzureOpenAI, OpenAI

from tests.conftest import API_VERSION, GatewayProcess, Keys, Simulator


def azure_client(gateway: GatewayProcess, key: str) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=gateway.url, api_key=key, api_version=API_VERSION, max_retries=0)


def v1_client(gateway: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=key, max_retries=0)


def test_chat_completion_through_gateway_matches_backend_answer(gateway: GatewayProcess, keys: Keys) -> None:
    raw = azure_client(gateway, keys.primary).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Name three rivers"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Simulated answer to: Name three rivers"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens == 3 + 6
    timing = raw.headers["server-timing"]
    for phase in ("auth;dur=", "upstream;dur=", "total;dur="):
        assert phase in timing
    # Backend headers that clients rely on pass through.
    assert raw.headers["x-ms-region"] == "simulated"
    assert raw.headers["apim-request-id"]
    assert raw.headers["x-ratelimit-remaining-tokens"].isdigit()


def test_streaming_chat_relays_chunks_as_they_arrive(gateway: GatewayProcess, keys: Keys) -> None:
    client = azure_client(gateway, keys.primary)
    messages = [{"role": "user", "content": "one two three four five six"}]
    arrivals: list[float] = []
    parts: list[str] = []
    start = time.perf_counter()
    stream = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True, extra_headers={"x-sim-token-ms": "100"})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - start)
            parts.append(chunk.choices[0].delta.content)
    full = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert "".join(parts) == full.choices[0].message.content
    # Nine tokens, 100 ms apart: a buffering proxy would deliver them all at once at the end.
    assert len(arrivals) == 9
    assert arrivals[-1] - arrivals[0] > 0.6


def test_streaming_usage_chunk_reaches_client_that_asked(gateway: GatewayProcess, keys: Keys) -> None:
    chunks = list(
        azure_client(gateway, keys.primary).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 2 and usage.completion_tokens == 5


def test_v1_client_chat_embeddings_responses_and_models(gateway: GatewayProcess, keys: Keys) -> None:
    client = v1_client(gateway, keys.primary)
    chat = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "Simulated answer to: hi"
    assert chat.model == "gpt-4o-mini"
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["What is the capital of France?", "Tell me the capital of France"])
    a, b = (np.array(d.embedding) for d in vectors.data)
    assert a.shape == (1536,)
    assert 1 - float(a @ b) < 0.01
    response = client.responses.create(model="gpt-4o", input="Say something")
    assert response.output_text == "Simulated answer to: Say something"
    assert {m.id for m in client.models.list()} >= {"gpt-4o", "gpt-4o-mini"}


def test_audio_upload_reaches_backend_intact(gateway: GatewayProcess, keys: Keys) -> None:
    audio = bytes(range(256)) * 400  # binary, includes every byte value
    result = azure_client(gateway, keys.primary).audio.transcriptions.create(model="whisper", file=("clip.wav", audio, "audio/wav"))
    assert result.text == f"simulated transcription of clip.wav: {len(audio)} bytes, sha256 {hashlib.sha256(audio).hexdigest()}"


def test_speech_binary_passes_through_unchanged(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    through_gateway = azure_client(gateway, keys.primary).audio.speech.create(model="tts", voice="alloy", input="Hello")
    direct = httpx.post(
        f"{simulator.url}/openai/deployments/tts/audio/speech",
        params={"api-version": API_VERSION},
        headers={"api-key": simulator.api_key},
        json={"model": "tts", "voice": "alloy", "input": "Hello"},
    )
    assert through_gateway.content == direct.content
    assert len(direct.content) == 64 * 1024


def test_client_key_is_never_forwarded_to_backend(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    simulator.clear_requests()
    url = f"{gateway.url}/openai/deployments/gpt-4o/chat/completions"
    body = {"messages": [{"role": "user", "content": "x"}]}
    for headers, params in (
        ({"api-key": keys.primary}, {}),
        ({"Ocp-Apim-Subscription-Key": keys.primary}, {}),
        ({"Authorization": f"Bearer {keys.primary}"}, {}),
        ({}, {"subscription-key": keys.primary}),
    ):
        response = httpx.post(url, params={"api-version": API_VERSION, "trace": "on", **params}, headers=headers, json=body)
        assert response.status_code == 200, response.text
    seen = simulator.requests()
    assert len(seen) == 4
    for request in seen:
        assert keys.primary not in repr(request)
        assert request["headers"]["api-key"] == simulator.api_key
        assert "authorization" not in request["headers"]
        assert "trace=on" in request["query"] and "subscription-key" not in request["query"]


def test_backend_error_passes_through_with_status_and_headers(gateway: GatewayProcess, keys: Keys) -> None:
    response = httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "x-sim-fault": "429", "x-sim-retry-after": "7"},
        json={"messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "429"
    assert "server-timing" in response.headers


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/openai/deployments/gpt-4o/chat/completions", {}, 404, "404"),  # missing api-version
        ("/openai/deployments/gpt-4o/unknown", {"api-version": API_VERSION}, 404, "404"),
        ("/openai/nothing/here", {}, 404, "404"),
        ("/elsewhere", {}, 404, "404"),
        ("/openai/deployments/not-deployed/chat/completions", {"api-version": API_VERSION}, 404, "DeploymentNotFound"),
    ],
)
def test_route_errors_use_azure_status_and_error_shape(gateway: GatewayProcess, keys: Keys, path: str, params: dict, status: int, code: str) -> None:
    response = httpx.post(f"{gateway.url}{path}", params=params, headers={"api-key": keys.primary}, json={})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_v1_route_without_model_is_bad_request(gateway: GatewayProcess, keys: Keys) -> None:
    response = httpx.post(f"{gateway.url}/openai/v1/chat/completions", headers={"api-key": keys.primary}, content=b"not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_sse_keepalive_comment_during_long_silence(gateway: GatewayProcess, keys: Keys) -> None:
    # The test gateway sends a keep-alive after 0.3 s of silence; the backend pauses 0.8 s per token.
    with httpx.stream(
        "POST",
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "x-sim-token-ms": "800"},
        json={"messages": [{"role": "user", "content": "slow"}], "stream": True, "max_tokens": 2},
        timeout=30,
    ) as response:
        body = b"".join(response.iter_raw())
    events = body.split(b"\n\n")
    assert b": keep-alive" in events
    # Keep-alives sit between events, never inside one: every other event still parses as data.
    assert all(e.startswith(b"data: ") or e in (b": keep-alive", b"") for e in events)
    assert body.rstrip().endswith(b"data: [DONE]")


def test_client_disconnect_closes_the_backend_stream(gateway: GatewayProcess, keys: Keys, simulator: Simulator) -> None:
    before = simulator.stats()
    with httpx.stream(
        "POST",
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": keys.primary, "x-sim-token-ms": "300"},
        json={"messages": [{"role": "user", "content": " ".join(["long"] * 50)}], "stream": True},
        timeout=30,
    ) as response:
        chunks = response.iter_raw()
        next(chunks)  # the first event is enough: hang up mid-stream (the answer would take 15 s)
        assert simulator.stats()["streams_open"] == before["streams_open"] + 1
    deadline = time.monotonic() + 5
    while simulator.stats()["streams_open"] != before["streams_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = simulator.stats()
    assert after["streams_open"] == before["streams_open"]
    assert after["streams_abandoned"] == before["streams_abandoned"] + 1
    assert time.monotonic() < deadline
