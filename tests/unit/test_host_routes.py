"""One route table, two hosts: the Functions bindings and the local host's routes are exactly gateway/hosts/routes.py."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from gateway.config.settings import Settings
from gateway.handling.gateway import Gateway
from gateway.hosts.local import create_local_app
from gateway.hosts.routes import OPENAI_METHODS, ROUTES, HttpRoute
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


def test_the_local_host_serves_the_table_then_404s() -> None:
    env = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 24}
    app = create_local_app(Gateway(Settings.from_env(env), MemoryTables()))
    routes = [route for route in app.routes if isinstance(route, Route)]
    served = [(route.path, route.methods) for route in routes[:-1]]
    # Starlette answers HEAD wherever GET is allowed.
    expected = [(route.starlette_path, set(route.methods) | ({"HEAD"} if "GET" in route.methods else set())) for route in ROUTES]
    assert served == expected
    assert (routes[-1].path, routes[-1].methods) == ("/{path:path}", set(OPENAI_METHODS) | {"HEAD"})


@pytest.mark.parametrize(
    ("template", "path"),
    [("openai/{*path}", "/openai/{path:path}"), ("openapi/{name}", "/openapi/{name}"), ("health/ready", "/health/ready")],
)
def test_templates_become_starlette_paths(template: str, path: str) -> None:
    assert HttpRoute("x", template, ("GET",), ROUTES[0].handler).starlette_path == path
