"""The policy context's life around the request: what goes in beyond the request (`context.Api`, `context.User`,
the host and port the request was sent to), and what happens when the request is over (the complete answer to
the listeners that want it, the statements' callbacks released).

`context.Api` is APIM's API: its id, name, path below the gateway (`openai`, `openai/v1`), revision and the
service URL (the backend that serves requests without a routing policy). One object per API is built when the
gateway starts and shared by every request: nothing in it changes.

`context.User` is the owner of the calling subscription (gateway/stores/owners.py), built per request (its
`Groups` is a list a block could change); null when the subscription has no owner, as in APIM for
subscriptions without a user.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from urllib.parse import urlsplit

from gateway.backends.pools import Pool
from gateway.backends.registry import BackendRegistry
from gateway.handling.operations import V1_API, VERSIONED_API
from gateway.stores.subscriptions import Subscription
from policies import context as ctx

#: API id -> (display name, path below the gateway's host), as APIM's Azure OpenAI import names them.
_APIS = {VERSIONED_API: ("Azure OpenAI", "openai"), V1_API: ("Azure OpenAI v1", "openai/v1")}
REVISION = "1"

logger = logging.getLogger(__name__)


def api_contexts(backends: BackendRegistry) -> dict[str, ctx.Api]:
    """`context.Api` for each API, with the default backend's URL (plus the API's path) as `ServiceUrl`."""
    target = backends.default
    backend = target.members[0].backend if isinstance(target, Pool) and target.members else target
    base = getattr(backend, "base_url", None)
    return {api: ctx.Api(api, name, path, REVISION, "", _url(f"{base}/{path}") if base else None) for api, (name, path) in _APIS.items()}


def _url(text: str) -> ctx.Url:
    parts = urlsplit(text)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return ctx.Url(parts.scheme, parts.hostname or "", port, parts.path, ctx.QueryParameters([]))


def user_of(subscription: Subscription | None) -> ctx.User | None:
    """`context.User` for a request with `subscription`: its owner, or None."""
    owner = subscription.owner if subscription is not None else None
    if owner is None:
        return None
    try:
        registered = datetime.fromisoformat(owner.registered) if owner.registered else None
    except ValueError:  # a row edited by hand: the date is unknown, the request goes on
        registered = None
    groups = [ctx.Group(group) for group in owner.groups]
    return ctx.User(owner.id, owner.email, owner.first_name, owner.last_name, owner.note, registered, groups)


def authority(host_header: str | None, server: tuple[str, int | None] | None, scheme: str) -> tuple[str, int]:
    """The host name and port the request was sent to: its Host header, else the server's address (as Starlette's
    `request.url` reads them, without building the whole URL)."""
    if host_header:
        # A gateway sees few distinct Host headers: parsed once each (a name longer than DNS allows is not kept).
        return _split_host(host_header, scheme) if len(host_header) <= 255 else _split_host.__wrapped__(host_header, scheme)
    host, port = server if server is not None else ("", None)
    return host, port or _default_port(scheme)


@functools.lru_cache(maxsize=256)
def _split_host(host_header: str, scheme: str) -> tuple[str, int]:
    parts = urlsplit(f"{scheme}://{host_header}")
    try:
        port = parts.port
    except ValueError:  # not a port number
        port = None
    return parts.hostname or "", port or _default_port(scheme)


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def release(context: ctx.Context) -> None:
    """The request is over: drop its statements' callbacks, which close over the context.

    Each such callback makes a reference cycle (context → list → closure → context); broken here, a finished
    request's objects are freed at once by reference counting instead of piling up for the cyclic garbage
    collector, whose full passes stall every request in flight (bench/overhead.py, c=20).
    """
    context.after_backend.clear()
    context.usage_listeners.clear()
    context.body_listeners.clear()


async def tell_body_listeners(context: ctx.Context, status: int, body: bytes) -> None:
    for listener in context.body_listeners:
        try:
            await listener(status, body)
        except Exception:
            logger.exception("A response body listener failed; the response itself was not affected.")
