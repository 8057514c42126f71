"""The OpenAPI documents the gateway serves: valid, pointing at the gateway, keyed by subscription, all routable."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest
from openapi_spec_validator import validate
from starlette.requests import Request

from gateway.handling import operations as routes
from gateway.ops import openapi
from tests.conftest import GatewayProcess, Keys

VERSIONS = ["2024-02-01", "2024-10-21"]


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_versions_are_the_documents_under_specs() -> None:
    assert list(openapi.available_versions()) == VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
def test_served_document_is_valid_and_points_at_the_gateway(gateway: GatewayProcess, version: str) -> None:
    response = httpx.get(f"{gateway.url}/openapi/{version}.json")  # public: no key
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    validate(document)
    assert document["info"]["version"] == version
    assert document["servers"] == [{"url": f"{gateway.url}/openai", "description": "This gateway (Azure OpenAI API)"}]
    schemes = document["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {
        ("header", "api-key"),
        ("header", "Ocp-Apim-Subscription-Key"),
        ("query", "subscription-key"),
    }
    assert document["security"] == [{name: []} for name in schemes]
    assert "bearer" not in schemes  # the backend's Entra ID scheme is not the gateway's


@pytest.mark.parametrize("version", VERSIONS)
def test_every_operation_is_one_the_gateway_routes(version: str) -> None:
    original = orjson.loads((openapi.SPEC_DIR / f"azure-openai-inference-{version}.json").read_bytes())
    served = openapi.document(version, "https://gw.example.com")
    assert len(operations(served)) == len(operations(original))  # none of these versions' operations is dropped
    for path, method, op in operations(served):
        match = routes.match(method.upper(), re.sub(r"\{[^}]+\}", "some-id", path).lstrip("/"))
        assert match is not None and match.operation.id == op["operationId"], (method, path)


def test_trusted_forwarded_host_and_the_public_url_setting_decide_the_server() -> None:
    def request(headers: dict[str, str]) -> Request:
        raw = [(k.encode(), v.encode()) for k, v in {"host": "10.0.0.4:8080", **headers}.items()]
        return Request(
            {
                "type": "http",
                "method": "GET",
                "scheme": "http",
                "path": "/openapi/2024-10-21.json",
                "query_string": b"",
                "headers": raw,
                "server": ("10.0.0.4", 8080),
            }
        )

    assert openapi.public_base_url(request({}), None, 1) == "http://10.0.0.4:8080"
    forwarded = request({"x-forwarded-host": "client-written.example, gw.example.com", "x-forwarded-proto": "https"})
    assert openapi.public_base_url(forwarded, None, 0) == "http://10.0.0.4:8080"  # no trusted proxy: headers ignored
    assert openapi.public_base_url(forwarded, None, 1) == "https://gw.example.com"
    assert openapi.public_base_url(forwarded, "https://api.contoso.com/ai", 1) == "https://api.contoso.com/ai"


def test_unknown_version_names_the_documents_there_are(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/openapi/2023-05-15.json")
    assert response.status_code == 404
    assert "/openapi/2024-02-01.json, /openapi/2024-10-21.json" in response.json()["error"]["message"]


def test_a_client_following_the_document_reaches_the_deployment(gateway: GatewayProcess, keys: Keys) -> None:
    # No trusted proxy in front of this gateway: a forwarded host cannot poison the document a CDN would cache.
    poisoned = httpx.get(f"{gateway.url}/openapi/2024-10-21.json", headers={"x-forwarded-host": "attacker.example"}).json()
    assert poisoned["servers"][0]["url"] == f"{gateway.url}/openai"
    document = httpx.get(f"{gateway.url}/openapi/2024-10-21.json").json()
    (path,) = [p for p, _, op in operations(document) if op["operationId"] == "ChatCompletions_Create"]
    url = document["servers"][0]["url"] + path.replace("{deployment-id}", "gpt-4o")
    for scheme in document["components"]["securitySchemes"].values():
        where = {"headers": {scheme["name"]: keys.primary}} if scheme["in"] == "header" else {"params": {scheme["name"]: keys.primary}}
        params = {"api-version": "2024-10-21", **where.get("params", {})}
        answer = httpx.post(url, params=params, headers=where.get("headers", {}), json={"messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, (scheme, answer.text)


async def test_the_functions_handler_serves_it_too(functions_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import function_app
    from gateway.hosts import local as hosting

    monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")  # one trusted hop: the Functions host

    headers = [(b"host", b"my-gateway.azurewebsites.net"), (b"x-forwarded-proto", b"https")]
    request = Request(
        {"type": "http", "method": "GET", "scheme": "http", "path": "/openapi/2024-02-01.json", "query_string": b"", "headers": headers}
    )
    try:
        response = await function_app.http_functions["openapi"](request)
        assert response.status_code == 200
        assert orjson.loads(response.body)["servers"][0]["url"] == "https://my-gateway.azurewebsites.net/openai"
    finally:
        await hosting.current_gateway().close()
