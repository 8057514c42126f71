"""Azure Functions entry point (Python v2 model with the HTTP streaming extension).

Only bindings live here. The HTTP functions are the routes of gateway/hosts/routes.py, the table the local host
serves too, each bound below as the decorators would bind a module-level function (the worker indexes
`app.get_functions()` and checks each function's parameters and annotations, not module names). With the
streaming extension every HTTP function of the app takes a Starlette `Request` and returns a Starlette
`Response`, so responses stream chunk by chunk instead of being buffered.
"""

import os

# As in gateway/__main__.py: one OpenBLAS thread for the semantic cache's small products, set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import azure.functions as func  # noqa: E402
from azure.functions.decorators.function_app import FunctionBuilder  # noqa: E402
from azurefunctions.extensions.http.fastapi import Request, Response  # noqa: E402

from gateway.hosts import lifecycle, log_redaction  # noqa: E402
from gateway.hosts.local import current_gateway, guarded  # noqa: E402
from gateway.hosts.routes import ROUTES, HttpRoute  # noqa: E402
from gateway.stores import policy_updates  # noqa: E402

# A new instance imports this module before its first request, so only what every request needs loads with it
# (and the gateway itself on first use): the operator pages load when their route is first hit. The import guard
# (tests/e2e/test_import_guard.py) and bench/coldstart.py keep it so.

# Before the worker starts the streaming extension's uvicorn server: no key in its access log, no SDK chatter,
# and a SIGTERM handler that uvicorn chains to (leases and metrics handed back on a stop).
log_redaction.install()
lifecycle.install()

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _http_function(route: HttpRoute) -> FunctionBuilder:
    # Annotations stay real classes (no `from __future__ import annotations` here): the worker resolves them.
    # `guarded`: an exception that escapes (a gateway that cannot be built, storage down) still answers in the
    # OpenAI error shape, not with the worker's bare 500.
    @guarded
    async def function(req: Request) -> Response:
        return await route.handler(current_gateway, req)

    return app.function_name(route.name)(app.route(route=route.template, methods=list(route.methods))(function))


#: Function name -> the bound HTTP function (calling it calls the handler, as the worker does).
http_functions = {route.name: _http_function(route) for route in ROUTES}


@app.function_name("policy_updates")
@app.queue_trigger(arg_name="message", queue_name="%" + policy_updates.QUEUE_SETTING + "%", connection="AzureWebJobsStorage")
async def policy_update_message(message: func.QueueMessage) -> None:
    await policy_updates.apply_message(current_gateway(), message.get_body())


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
