"""The process-wide gateway, and the local host that serves it without Azure Functions Core Tools.

Azure Functions has no start-up hook for HTTP functions, so the gateway is built on first use from the
environment; the local host builds the same object and closes it on shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.hosts import log_redaction, slow_clients
from gateway.ops import dashboard
from gateway.ops import openapi
from gateway.ops import admin
from gateway.handling.gateway import Gateway
from gateway.errors import ResourceNotFound
from gateway.stores.policy_updates import LocalQueueWorker
from gateway.config.settings import Settings

_current: Gateway | None = None
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def current_gateway() -> Gateway:
    global _current
    if _current is None:
        _current = Gateway(Settings.from_env())
    return _current


async def health_response() -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def create_local_app(gateway: Gateway) -> Starlette:
    """A Starlette app with the routes `function_app.py` declares, backed by `gateway`, plus `/ops/storage`:
    counts of this process's storage calls, which mean something for a long-lived process only."""

    async def openai(request: Request) -> Response:
        return await gateway.handle(request)

    async def health(request: Request) -> Response:
        return await health_response()

    async def ops_backends(request: Request) -> Response:
        return await admin.backends_response(gateway, request)

    async def ops_storage(request: Request) -> Response:
        return await admin.storage_response(gateway, request)

    async def ops_dashboard(request: Request) -> Response:
        return await dashboard.dashboard_response(gateway, request)

    async def openapi_document(request: Request) -> Response:
        return await openapi.document_response(gateway, request)

    async def not_found(request: Request) -> Response:
        return ResourceNotFound().to_response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        # What the Functions timer trigger does, for the local host.
        gateway.semantic_cache.start_cleanup(gateway.settings.semantic_cache.cleanup_seconds)
        worker = None
        if gateway.settings.local_queue_worker:
            worker = LocalQueueWorker(gateway, gateway.settings.storage_connection.reveal(), gateway.settings.policy_queue)
            worker.start()
        yield
        if worker is not None:
            await worker.close()
        await gateway.close()

    return Starlette(
        routes=[
            Route("/openai/{path:path}", openai, methods=_METHODS),
            Route("/health", health, methods=["GET"]),
            Route("/ops/backends", ops_backends, methods=["GET"]),
            Route("/ops/storage", ops_storage, methods=["GET"]),
            Route("/ops/dashboard", ops_dashboard, methods=["GET", "POST"]),
            Route("/openapi/{name}", openapi_document, methods=["GET"]),
            Route("/{path:path}", not_found, methods=_METHODS),
        ],
        lifespan=lifespan,
    )


def serve(host: str, port: int) -> None:
    import uvicorn

    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()

    gateway = current_gateway()
    timeouts = gateway.settings.client_timeouts
    uvicorn.run(
        create_local_app(gateway),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http=slow_clients.protocol(timeouts),
        timeout_keep_alive=max(1, round(timeouts.idle)),
        server_header=False,
        # A stop waits for open streams (up to the platform's own 230 s limit on a response), then gives leases back.
        timeout_graceful_shutdown=gateway.settings.shutdown_drain_seconds,
        # The client address comes from gateway/handling/forwarded.py, through GATEWAY_TRUSTED_PROXY_HOPS only:
        # uvicorn's own rewriting would believe any X-Forwarded-For sent from 127.0.0.1.
        proxy_headers=False,
    )
