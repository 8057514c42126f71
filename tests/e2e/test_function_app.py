"""The Azure Functions entry point: metadata the host reads, and the handlers called as the worker calls them."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

import function_app
from gateway.hosts import local as hosting
from gateway.hosts.routes import ROUTES
from tests.conftest import API_VERSION, Keys
from tests.function_metadata import function_bindings


def test_function_metadata_has_the_routes_and_the_event_triggers() -> None:
    functions = function_bindings()
    assert set(functions) == {route.name for route in ROUTES} | {"policy_updates", "policy_blob_created", "semantic_cache_cleanup"}
    queue = functions["policy_updates"]["bindings"][0]
    assert (queue["type"], queue["queueName"], queue["connection"]) == ("queueTrigger", "%GATEWAY_POLICY_QUEUE%", "AzureWebJobsStorage")
    blob = functions["policy_blob_created"]["bindings"][0]
    assert (blob["type"], blob["path"], blob["source"]) == ("blobTrigger", "policies/{name}", "EventGrid")


async def test_policy_queue_function_applies_a_document(functions_env: None, gateway_env: dict[str, str]) -> None:
    import azure.functions as func

    from policies.document import Scope

    xml = "<policies><inbound><base /><set-variable name='from-queue' value='1' /></inbound></policies>"
    message = func.QueueMessage(id="1", body=json.dumps({"scope": "operation:Speech_Create", "xml": xml}).encode())
    try:
        await function_app.policy_update_message(message)
        stored = await hosting.current_gateway().policy_repository.document(Scope("operation", "Speech_Create"))
        assert stored == xml
    finally:
        await hosting.current_gateway().close()


async def test_policy_blob_function_rejects_invalid_document(functions_env: None) -> None:
    import azure.functions as func

    from policies.document import Scope

    blob = func.blob.InputStream(data=b"<policies><inbound><nope /></inbound></policies>", name="policies/operations/Translations_Create.xml")
    try:
        await function_app.policy_blob_created(blob)
        assert await hosting.current_gateway().policy_repository.document(Scope("operation", "Translations_Create")) is None
        good = func.blob.InputStream(data=b"<policies />", name="policies/operations/Translations_Create.xml")
        await function_app.policy_blob_created(good)
        assert await hosting.current_gateway().policy_repository.document(Scope("operation", "Translations_Create")) == "<policies />"
    finally:
        await hosting.current_gateway().close()


def test_host_json_removes_route_prefix() -> None:
    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""


def make_request(path: str, body: dict, headers: dict[str, str], query: str = "") -> Request:
    payload = orjson.dumps(body)
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/openai/{path}",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**headers, "content-type": "application/json"}.items()],
        "path_params": {"path": path},
        "client": ("127.0.0.1", 50000),
    }
    return Request(scope, receive)


async def test_openai_function_proxies_chat(functions_env: None, keys: Keys) -> None:
    request = make_request(
        "deployments/gpt-4o/chat/completions",
        {"messages": [{"role": "user", "content": "from functions"}]},
        {"api-key": keys.primary},
        f"api-version={API_VERSION}",
    )
    response = await function_app.http_functions["openai"](request)
    try:
        assert response.status_code == 200
        assert orjson.loads(response.body)["choices"][0]["message"]["content"] == "Simulated answer to: from functions"
        assert "server-timing" in response.headers
    finally:
        await hosting.current_gateway().close()


async def test_openai_function_streams_incrementally(functions_env: None, keys: Keys) -> None:
    request = make_request(
        "deployments/gpt-4o/chat/completions",
        {"messages": [{"role": "user", "content": "a b c"}], "stream": True},
        {"api-key": keys.primary, "x-sim-token-ms": "50"},
        f"api-version={API_VERSION}",
    )
    response = await function_app.http_functions["openai"](request)
    try:
        assert isinstance(response, StreamingResponse)
        chunks = [chunk async for chunk in response.body_iterator]
        assert len(chunks) > 3  # one per event, not one buffered body
        assert b"".join(chunks).rstrip().endswith(b"data: [DONE]")
    finally:
        await hosting.current_gateway().close()


async def test_openai_function_refuses_missing_key(functions_env: None) -> None:
    request = make_request("deployments/gpt-4o/chat/completions", {}, {}, f"api-version={API_VERSION}")
    response = await function_app.http_functions["openai"](request)
    try:
        assert response.status_code == 401
    finally:
        await hosting.current_gateway().close()


async def test_ops_backends_function_checks_the_admin_key(functions_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "ops-key-" + "x" * 16)
    try:
        refused = await function_app.http_functions["ops_backends"](make_request("", {}, {"x-admin-key": "wrong"}))
        assert refused.status_code == 401
        allowed = await function_app.http_functions["ops_backends"](make_request("", {}, {"x-admin-key": "ops-key-" + "x" * 16}))
        assert allowed.status_code == 200
        (sim,) = orjson.loads(allowed.body)["backends"]
        assert (sim["id"], sim["type"], sim["state"]) == ("sim", "backend", "closed")
    finally:
        await hosting.current_gateway().close()


async def test_health_function_answers() -> None:
    response = await function_app.http_functions["health"](make_request("", {}, {}))
    assert orjson.loads(response.body)["status"] == "ok"


async def test_a_gateway_that_cannot_be_built_answers_in_the_openai_shape(functions_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken setting fails every request; the worker would answer an escaped error with a bare 500."""
    monkeypatch.setenv("GATEWAY_KEY_PEPPER", "short")
    request = make_request("deployments/gpt-4o/chat/completions", {}, {}, f"api-version={API_VERSION}")
    response = await function_app.http_functions["openai"](request)
    assert response.status_code == 500
    assert orjson.loads(response.body)["error"]["code"] == "InternalServerError"
    assert b"GATEWAY_KEY_PEPPER" not in response.body  # the detail is for the log


async def test_ops_routes_answer_storage_outages_in_the_openai_shape(functions_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.dev import devstack

    dead = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={devstack.AZURITE_ACCOUNT_KEY};TableEndpoint=http://127.0.0.1:{devstack.free_port()}/devstoreaccount1;"
    monkeypatch.setenv("GATEWAY_STORAGE_CONNECTION", dead)
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "admin-" + "k" * 20)
    request = make_request("ignored", {}, {"x-admin-key": "admin-" + "k" * 20})
    try:
        response = await function_app.http_functions["ops_backends"](request)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert orjson.loads(response.body)["error"]["code"] == "StorageUnavailable"
    finally:
        await hosting.current_gateway().close()
