"""The process-wide gateway, and the local host that serves it without Azure Functions Core Tools.

Azure Functions has no start-up hook for HTTP functions, so the gateway is built on first use from the
environment; the local host builds the same object and closes it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from gateway import __version__
from gateway.errors import ResourceNotFound
from gateway.hosts import log_redaction

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway

_current: Gateway | None = None
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def current_gateway() -> Gateway:
    """The process's gateway, built on first use (its modules load then, not when a host imports this one)."""
    global _current
    if _current is None:
        from gateway.config.settings import Settings
        from gateway.handling.gateway import Gateway

        _current = Gateway(Settings.from_env())
    return _current


async def health_response() -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def create_local_app(gateway: Gateway) -> Router:
    """An ASGI app with the routes `function_app.py` declares, backed by `gateway`: a bare Starlette router
    (the gateway answers every error itself, so Starlette's error middleware would only add work per request)."""

    async def openai(request: Request) -> Response:
        return await gateway.handle(request)

    async def health(request: Request) -> Response:
        return await health_response()

    async def ops_backends(request: Request) -> Response:
        from gateway.ops import admin

        return await admin.backends_response(gateway, request)

    async def ops_dashboard(request: Request) -> Response:
        from gateway.ops import dashboard

        return await dashboard.dashboard_response(gateway, request)

    async def openapi_document(request: Request) -> Response:
        from gateway.ops import openapi

        return await openapi.document_response(gateway, request)

    async def not_found(request: Request) -> Response:
        return ResourceNotFound().to_response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[None]:
        await gateway.start()
        # What the Functions timer trigger does, for the local host; the cache (and numpy) load one interval
        # after start-up, not with it, so the first pass comes two intervals after start-up.
        interval = gateway.settings.semantic_cache.cleanup_seconds
        asyncio.get_running_loop().call_later(interval, lambda: gateway.semantic_cache.start_cleanup(interval))
        worker = None
        if gateway.settings.local_queue_worker:
            from gateway.stores.policy_updates import LocalQueueWorker

            worker = LocalQueueWorker(gateway, gateway.settings.storage_connection.reveal(), gateway.settings.policy_queue)
            worker.start()
        yield
        if worker is not None:
            await worker.close()
        await gateway.close()

    return Router(
        routes=[
            Route("/openai/{path:path}", openai, methods=_METHODS),
            Route("/health", health, methods=["GET"]),
            Route("/ops/backends", ops_backends, methods=["GET"]),
            Route("/ops/dashboard", ops_dashboard, methods=["GET", "POST"]),
            Route("/openapi/{name}", openapi_document, methods=["GET"]),
            Route("/{path:path}", not_found, methods=_METHODS),
        ],
        lifespan=lifespan,
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


def worker_app() -> Router:
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
