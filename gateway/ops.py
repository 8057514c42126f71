"""The gateway's operator routes (`/ops/...`; Azure Functions reserves `/admin`), shared by both hosts.

They answer only when `GATEWAY_ADMIN_KEY` is set, to requests that send it in `x-admin-key`: without the
setting the routes do not exist (404), so a gateway never exposes them by accident.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import ResourceNotFound, error_response
from gateway.health_sync import backend_status

if TYPE_CHECKING:
    from gateway.app import Gateway

ADMIN_KEY_HEADER = "x-admin-key"


async def backends_response(gateway: Gateway, request: Request) -> Response:
    """`GET /ops/backends`: each backend's breaker state, wait, recent failures and latency; each pool's state."""
    refused = _refuse(gateway, request)
    if refused is not None:
        return refused
    return JSONResponse({"backends": await backend_status(gateway.store, gateway.settings.backends)})


def _refuse(gateway: Gateway, request: Request) -> Response | None:
    expected = gateway.settings.admin_key
    if expected is None:
        return ResourceNotFound().to_response()
    supplied = request.headers.get(ADMIN_KEY_HEADER, "")
    if not hmac.compare_digest(supplied.encode(), expected.reveal().encode()):
        return error_response(401, "401", f"Access denied due to a missing or invalid admin key (header {ADMIN_KEY_HEADER}).")
    return None
