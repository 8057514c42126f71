"""One route table, two hosts: the Functions bindings and the local host's routes are exactly gateway/hosts/routes.py."""

from __future__ import annotations

import httpx
import pytest

from gateway.config.settings import Settings
from gateway.handling.gateway import Gateway
from gateway.hosts.local import LocalApp, create_local_app
from gateway.hosts.routes import ROUTES, HttpRoute
from gateway.stores.memory import MemoryTables
from tests.function_metadata import function_bindings


def test_route_names_and_templates_are_unique() -> None:
    assert len({route.name for route in ROUTES}) == len({route.template for route in ROUTES}) == len(ROUTES)


def test_the_functions_bindings_are_the_table() -> None:
    http = {}
    for name, function in function_bindings().items():
        trigger, *outputs = function["bindings"]
        if trigger["type"] != "httpTrigger":
            continue
        assert outputs == [{"direction": "OUT", "type": "http", "name": "$return"}]
        http[name] = (trigger["route"], tuple(trigger["methods"]), trigger["authLevel"])
    # ANONYMOUS: the gateway checks subscription and admin keys itself.
    assert http == {route.name: (route.template, route.methods, "ANONYMOUS") for route in ROUTES}


def local_app() -> LocalApp:
    env = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 24}
    return create_local_app(Gateway(Settings.from_env(env), MemoryTables()))


def test_the_local_host_routes_by_the_table() -> None:
    app = local_app()
    assert [route for _, _, route in app.routes] == list(ROUTES)
    openai, health = ROUTES[0], ROUTES[1]
    assert app.match("POST", "/openai/deployments/gpt-4o/chat/completions") == (openai, {"path": "deployments/gpt-4o/chat/completions"})
    assert app.match("HEAD", "/health") == (health, {})  # HEAD wherever GET is served
    assert app.match("POST", "/health") is None
    assert app.match("GET", "/healthy") is None


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("openai/{*path}", "/openai/v1/responses/resp_1", {"path": "v1/responses/resp_1"}),
        ("openai/{*path}", "/openai/", {"path": ""}),
        ("openapi/{name}", "/openapi/v1.json", {"name": "v1.json"}),
        ("openapi/{name}", "/openapi/a/b", None),  # one segment only
        ("health/ready", "/health/ready", {}),
        ("health/ready", "/health.ready", None),  # literal text is literal
    ],
)
def test_templates_match_paths_as_the_functions_host_does(template: str, path: str, params: dict[str, str] | None) -> None:
    found = HttpRoute("x", template, ("GET",), ROUTES[0].handler).pattern.fullmatch(path)
    assert (found.groupdict() if found else None) == params


@pytest.mark.parametrize(("method", "path", "status"), [("POST", "/health", 404), ("GET", "/nothing/here", 404), ("TRACE", "/health", 405)])
async def test_requests_no_route_serves_are_refused_in_the_openai_shape(method: str, path: str, status: int) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=local_app()), base_url="http://gateway") as client:
        answer = await client.request(method, path)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert "message" in answer.json()["error"]
    if status == 405:
        assert "TRACE" not in answer.headers["allow"] and "POST" in answer.headers["allow"]
