"""The simulated Azure OpenAI backend: Azure shapes, deterministic content, auth, faults and introspection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn
from starlette.testclient import TestClient

from gateway.dev import simulator
from gateway.dev.simulator import SimulatorSettings, build_app

API = "api-version=2024-10-21"
CHAT = f"/openai/deployments/gpt-4o/chat/completions?{API}"
COMPLETIONS = f"/openai/deployments/gpt-35/completions?{API}"
EMBEDDINGS = f"/openai/deployments/text-embedding-3-small/embeddings?{API}"
TRANSCRIPTIONS = f"/openai/deployments/whisper/audio/transcriptions?{API}"
SPEECH = f"/openai/deployments/tts/audio/speech?{API}"
IMAGES = f"/openai/deployments/dall-e-3/images/generations?{API}"
QUESTION = {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi there"}]}
ANSWER = "Simulated answer to: hi there"
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)


def client(**settings: Any) -> TestClient:
    return TestClient(build_app(SimulatorSettings(**settings)))


def sse_events(text: str) -> list[Any]:
    """Decode an SSE body; [DONE] stays a string so its position can be asserted."""
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def embed(http: TestClient, text: str, **extra: Any) -> list[float]:
    response = http.post(EMBEDDINGS, json={"input": text, **extra})
    assert response.status_code == 200
    return response.json()["data"][0]["embedding"]


def cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.hypot(*a) * math.hypot(*b))


def asgi_call(app: Any, method: str, path: str, query: str, body: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Drive the app by hand to see each body message the server would write, which TestClient merges."""
    messages: list[dict[str, Any]] = []

    async def run() -> None:
        delivered = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)

    asyncio.run(run())
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start, [m["body"] for m in messages if m["type"] == "http.response.body" and m["body"]]


@pytest.fixture
def live_simulator() -> Iterator[tuple[str, SimulatorSettings]]:
    """A real uvicorn server on a free loopback port, for clients that bring their own HTTP stack."""
    settings = SimulatorSettings(api_key="backend-key", identity_header="identity-secret")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", settings
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_chat_nonstream_has_azure_shape_and_usage_arithmetic() -> None:
    body = client().post(CHAT, json=QUESTION).json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert isinstance(body["created"], int) and body["system_fingerprint"]
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop",
            "logprobs": None,
            "content_filter_results": {},
        }
    ]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert body["prompt_filter_results"] == [{"prompt_index": 0, "content_filter_results": {}}]


def test_chat_list_content_parts_count_their_text() -> None:
    parts = [{"type": "text", "text": "what colour"}, {"type": "image_url", "image_url": {"url": "x"}}]
    body = client().post(CHAT, json={"messages": [{"role": "user", "content": parts}]}).json()
    assert body["choices"][0]["message"]["content"] == "Simulated answer to: what colour"
    assert body["usage"]["prompt_tokens"] == 2


def test_chat_n_repeats_choices_and_multiplies_completion_tokens() -> None:
    body = client().post(CHAT, json={**QUESTION, "n": 3}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {ANSWER}
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 15, "total_tokens": 19}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_token_limit_truncates_with_length_finish(field: str) -> None:
    body = client().post(CHAT, json={**QUESTION, field: 3}).json()
    assert body["choices"][0]["message"]["content"] == "Simulated answer to:"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_chat_stream_events_arrive_in_azure_order_without_usage() -> None:
    response = client().post(CHAT, json={**QUESTION, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:-1]] == [{"content": w} for w in ["Simulated", " answer", " to:", " hi", " there"]]
    assert chunks[-1]["choices"][0] | {"content_filter_results": None} == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
        "logprobs": None,
        "content_filter_results": None,
    }
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "gpt-4o", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in chunks)


def test_chat_stream_joined_deltas_equal_nonstream_content() -> None:
    http = client()
    request = {"messages": [{"role": "user", "content": "Why is the sky blue at noon?"}], "max_tokens": 7}
    plain = http.post(CHAT, json=request).json()["choices"][0]
    chunks = sse_events(http.post(CHAT, json={**request, "stream": True}).text)[:-1]
    joined = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert joined == plain["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["finish_reason"] == "length"


def test_chat_stream_include_usage_ends_with_usage_chunk() -> None:
    request = {**QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(client().post(CHAT, json=request).text)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks)


def test_chat_stream_writes_each_event_as_its_own_chunk() -> None:
    path, query = CHAT.split("?")
    body = orjson.dumps({**QUESTION, "stream": True})
    start, bodies = asgi_call(build_app(SimulatorSettings()), "POST", path, query, body)
    assert start["status"] == 200
    assert len(bodies) == 1 + 5 + 1 + 1
    assert all(b.startswith(b"data: ") and b.endswith(b"\n\n") and b.count(b"\n\n") == 1 for b in bodies)
    assert bodies[-1] == b"data: [DONE]\n\n"


def test_chat_stream_token_delay_header_paces_tokens() -> None:
    started = time.perf_counter()
    response = client().post(CHAT, json={**QUESTION, "stream": True}, headers={"x-sim-token-ms": "40"})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.9 * 5 * 0.04  # the event loop may wake a clock tick early


def test_chat_stream_token_delay_header_overrides_settings() -> None:
    started = time.perf_counter()
    response = client(token_ms=2000).post(CHAT, json={**QUESTION, "stream": True}, headers={"x-sim-token-ms": "0"})
    assert response.status_code == 200
    assert time.perf_counter() - started < 2.0


def test_completions_prompt_list_counts_all_prompts_and_streams() -> None:
    http = client()
    request = {"prompt": ["one two", "say this please"]}
    body = http.post(COMPLETIONS, json=request).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Simulated completion of: say this please"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    events = sse_events(http.post(COMPLETIONS, json={**request, "stream": True}).text)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == body["choices"][0]["text"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_paraphrases_close_and_unrelated_far() -> None:
    http = client()
    capital = embed(http, "What is the capital of France?")
    paraphrase = embed(http, "Tell me the capital of France, please")
    unrelated = embed(http, "How do I bake sourdough bread?")
    assert len(capital) == 1536
    assert math.isclose(math.hypot(*capital), 1.0, rel_tol=1e-9)
    assert cosine_distance(capital, paraphrase) < 0.01
    assert cosine_distance(capital, unrelated) > 0.5


def test_embeddings_only_stop_words_give_fixed_unit_vector() -> None:
    http = client()
    a, b = embed(http, "What is it?"), embed(http, "")
    assert a == b
    assert math.isclose(math.hypot(*a), 1.0, rel_tol=1e-9)


def test_embeddings_stable_across_processes_with_other_hash_seed() -> None:
    script = (
        "from starlette.testclient import TestClient\n"
        "from gateway.dev.simulator import SimulatorSettings, build_app\n"
        f"r = TestClient(build_app(SimulatorSettings())).post({EMBEDDINGS!r}, json={{'input': 'sourdough bread'}})\n"
        "print(r.json()['data'][0]['embedding'][:1536])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert orjson.loads(out.stdout) == embed(client(), "sourdough bread")


def test_embeddings_base64_decodes_to_float_vector() -> None:
    http = client()
    floats = embed(http, "capital of France")
    encoded = embed(http, "capital of France", encoding_format="base64")
    decoded = struct.unpack(f"<{len(floats)}f", base64.b64decode(encoded))
    assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(decoded, floats, strict=True))


def test_embeddings_dimensions_truncates_and_renormalises() -> None:
    http = client()
    full = embed(http, "capital of France")
    short = embed(http, "capital of France", dimensions=256)
    assert len(short) == 256
    assert math.isclose(math.hypot(*short), 1.0, rel_tol=1e-9)
    assert cosine_distance(short, full[:256]) < 1e-9


def test_embeddings_batch_usage_and_indices() -> None:
    body = client().post(EMBEDDINGS, json={"input": ["a b c", "d e"]}).json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


def test_v1_embeddings_take_deployment_from_model_field() -> None:
    http = client(deployments=("text-embedding-3-small",))
    ok = http.post("/openai/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert ok.status_code == 200 and ok.json()["model"] == "text-embedding-3-small"
    assert http.post("/openai/v1/embeddings", json={"model": "other", "input": "x"}).status_code == 404
    assert http.post("/openai/v1/embeddings", json={"input": "x"}).status_code == 400


def test_transcription_reports_sha256_of_uploaded_bytes() -> None:
    audio = os.urandom(3000) + b"\r\n--\r\n\r\n" + os.urandom(500) + b"\r"
    files = {"file": ("clip.wav", audio, "audio/wav")}
    response = client().post(TRANSCRIPTIONS, files=files, data={"model": "whisper"})
    assert response.status_code == 200
    digest = hashlib.sha256(audio).hexdigest()
    assert response.json() == {"text": f"simulated transcription of clip.wav: {len(audio)} bytes, sha256 {digest}"}


def test_translation_text_format_answers_plain_text() -> None:
    path = TRANSCRIPTIONS.replace("transcriptions", "translations")
    files = {"file": ("talk.mp3", b"abc")}
    response = client().post(path, files=files, data={"response_format": "text"})
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == f"simulated translation of talk.mp3: 3 bytes, sha256 {hashlib.sha256(b'abc').hexdigest()}"


def test_transcription_without_file_part_is_400() -> None:
    response = client().post(TRANSCRIPTIONS, files={"other": ("x", b"1")}, data={"model": "whisper"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_speech_bytes_deterministic_and_streamed_in_chunks() -> None:
    http = client()
    first = http.post(SPEECH, json={"input": "hello", "voice": "alloy"})
    again = http.post(SPEECH, json={"input": "hello", "voice": "alloy"})
    other = http.post(SPEECH, json={"input": "goodbye", "voice": "alloy"})
    assert first.headers["content-type"] == "audio/mpeg"
    assert "content-length" not in first.headers
    assert len(first.content) == 64 * 1024
    assert first.content == again.content != other.content
    assert first.content.startswith(hashlib.sha256(b"hello").digest())
    path, query = SPEECH.split("?")
    _, bodies = asgi_call(build_app(SimulatorSettings()), "POST", path, query, b'{"input": "hello"}')
    assert len(bodies) == 8 and b"".join(bodies) == first.content


def test_images_answer_url_or_tiny_png() -> None:
    http = client()
    by_url = http.post(IMAGES, json={"prompt": "a red fox"}).json()
    assert isinstance(by_url["created"], int)
    digest = hashlib.sha256(b"a red fox").hexdigest()[:32]
    assert by_url["data"] == [{"url": f"https://simulator.invalid/images/{digest}.png", "revised_prompt": "a red fox"}]
    inline = http.post(IMAGES, json={"prompt": "a red fox", "response_format": "b64_json"}).json()
    png = base64.b64decode(inline["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"


def test_responses_v1_shape_and_usage() -> None:
    request = {
        "model": "gpt-4o",
        "instructions": "be terse",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "tell a joke"}]}],
    }
    body = client().post("/openai/v1/responses", json=request).json()
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    assert body["model"] == "gpt-4o" and isinstance(body["created_at"], int)
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    text = "Simulated answer to: tell a joke"
    assert message["content"] == [{"type": "output_text", "text": text, "annotations": []}]
    assert body["usage"] == {
        "input_tokens": 5,
        "output_tokens": 6,
        "total_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def test_responses_are_stored_continued_streamed_and_deleted() -> None:
    http = client()
    first = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "hello"}).json()
    assert http.get(f"/openai/v1/responses/{first['id']}").json() == first
    follow = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "again", "previous_response_id": first["id"]})
    assert follow.status_code == 200 and follow.json()["previous_response_id"] == first["id"]
    unknown = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "x", "previous_response_id": "resp_nope"})
    assert unknown.status_code == 404
    streamed = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "a b", "stream": True})
    events = [orjson.loads(line[len("data: ") :]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["response.created", *["response.output_text.delta"] * 5, "response.output_text.done", "response.completed"]
    assert events[0]["response"]["id"] == events[-1]["response"]["id"] and events[0]["response"]["output"] == []
    assert http.get(f"/openai/v1/responses/{events[0]['response']['id']}").status_code == 200
    assert http.delete(f"/openai/v1/responses/{first['id']}").json() == {"id": first["id"], "object": "response.deleted", "deleted": True}
    assert http.get(f"/openai/v1/responses/{first['id']}").status_code == 404
    unstored = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "x", "store": False}).json()
    assert http.get(f"/openai/v1/responses/{unstored['id']}").status_code == 404


def test_models_lists_configured_deployments_or_defaults() -> None:
    default = client().get("/openai/v1/models").json()
    assert [m["id"] for m in default["data"]] == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    restricted = client(deployments=("a", "b")).get("/openai/v1/models").json()
    assert restricted["object"] == "list"
    assert [m["id"] for m in restricted["data"]] == ["a", "b"]
    model = restricted["data"][1]
    assert model["object"] == "model" and model["owned_by"] == "simulator" and isinstance(model["created"], int)


def test_versioned_route_without_api_version_is_404() -> None:
    response = client().post(CHAT.split("?")[0], json=QUESTION)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_unknown_path_is_azure_shaped_404() -> None:
    response = client().get("/openai/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_unknown_deployment_is_404_when_restricted() -> None:
    http = client(deployments=("gpt-4o",))
    assert http.post(CHAT, json=QUESTION).status_code == 200
    response = http.post(CHAT.replace("gpt-4o", "gpt-5"), json=QUESTION)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DeploymentNotFound"
    assert response.json()["error"]["message"].startswith("The API deployment for this resource does not exist.")


def test_any_deployment_served_when_unrestricted() -> None:
    response = client().post(CHAT.replace("gpt-4o", "whatever-name"), json=QUESTION)
    assert response.status_code == 200 and response.json()["model"] == "whatever-name"


def test_malformed_json_is_400() -> None:
    response = client().post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_every_response_carries_azure_headers() -> None:
    http = client(region="swedencentral")
    responses = [http.post(CHAT, json=QUESTION), http.get("/nope"), http.post(CHAT, json={**QUESTION, "stream": True})]
    ids = {uuid.UUID(r.headers["apim-request-id"]).version for r in responses}
    assert ids == {4} and len({r.headers["apim-request-id"] for r in responses}) == 3
    for response in responses:
        assert response.headers["x-ms-region"] == "swedencentral"
        assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0
        assert int(response.headers["x-ratelimit-remaining-tokens"]) >= 0


def test_auth_rejects_missing_or_wrong_key_with_401() -> None:
    http = client(api_key="secret")
    for headers in ({}, {"api-key": "wrong"}, {"authorization": "Bearer sim-mi-1"}):
        response = http.post(CHAT, json=QUESTION, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": {"code": "401", "message": ACCESS_DENIED}}


def test_auth_accepts_configured_key() -> None:
    response = client(api_key="secret").post(CHAT, json=QUESTION, headers={"api-key": "secret"})
    assert response.status_code == 200


def test_msi_token_issued_and_accepted_as_bearer() -> None:
    http = client(api_key="secret", identity_header="id-secret", token_lifetime_s=600)
    query = {"api-version": "2019-08-01", "resource": "https://cognitiveservices.azure.com"}
    issued = http.get("/msi/token", params=query, headers={"X-IDENTITY-HEADER": "id-secret"})
    assert issued.status_code == 200
    token = issued.json()
    assert token["access_token"] == "sim-mi-1" and token["token_type"] == "Bearer"
    assert token["resource"] == "https://cognitiveservices.azure.com"
    assert isinstance(token["expires_on"], str) and abs(int(token["expires_on"]) - time.time() - 600) < 5
    auth = {"authorization": f"Bearer {token['access_token']}"}
    assert http.post(CHAT, json=QUESTION, headers=auth).status_code == 200
    assert http.get("/sim/stats").json()["msi_tokens_issued"] == 1


def test_msi_token_wrong_identity_header_is_401() -> None:
    http = client(identity_header="id-secret")
    response = http.get("/msi/token", params={"resource": "r"}, headers={"X-IDENTITY-HEADER": "nope"})
    assert response.status_code == 401
    assert http.get("/sim/stats").json()["msi_tokens_issued"] == 0


def test_msi_token_expired_is_rejected() -> None:
    http = client(api_key="secret", token_lifetime_s=0)
    token = http.get("/msi/token", params={"resource": "r"}).json()["access_token"]
    assert http.post(CHAT, json=QUESTION, headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_msi_endpoint_serves_azure_identity_credential(live_simulator: tuple[str, SimulatorSettings], monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ManagedIdentityCredential

    url, settings = live_simulator
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "identity-secret")
    token = ManagedIdentityCredential().get_token("https://cognitiveservices.azure.com/.default")
    assert token.token.startswith("sim-mi-")
    backend = openai.AzureOpenAI(azure_endpoint=url, api_version="2024-10-21", azure_ad_token=token.token, max_retries=0)
    answer = backend.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Simulated answer to: hi"


def test_openai_sdk_chat_stream_and_default_base64_embeddings() -> None:
    http = TestClient(build_app(SimulatorSettings(api_key="k")), base_url="http://sim")
    sdk = openai.AzureOpenAI(azure_endpoint="http://sim", api_key="k", api_version="2024-10-21", http_client=http)
    plain = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi there"}])
    assert plain.choices[0].message.content == ANSWER
    stream = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi there"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER
    vector = sdk.embeddings.create(model="text-embedding-3-small", input="capital of France").data[0].embedding
    raw = http.post(EMBEDDINGS, json={"input": "capital of France"}, headers={"api-key": "k"}).json()
    assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(vector, raw["data"][0]["embedding"], strict=True))
    assert orjson.loads(http.get("/sim/requests").content)[-2]["headers"].get("api-key") == "k"


def test_fault_header_429_has_retry_hints() -> None:
    headers = {"x-sim-fault": "429", "x-sim-retry-after": "7"}
    response = client().post(CHAT, json=QUESTION, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7" and response.headers["retry-after-ms"] == "7000"
    error = response.json()["error"]
    assert error["code"] == "429" and "Please retry after 7 seconds." in error["message"]


@pytest.mark.parametrize(("status", "code"), [("500", "InternalServerError"), ("503", "ServiceUnavailable"), ("502", "502")])
def test_fault_header_status_has_azure_body(status: str, code: str) -> None:
    response = client().post(CHAT, json=QUESTION, headers={"x-sim-fault": status})
    assert response.status_code == int(status)
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_fault_header_invalid_value_is_400() -> None:
    assert client().post(CHAT, json=QUESTION, headers={"x-sim-fault": "teapot"}).status_code == 400


def test_fault_header_hang_delays_then_answers() -> None:
    started = time.perf_counter()
    response = client().post(CHAT, json=QUESTION, headers={"x-sim-fault": "hang", "x-sim-hang-s": "0.3"})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.27


def test_fault_queue_fails_exactly_count_times_then_succeeds() -> None:
    http = client()
    armed = http.post("/sim/faults", json={"status": 503, "count": 2, "retry_after": 0.5})
    assert armed.status_code == 200
    first, second, third = (http.post(CHAT, json=QUESTION) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "1" and first.headers["retry-after-ms"] == "500"


def test_fault_queue_unbounded_until_deleted() -> None:
    http = client()
    http.post("/sim/faults", json={"status": 429, "count": -1})
    assert [http.post(CHAT, json=QUESTION).status_code for _ in range(4)] == [429] * 4
    assert http.delete("/sim/faults").status_code == 204
    assert http.post(CHAT, json=QUESTION).status_code == 200


def test_fault_queue_hang_applies_once() -> None:
    http = client()
    http.post("/sim/faults", json={"hang_s": 0.3, "count": 1})
    started = time.perf_counter()
    assert http.post(CHAT, json=QUESTION).status_code == 200
    assert time.perf_counter() - started >= 0.27
    started = time.perf_counter()
    assert http.post(CHAT, json=QUESTION).status_code == 200
    assert time.perf_counter() - started < 0.3


def test_fault_spec_invalid_is_400() -> None:
    http = client()
    for spec in ({"status": 200}, {"count": 2}, {"status": 500, "count": 0}, {"hang_s": -1}):
        assert http.post("/sim/faults", json=spec).status_code == 400, spec
    assert http.post(CHAT, json=QUESTION).status_code == 200


def test_requests_recorded_with_lowercase_headers_and_body_digest() -> None:
    http = client()
    payload = orjson.dumps(QUESTION)
    http.post(CHAT, content=payload, headers={"Content-Type": "application/json", "X-Trace-Me": "abc"})
    [record] = http.get("/sim/requests").json()
    assert record["method"] == "POST"
    assert record["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert record["query"] == API
    assert record["headers"]["x-trace-me"] == "abc"
    assert record["body_len"] == len(payload)
    assert record["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_requests_keep_last_200_and_clear() -> None:
    http = client()
    for i in range(205):
        http.get("/openai/v1/models", headers={"x-n": str(i)})
    records = http.get("/sim/requests").json()
    assert len(records) == 200 and records[0]["headers"]["x-n"] == "5"
    assert http.get("/sim/stats").json()["requests"] == 205
    assert http.delete("/sim/requests").status_code == 204
    assert http.get("/sim/requests").json() == []


def test_health_reports_simulator() -> None:
    assert client().get("/sim/health").json() == {"status": "ok", "simulator": True}


def test_two_apps_keep_independent_state() -> None:
    first, second = client(), client()
    first.post("/sim/faults", json={"status": 500, "count": -1})
    assert second.post(CHAT, json=QUESTION).status_code == 200
    assert first.post(CHAT, json=QUESTION).status_code == 500
    assert first.get("/sim/stats").json()["requests"] == 1
    assert [r["path"] for r in second.get("/sim/requests").json()] == ["/openai/deployments/gpt-4o/chat/completions"]


def test_serve_announces_simulation_and_runs_uvicorn(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(simulator.uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    simulator.serve(SimulatorSettings(), port=9911)
    err = capsys.readouterr().err
    assert "SIMULATED Azure OpenAI backend" in err and "not a real model" in err
    assert "http://127.0.0.1:9911" in err
    assert calls == [{"host": "127.0.0.1", "port": 9911, "loop": "auto", "http": "auto", "access_log": False, "log_level": "warning"}]


def live_stream(url: str, fault: str, **headers: str) -> httpx.Response:
    return httpx.post(
        url + CHAT,
        headers={"api-key": "backend-key", "x-sim-stream-fault": fault, **headers},
        json={"messages": [{"role": "user", "content": "one two three four five"}], "stream": True},
        timeout=10,
    )


def test_stream_fault_drop_closes_the_connection_mid_body(live_simulator: tuple[str, SimulatorSettings]) -> None:
    url, _ = live_simulator
    with pytest.raises(httpx.RemoteProtocolError):
        live_stream(url, "drop:2")
    curl = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "api-key: backend-key", "-H", "x-sim-stream-fault: drop:2", "-H", "content-type: application/json",
         "-d", '{"messages": [{"role": "user", "content": "hi"}], "stream": true}', url + CHAT],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert curl.returncode == 18, curl.stderr  # "transfer closed with outstanding read data remaining"
    sdk = openai.AzureOpenAI(azure_endpoint=url, api_key="backend-key", api_version="2024-10-21", max_retries=0)
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c"}], stream=True, extra_headers={"x-sim-stream-fault": "drop:1"}
    )
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        list(stream)


def test_stream_fault_end_finishes_cleanly_without_closing_chunks_or_done(live_simulator: tuple[str, SimulatorSettings]) -> None:
    url, _ = live_simulator
    events = sse_events(live_stream(url, "end:3").text)
    assert len(events) == 1 + 3 and "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_stream_fault_stall_goes_silent_then_drops(live_simulator: tuple[str, SimulatorSettings]) -> None:
    url, _ = live_simulator
    start = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        live_stream(url, "stall:1", **{"x-sim-hang-s": "0.3"})
    assert time.monotonic() - start >= 0.3


def test_stream_fault_header_invalid_is_400() -> None:
    response = client().post(CHAT, json={**QUESTION, "stream": True}, headers={"x-sim-stream-fault": "explode"})
    assert response.status_code == 400 and "x-sim-stream-fault" in response.json()["error"]["message"]


def test_strict_mode_refuses_unknown_fields_like_azure() -> None:
    strict = client(strict=True)
    ok = strict.post(CHAT, json={**QUESTION, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0})
    assert ok.status_code == 200
    refused = strict.post(EMBEDDINGS, json={"input": "x", "stream": True, "stream_options": {"include_usage": True}})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Unrecognized request argument supplied: stream, stream_options"
    responses = strict.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "hi", "stream": True, "stream_options": {}})
    assert responses.status_code == 400 and responses.json()["error"]["message"].endswith("stream_options")
    lenient = client().post(EMBEDDINGS, json={"input": "x", "made_up": 1})
    assert lenient.status_code == 200
    per_request = client().post(EMBEDDINGS, json={"input": "x", "made_up": 1}, headers={"x-sim-strict": "true"})
    assert per_request.status_code == 400


def test_forced_tool_call_streams_its_arguments() -> None:
    http = TestClient(build_app(SimulatorSettings()), base_url="http://sim")
    sdk = openai.AzureOpenAI(azure_endpoint="http://sim", api_key="k", api_version="2024-10-21", http_client=http)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"question": {"type": "string"}}}}}]
    choice = {"type": "function", "function": {"name": "lookup"}}
    messages = [{"role": "user", "content": "tides of the north sea"}]
    plain = sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=tools, tool_choice=choice)  # type: ignore[arg-type]
    call = plain.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and orjson.loads(call.function.arguments) == {"question": "tides of the north sea"}
    assert plain.choices[0].finish_reason == "tool_calls" and plain.usage is not None and plain.usage.completion_tokens == 5
    stream = sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=tools, tool_choice="required", stream=True)  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.tool_calls[0].function.arguments for c in stream if c.choices and c.choices[0].delta.tool_calls]  # type: ignore[index,union-attr]
    assert "".join(pieces) == call.function.arguments and len(pieces) == 6  # the opening delta, then five pieces


def test_responses_stream_events_end_with_completed_and_usage() -> None:
    http = TestClient(build_app(SimulatorSettings()), base_url="http://sim")
    sdk = openai.OpenAI(base_url="http://sim/openai/v1", api_key="k", http_client=http)
    events = list(sdk.responses.create(model="gpt-4o", input="hi there", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == ANSWER
    assert events[-1].response.usage is not None and events[-1].response.usage.total_tokens == 2 + 5  # type: ignore[union-attr]
    raw = http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "hi", "stream": True}).text
    assert raw.startswith("event: response.created\ndata: ") and "[DONE]" not in raw


def test_ignoring_stream_options_sends_no_usage_chunk() -> None:
    body = {**QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events(client().post(CHAT, json=body, headers={"x-sim-ignore-stream-options": "true"}).text)
    assert events[-1] == "[DONE]" and all(e.get("usage") is None for e in events[:-1])
