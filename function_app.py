"""Azure Functions entry point (Python v2 model with the HTTP streaming extension).

Only bindings live here; every request goes to the same `gateway` handler the local host serves. With the
streaming extension every HTTP function of the app takes a Starlette `Request` and returns a Starlette
`Response`, so responses stream chunk by chunk instead of being buffered.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from gateway import ops, policy_updates
from gateway.hosting import current_gateway, health_response

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
    return await ops.backends_response(current_gateway(), req)


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
