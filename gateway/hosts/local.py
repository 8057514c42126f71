"""The process-wide gateway, and the local host that serves it without Azure Functions Core Tools.

Azure Functions has no start-up hook for HTTP functions, so the gateway is built on first use from the
environment; the local host builds the same object and closes it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import GatewayError, ResourceNotFound, answer_for, error_response
from gateway.hosts import log_redaction
from gateway.hosts.routes import OPENAI_METHODS, ROUTES, Handler

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

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


async def _answer_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (an unknown method, 405) in the OpenAI shape instead of plain text."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return ResourceNotFound().to_response()
    return error_response(exc.status_code, str(exc.status_code), exc.detail, exc.headers)


async def _answer_error(request: Request, exc: Exception) -> Response:
    return answer_for(exc, f"{request.method} {request.url.path}")


async def _answer_unexpected(request: Request, exc: Exception) -> Response:
    """Starlette's last resort, in the OpenAI shape; it raises the exception on, so uvicorn logs it."""
    return GatewayError().to_response()


def create_local_app(gateway: Gateway) -> Starlette:
    """A Starlette app with the routes of gateway/hosts/routes.py (those `function_app.py` binds), backed by `gateway`."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return await handler(lambda: gateway, request)

        return serve

    async def not_found(request: Request) -> Response:
        return ResourceNotFound().to_response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        # What the Functions timer trigger does, for the local host; the cache (and numpy) load one interval
        # after start-up, not with it, so the first pass comes two intervals after start-up.
        interval = gateway.settings.semantic_cache.cleanup_seconds
        asyncio.get_running_loop().call_later(interval, lambda: gateway.semantic_cache.start_cleanup(interval))
        worker = None
        if gateway.settings.local_queue_worker:
            from gateway.stores.policy_updates import LocalQueueWorker

            settings = gateway.settings
            worker = LocalQueueWorker(
                gateway, settings.storage_connection.reveal(), settings.policy_queue, retry_seconds=settings.policy_queue_retry_seconds
            )
            worker.start()
        yield
        if worker is not None:
            await worker.close()
        await gateway.close()

    return Starlette(
        routes=[
            *(Route(route.starlette_path, endpoint(route.handler), methods=list(route.methods)) for route in ROUTES),
            Route("/{path:path}", not_found, methods=list(OPENAI_METHODS)),
        ],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _answer_http_error,
            GatewayError: _answer_error,
            ClientDisconnect: _answer_error,
            Exception: _answer_unexpected,
        },
    )


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


def worker_app() -> Starlette:
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
