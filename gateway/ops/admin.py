"""The gateway's operator routes (`/ops/...`; Azure Functions reserves `/admin`), shared by both hosts.

They answer only when `GATEWAY_ADMIN_KEY` is set, to requests that send it in `x-admin-key` (or, for a
browser, in the `key` query parameter), or that carry a dashboard session (gateway/ops/sessions.py): without the
setting the routes do not exist (404), so a gateway never exposes them by accident. Wrong keys are throttled per
client address (gateway/ops/throttle.py).
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.backends.health_sync import backend_status
from gateway.errors import ResourceNotFound, StorageError, error_response
from gateway.handling import forwarded
from gateway.ops.sessions import DENYLIST_TABLE, Denylist, Session, SessionTokens
from gateway.ops.throttle import FailureThrottle

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

ADMIN_KEY_HEADER = "x-admin-key"
#: A browser cannot send a header; the query parameter lands in history and logs, so the login form is better.
ADMIN_KEY_QUERY = "key"
ADMIN_COOKIE = "gateway-admin"
#: Wrong admin keys, per client address, for this process.
GUESSES = FailureThrottle()


async def backends_response(gateway: Gateway, request: Request) -> Response:
    """`GET /ops/backends`: each backend's breaker state, wait, recent failures and latency; each pool's state."""
    refused = await refuse(gateway, request)
    if refused is not None:
        return refused
    return JSONResponse({"backends": await backend_status(gateway.store, gateway.settings.backends)})


async def storage_response(gateway: Gateway, request: Request) -> Response:
    """`GET /ops/storage`: this process's storage operations and lost races per table since it started, for
    capacity planning against Table Storage's targets (docs/scale.md; bench/scale.py reads it)."""
    refused = await refuse(gateway, request)
    if refused is not None:
        return refused
    return JSONResponse(gateway.store.stats.as_json())


async def refuse(gateway: Gateway, request: Request) -> Response | None:
    """None when the request may use the `/ops` routes; otherwise 404 (no admin key configured), 401 or 429."""
    if gateway.settings.admin_key is None:
        return ResourceNotFound().to_response()
    if await session(gateway, request) is not None:
        return None
    supplied = request.headers.get(ADMIN_KEY_HEADER) or request.query_params.get(ADMIN_KEY_QUERY)
    if supplied is not None:
        return check_key(gateway, request, supplied)
    return _denied()


def check_key(gateway: Gateway, request: Request, supplied: str) -> Response | None:
    """None when `supplied` is the admin key; 429 while this address is throttled; 401 (counted) when it is wrong."""
    address = client_address(gateway, request)
    wait = GUESSES.retry_after(address)
    if wait is not None:
        message = f"Too many wrong admin keys from this address. Try again in {wait} seconds."
        return error_response(429, "429", message, {"Retry-After": str(wait)})
    key = gateway.settings.admin_key
    if key is not None and supplied and hmac.compare_digest(supplied.encode(), key.reveal().encode()):
        return None
    GUESSES.failed(address)
    return _denied()


async def session(gateway: Gateway, request: Request) -> Session | None:
    """The request's valid, unrevoked dashboard session, if it has one."""
    token = request.cookies.get(ADMIN_COOKIE)
    tokens = session_tokens(gateway)
    found = tokens.check(token, time.time()) if token and tokens is not None else None
    if found is None:
        return None
    try:
        revoked = await denylist(gateway).revoked(found)
    except StorageError:  # the denylist cannot be read: a session might be revoked, so none counts (fail closed)
        return None
    return None if revoked else found


def session_tokens(gateway: Gateway) -> SessionTokens | None:
    key = gateway.settings.admin_key
    return SessionTokens(key.reveal(), gateway.settings.key_pepper.reveal()) if key is not None else None


def denylist(gateway: Gateway) -> Denylist:
    """The revoked sessions, in the gateway's storage account (the table is created on first use)."""
    return Denylist(gateway.store.table(DENYLIST_TABLE))


def client_address(gateway: Gateway, request: Request) -> str:
    peer = request.client.host if request.client else None
    return forwarded.client_address(request.headers, peer, gateway.settings.trusted_proxy_hops)


def public_origin(gateway: Gateway, request: Request) -> tuple[str, str]:
    """The scheme and host clients use for this gateway: `GATEWAY_PUBLIC_URL`, else the request through trusted proxies."""
    configured = gateway.settings.public_url
    if configured:
        parts = urlsplit(configured)
        return parts.scheme, parts.netloc
    return forwarded.request_origin(request, gateway.settings.trusted_proxy_hops)


def _denied() -> Response:
    return error_response(
        401, "401", f"Access denied due to a missing or invalid admin key (header {ADMIN_KEY_HEADER}, the GATEWAY_ADMIN_KEY setting)."
    )
