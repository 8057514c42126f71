"""The gateway's operator routes (`/ops/...`; Azure Functions reserves `/admin`), shared by both hosts.

They answer only when `GATEWAY_ADMIN_KEY` is set, to requests that send it in `x-admin-key` (or, for a
browser, in the `key` query parameter, or through the dashboard's login form, which sets a cookie holding an
HMAC of the key rather than the key): without the setting the routes do not exist (404), so a gateway never
exposes them by accident.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import ResourceNotFound, error_response
from gateway.backends.health_sync import backend_status

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

ADMIN_KEY_HEADER = "x-admin-key"
#: A browser cannot send a header; the query parameter lands in history and logs, so the login form is better.
ADMIN_KEY_QUERY = "key"
ADMIN_COOKIE = "gateway-admin"


async def backends_response(gateway: Gateway, request: Request) -> Response:
    """`GET /ops/backends`: each backend's breaker state, wait, recent failures and latency; each pool's state."""
    refused = refuse(gateway, request)
    if refused is not None:
        return refused
    return JSONResponse({"backends": await backend_status(gateway.store, gateway.settings.backends)})


def refuse(gateway: Gateway, request: Request) -> Response | None:
    """None when the request may use the `/ops` routes; otherwise 404 (no admin key configured) or 401."""
    expected = gateway.settings.admin_key
    if expected is None:
        return ResourceNotFound().to_response()
    supplied = request.headers.get(ADMIN_KEY_HEADER) or request.query_params.get(ADMIN_KEY_QUERY) or ""
    session = request.cookies.get(ADMIN_COOKIE, "")
    if not (is_admin_key(gateway, supplied) or _same(session, admin_session(gateway))):
        return error_response(
            401, "401", f"Access denied due to a missing or invalid admin key (header {ADMIN_KEY_HEADER}, the GATEWAY_ADMIN_KEY setting)."
        )
    return None


def is_admin_key(gateway: Gateway, supplied: str) -> bool:
    """Whether `supplied` is `GATEWAY_ADMIN_KEY` (constant-time; False when the setting is absent)."""
    expected = gateway.settings.admin_key
    return expected is not None and _same(supplied, expected.reveal())


def admin_session(gateway: Gateway) -> str:
    """The `gateway-admin` cookie's value: derived from the admin key, so the cookie never holds the key itself."""
    key = gateway.settings.admin_key
    assert key is not None
    return hmac.new(key.reveal().encode(), b"gateway-admin-session", hashlib.sha256).hexdigest()


def _same(supplied: str, expected: str) -> bool:
    return bool(supplied) and hmac.compare_digest(supplied.encode(), expected.encode())
