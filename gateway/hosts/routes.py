"""The gateway's HTTP routes, declared once: `function_app.py` binds each as an Azure Functions HTTP function and
the local host (gateway/hosts/local.py) routes with the same table.

Templates use the Functions host's route syntax (`{name}` is one path segment, `{*name}` the rest of the path,
no leading slash, `routePrefix` "" in host.json), because under Functions the host routes, not Python;
`HttpRoute.pattern` is the same template as a regular expression over a request path, for the local host. A handler gets a way to reach the process's
gateway rather than the gateway itself, so that liveness answers without building one. The operator pages'
modules load when their route is first hit, not with the hosts (tests/e2e/test_import_guard.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from gateway.hosts import health

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

GatewayOf = Callable[[], "Gateway"]
Handler = Callable[[GatewayOf, Request], Awaitable[Response]]

#: Every method the Azure OpenAI surface uses (the Functions host offers no TRACE or CONNECT).
OPENAI_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PARAMETER = re.compile(r"\{(\*?)(\w+)\}")


@dataclass(frozen=True)
class HttpRoute:
    #: The function's name under Functions (in the platform's logs and metrics); unique.
    name: str
    template: str
    methods: tuple[str, ...]
    handler: Handler

    @property
    def pattern(self) -> re.Pattern[str]:
        """The template over a request path (leading slash included); parameters become named groups."""
        parts, last = ["/"], 0
        for parameter in _PARAMETER.finditer(self.template):
            rest_of_path, name = parameter.groups()
            parts += [re.escape(self.template[last : parameter.start()]), f"(?P<{name}>{'.*' if rest_of_path else '[^/]+'})"]
            last = parameter.end()
        return re.compile("".join([*parts, re.escape(self.template[last:])]))


async def _openai(gateway: GatewayOf, request: Request) -> Response:
    return await gateway().handle(request)


async def _liveness(gateway: GatewayOf, request: Request) -> Response:
    return health.liveness()


async def _readiness(gateway: GatewayOf, request: Request) -> Response:
    return await health.readiness(gateway())


async def _ops_backends(gateway: GatewayOf, request: Request) -> Response:
    from gateway.ops import admin

    return await admin.backends_response(gateway(), request)


async def _ops_storage(gateway: GatewayOf, request: Request) -> Response:
    from gateway.ops import admin

    return await admin.storage_response(gateway(), request)


async def _ops_dashboard(gateway: GatewayOf, request: Request) -> Response:
    from gateway.ops import dashboard

    return await dashboard.dashboard_response(gateway(), request)


async def _openapi_document(gateway: GatewayOf, request: Request) -> Response:
    from gateway.ops import openapi

    return await openapi.document_response(gateway(), request)


ROUTES: tuple[HttpRoute, ...] = (
    HttpRoute("openai", "openai/{*path}", OPENAI_METHODS, _openai),
    HttpRoute("health", "health", ("GET",), _liveness),
    HttpRoute("health_ready", "health/ready", ("GET",), _readiness),
    HttpRoute("ops_backends", "ops/backends", ("GET",), _ops_backends),  # x-admin-key checked inside
    HttpRoute("ops_storage", "ops/storage", ("GET",), _ops_storage),  # x-admin-key checked inside
    HttpRoute("ops_dashboard", "ops/dashboard", ("GET", "POST"), _ops_dashboard),
    HttpRoute("openapi", "openapi/{name}", ("GET",), _openapi_document),  # public
)
