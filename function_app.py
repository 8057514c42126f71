"""Azure Functions entry point (Python v2 model with the HTTP streaming extension).

Only bindings live here; every request goes to the same `gateway` handler the local host serves. With the
streaming extension every HTTP function of the app takes a Starlette `Request` and returns a Starlette
`Response`, so responses stream chunk by chunk instead of being buffered.
"""

import os

# As in gateway/__main__.py: one OpenBLAS thread for the semantic cache's small products, set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import azure.functions as func  # noqa: E402
from azurefunctions.extensions.http.fastapi import Request, Response  # noqa: E402

from gateway.stores import policy_updates  # noqa: E402
from gateway.hosts import log_redaction  # noqa: E402
from gateway.hosts.local import current_gateway, health_response  # noqa: E402

# A new instance imports this module before its first request, so only what every request needs loads with it
# (and the gateway itself on first use): the operator pages load when their route is first hit. The import guard
# (tests/test_import_guard.py) and bench/coldstart.py keep it so.

# Before the worker starts the streaming extension's uvicorn server: no key in its access log, no SDK chatter.
log_redaction.install()

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name("openai")
@app.route(route="openai/{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def openai(req: Request) -> Response:
    return await current_gateway().handle(req)


@app.function_name("health")
@app.route(route="health", methods=["GET"])
async def health(req: Request) -> Response:
    return await health_response()


@app.function_name("ops_backends")
@app.route(route="ops/backends", methods=["GET"])
async def ops_backends(req: Request) -> Response:
    from gateway.ops import admin

    return await admin.backends_response(current_gateway(), req)


@app.function_name("ops_dashboard")
@app.route(route="ops/dashboard", methods=["GET", "POST"])
async def ops_dashboard(req: Request) -> Response:
    from gateway.ops import dashboard

    return await dashboard.dashboard_response(current_gateway(), req)


@app.function_name("openapi")
@app.route(route="openapi/{name}", methods=["GET"])
async def openapi_document(req: Request) -> Response:
    from gateway.ops import openapi

    return await openapi.document_response(current_gateway(), req)


@app.function_name("policy_updates")
@app.queue_trigger(arg_name="message", queue_name="%" + policy_updates.QUEUE_SETTING + "%", connection="AzureWebJobsStorage")
async def policy_update_message(message: func.QueueMessage) -> None:
    await policy_updates.apply_message(current_gateway(), message.get_body().decode("utf-8"))


@app.function_name("policy_blob_created")
@app.blob_trigger(
    arg_name="blob",
    path=policy_updates.BLOB_CONTAINER + "/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource.EVENT_GRID,
)
async def policy_blob_created(blob: func.InputStream) -> None:
    await policy_updates.apply_blob(current_gateway(), blob.name or "", blob.read())


@app.function_name("semantic_cache_cleanup")
@app.timer_trigger(arg_name="timer", schedule="0 */10 * * * *")
async def semantic_cache_cleanup(timer: func.TimerRequest) -> None:
    """Every 10 minutes, on one instance: delete expired semantic-cache entries from the table."""
    await current_gateway().clean_semantic_cache()
