"""The process-wide gateway, and the local host that serves it without Azure Functions Core Tools.

Azure Functions has no start-up hook for HTTP functions, so the gateway is built on first use from the
environment; the local host builds the same object and closes it on shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import ResourceNotFound, answer_for, error_response
from gateway.hosts import log_redaction
from gateway.hosts.routes import OPENAI_METHODS, ROUTES, HttpRoute

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway
    from gateway.stores.policy_updates import LocalQueueWorker

logger = logging.getLogger(__name__)

_current: Gateway | None = None


def current_gateway() -> Gateway:
    """The process's gateway, built on first use (its modules load then, not when a host imports this one)."""
    global _current
    if _current is None:
        from gateway.config.settings import Settings
        from gateway.handling.gateway import Gateway

        _current = Gateway(Settings.from_env())
    return _current


def built_gateway() -> Gateway | None:
    """The process-wide gateway if something built it: a shutdown has nothing to close otherwise."""
    return _current


def guarded(route: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A route that answers any exception in the OpenAI error shape (`answer_for`), as the Functions routes need:
    the worker would answer an escaped one with a bare 500 (a gateway that cannot be built, storage down)."""

    @functools.wraps(route)
    async def answering(req: Request) -> Response:
        try:
            return await route(req)
        except Exception as exc:
            return answer_for(exc, f"{req.method} {req.url.path}")

    return answering


#: What the local host answers at all: a request with another method gets 405 (the Functions host offers no more).
SERVED_METHODS = frozenset((*OPENAI_METHODS, "HEAD"))


class LocalApp:
    """The local host's ASGI app: the routes of gateway/hosts/routes.py (those `function_app.py` binds), the
    gateway's start and stop around them, and every refusal in the OpenAI error shape.

    Plain ASGI rather than a Starlette app: seven routes need no router, and Starlette's router and its two
    middlewares took 8.9 µs per request where this takes 3.5 µs (in process, same handler). HEAD is served
    wherever GET is; a path no route serves is a 404, a method the host never serves a 405.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.routes = tuple((route.pattern, frozenset(route.methods) | _head_with(route.methods), route) for route in ROUTES)

    def match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for pattern, methods, route in self.routes:
            if method in methods and (found := pattern.fullmatch(path)) is not None:
                return route, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            response = await self._answer(scope, Request(scope, receive, send), method, path)
        except Exception as exc:
            response = answer_for(exc, f"{method} {path}")
        await response(scope, receive, send)  # a stream that breaks off raises to uvicorn, which aborts it

    async def _answer(self, scope: Scope, request: Request, method: str, path: str) -> Response:
        matched = self.match(method, path)
        if matched is None:
            if method in SERVED_METHODS:
                return ResourceNotFound().to_response()
            return error_response(405, "405", "Method Not Allowed", {"Allow": ", ".join(sorted(SERVED_METHODS))})
        route, scope["path_params"] = matched
        return await route.handler(self._gateway, request)

    def _gateway(self) -> Gateway:
        return self.gateway

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            worker = await self._start()
        except Exception:
            logger.exception("The gateway could not start.")
            await send({"type": "lifespan.startup.failed", "message": "The gateway could not start (see the log)."})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if worker is not None:
            await worker.close()
        await self.gateway.close()
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self) -> LocalQueueWorker | None:
        gateway = self.gateway
        await gateway.start()
        # What the Functions timer trigger does, for the local host; the cache (and numpy) load one interval
        # after start-up, not with it, so the first pass comes two intervals after start-up.
        interval = gateway.settings.semantic_cache.cleanup_seconds
        asyncio.get_running_loop().call_later(interval, lambda: gateway.semantic_cache.start_cleanup(interval))
        if not gateway.settings.local_queue_worker:
            return None
        from gateway.stores.policy_updates import LocalQueueWorker

        settings = gateway.settings
        worker = LocalQueueWorker(
            gateway, settings.storage_connection.reveal(), settings.policy_queue, retry_seconds=settings.policy_queue_retry_seconds
        )
        worker.start()
        return worker


def _head_with(methods: tuple[str, ...]) -> frozenset[str]:
    return frozenset({"HEAD"}) if "GET" in methods else frozenset()


def create_local_app(gateway: Gateway) -> LocalApp:
    """The local host's app, backed by `gateway`."""
    return LocalApp(gateway)


def serve(host: str, port: int, workers: int = 1) -> None:
    """Serve on `host:port` with uvicorn; with `workers` > 1, that many processes accept on the one port.

    Each worker process is a gateway instance of its own (own leases, metrics rows and health id; limits are
    shared through storage as across Function App instances), for hosts that are not Functions: a container or
    VM behind a load balancer. uvicorn starts workers by importing `worker_app`, and its supervisor replaces a
    worker that dies.
    """
    import uvicorn

    from gateway.config.settings import Settings
    from gateway.hosts import slow_clients

    _configure_logging()
    settings = Settings.from_env()
    timeouts = settings.client_timeouts
    several = workers > 1
    uvicorn.run(
        f"{__name__}:worker_app" if several else create_local_app(current_gateway()),
        factory=several,
        workers=workers,
        http=slow_clients.WORKER_PROTOCOL if several else slow_clients.protocol(timeouts),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="auto",
        timeout_keep_alive=max(1, round(timeouts.idle)),
        server_header=False,
        # A stop waits for open streams (up to the platform's own 230 s limit on a response), then gives leases back.
        timeout_graceful_shutdown=round(settings.shutdown_drain_seconds),
        # The client address comes from gateway/handling/forwarded.py, through GATEWAY_TRUSTED_PROXY_HOPS only:
        # uvicorn's own rewriting would believe any X-Forwarded-For sent from 127.0.0.1.
        proxy_headers=False,
    )


def worker_app() -> LocalApp:
    """The app of one `serve --workers N` process, called by uvicorn in that process: a gateway instance whose id
    (`context.Deployment.Gateway.Id`, health rows) carries the process id, so instances can be told apart."""
    from gateway.config.settings import Settings
    from gateway.handling.gateway import Gateway

    global _current
    _configure_logging()
    settings = Settings.from_env()
    _current = Gateway(dataclasses.replace(settings, gateway_id=f"{settings.gateway_id[:24]}-{os.getpid()}"))
    return create_local_app(_current)


def _configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()
