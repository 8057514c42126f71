"""Stand-ins for the Azure Functions host and Python worker, so tests run `function_app.py` over the HTTP streaming
extension's own server and handshake, as the platform does (Core Tools cannot be installed offline).

The **worker** (`python -m tests.functions_host worker --control-port N`) does what azure-functions-python-worker
does with an app that imports the extension (`azure_functions_worker/http_v2.py`, `functions.py`, `loader.py`):

* in its event loop, imports `function_app` and indexes the one top-level `FunctionApp`, checking each function's
  parameters against its bindings and its HTTP annotations with the extension's `RequestTrackerMeta` /
  `ResponseTrackerMeta`, as the worker's registry does;
* starts the extension's server on a free loopback port as a task of the same loop: its `WebApp` with one
  catch-all route that parks each forwarded request under its `x-ms-invocation-id` until the function's answer
  for that id is ready, served by its `WebServer` (uvicorn with its default logging: access log on stdout);
* on an invocation (function name and route parameters only, as the host sends with `RequiresRouteParameters`),
  waits for the forwarded request of that id, copies the route parameters into it with the extension's
  `RequestSynchronizer`, calls the function and hands its response, or its exception, to the parked route.

It logs at INFO to stdout (the host forwards worker stdout to its logs). The **host**
(`python -m tests.functions_host host --port P --worker-control N`) asks the worker for its capabilities (`HttpUri`)
and functions, routes each client request by the functions' route templates (`routePrefix` "", as host.json sets
it: `{name}` one segment, `{*name}` the rest), forwards the raw request to `HttpUri` with `x-ms-invocation-id` and
`X-Forwarded-*` while it sends the invocation, and streams the answer back. Host and worker talk one JSON line
each way per connection over loopback, standing in for gRPC.

No `from __future__ import annotations` here: FastAPI and the indexing check resolve annotations at run time.
"""

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import azurefunctions.extensions.base as base
import httpx

from gateway.dev import devstack

logger = logging.getLogger("functions_host")

INVOCATION_HEADER = "x-ms-invocation-id"
#: How long an invocation waits for its forwarded request (the real worker waits without a limit).
PAIRING_SECONDS = 30.0
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "proxy-connection"})


# --- the worker -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedFunction:
    name: str
    function: Callable[..., Awaitable[Any]]
    bindings: list[dict[str, Any]]
    #: The parameter bound to the httpTrigger, for HTTP functions.
    http_parameter: str | None


class FunctionLoadError(RuntimeError):
    """What the worker reports when a function's Python signature does not fit its bindings."""


def index(module: Any) -> dict[str, IndexedFunction]:
    """The functions of the module's one `FunctionApp`, checked as the worker's `Registry.add_indexed_function`."""
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if len(apps) != 1:
        raise FunctionLoadError(f"Expected one top-level function app, found {len(apps)}.")
    indexed = {}
    for function in apps[0].get_functions():
        name = function.get_function_name()
        if not name:
            raise FunctionLoadError("A function has no name.")
        user = function.get_user_function()
        bindings = json.loads(function.get_function_json())["bindings"]
        hints = typing.get_type_hints(user)
        parameters = set(inspect.signature(user).parameters)
        bound = {binding["name"] for binding in bindings if binding["name"] != "$return"}
        if parameters != bound:
            raise FunctionLoadError(f"{name}: parameters {sorted(parameters)} do not match bindings {sorted(bound)}.")
        http = next((binding["name"] for binding in bindings if binding["type"] == "httpTrigger"), None)
        if http is not None:
            if not base.RequestTrackerMeta.check_type(hints.get(http)):
                raise FunctionLoadError(f"{name}: {http} is not annotated with the extension's request type.")
            if not base.ResponseTrackerMeta.check_type(hints.get("return")):
                raise FunctionLoadError(f"{name}: the return annotation is not one of the extension's response types.")
        indexed[name] = IndexedFunction(name, user, bindings, http)
    return indexed


class Coordinator:
    """Pairs forwarded requests with invocations by invocation id (the worker's `HttpCoordinator`)."""

    def __init__(self) -> None:
        self._requests: dict[str, asyncio.Future[Any]] = {}
        self._responses: dict[str, asyncio.Future[Any]] = {}

    @staticmethod
    def _slot(slots: dict[str, asyncio.Future[Any]], invocation: str) -> asyncio.Future[Any]:
        if invocation not in slots:
            slots[invocation] = asyncio.get_running_loop().create_future()
        return slots[invocation]

    async def park(self, request: Any) -> Any:
        """The catch-all route's work: offer the request under its invocation id, wait for the function's answer."""
        invocation = request.headers.get(INVOCATION_HEADER)
        if invocation is None:
            raise ValueError(f"Header {INVOCATION_HEADER} not found")
        logger.info("Received HTTP request for invocation %s", invocation)
        self._slot(self._requests, invocation).set_result(request)
        try:
            response = await self._slot(self._responses, invocation)
        finally:
            self._responses.pop(invocation, None)
        logger.info("Sending HTTP response for invocation %s", invocation)
        if isinstance(response, Exception):
            raise response
        return response

    async def request(self, invocation: str) -> Any:
        try:
            async with asyncio.timeout(PAIRING_SECONDS):
                return await self._slot(self._requests, invocation)
        finally:
            self._requests.pop(invocation, None)

    def answer(self, invocation: str, response: Any) -> None:
        self._slot(self._responses, invocation).set_result(response)


class Worker:
    def __init__(self, functions: dict[str, IndexedFunction]) -> None:
        self.functions = functions
        self.coordinator = Coordinator()
        self.http_uri = ""
        self.stopped = asyncio.Event()

    async def start_http_server(self) -> None:
        """The worker's `initialize_http_server`: the extension's app and server, on this loop."""
        extension = importlib.import_module(base.ModuleTrackerMeta.get_module())
        web_app = extension.WebApp()
        request_type = base.RequestTrackerMeta.get_request_type()
        coordinator = self.coordinator

        async def catch_all(request: request_type) -> Any:  # type: ignore[valid-type]
            return await coordinator.park(request)

        web_app.route(catch_all)
        port = devstack.free_port()
        asyncio.get_running_loop().create_task(extension.WebServer("127.0.0.1", port, web_app).serve())
        while not devstack.port_open(port):
            await asyncio.sleep(0.02)
        self.http_uri = f"http://127.0.0.1:{port}"

    async def invoke(self, message: dict[str, Any]) -> dict[str, Any]:
        """One invocation request: the function's HTTP request arrives separately, through the extension's server."""
        indexed = self.functions[message["function"]]
        if indexed.http_parameter is None:
            raise FunctionLoadError(f"{indexed.name} is not an HTTP function.")
        invocation = message["invocation_id"]
        request = await self.coordinator.request(invocation)
        trigger = func.HttpRequest(message["method"], message["url"], route_params=message["route_params"], body=b"")
        base.RequestTrackerMeta.get_synchronizer().sync_route_params(request, trigger.route_params)
        try:
            result = await indexed.function(**{indexed.http_parameter: request})
        except Exception as exc:
            self.coordinator.answer(invocation, exc)
            return {"invocation_id": invocation, "status": "failure", "error": repr(exc)}
        self.coordinator.answer(invocation, result)
        return {"invocation_id": invocation, "status": "success"}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if not line:  # a readiness check that only connected
            writer.close()
            return
        message = json.loads(line)
        if message["type"] == "init":
            functions = [{"name": f.name, "bindings": f.bindings} for f in self.functions.values()]
            answer: dict[str, Any] = {"capabilities": {"HttpUri": self.http_uri, "RequiresRouteParameters": "true"}, "functions": functions}
        elif message["type"] == "invoke":
            answer = await self.invoke(message)
        else:  # "stop": the host ended the worker's stream; the worker's loop ends and the interpreter exits
            answer = {"status": "stopping"}
            self.stopped.set()
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()


async def run_worker(control_port: int) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(logging.StreamHandler(sys.stdout))
    worker = Worker(index(importlib.import_module("function_app")))  # imported inside the loop, as on init
    if not base.HttpV2FeatureChecker.http_v2_enabled():
        raise RuntimeError("function_app does not use the HTTP streaming extension.")
    await worker.start_http_server()
    server = await asyncio.start_server(worker.control, "127.0.0.1", control_port)
    async with server:
        await worker.stopped.wait()


# --- the host -------------------------------------------------------------------------------------------------


async def ask(port: int, message: dict[str, Any]) -> dict[str, Any]:
    """One control exchange with the worker."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        return json.loads(await reader.readline())
    finally:
        writer.close()


@dataclass(frozen=True)
class HostRoute:
    function: str
    pattern: re.Pattern[str]
    methods: frozenset[str]


def compile_template(template: str) -> re.Pattern[str]:
    """A Functions route template as a regex with named groups; `{*name}` spans segments and may be absent."""
    pattern = ""
    for position, segment in enumerate(template.split("/")):
        slash = "/" if position else ""
        if catch_all := re.fullmatch(r"\{\*(\w+)\}", segment):
            pattern += f"(?:{slash}(?P<{catch_all.group(1)}>.*))?"
        elif parameter := re.fullmatch(r"\{(\w+)\}", segment):
            pattern += f"{slash}(?P<{parameter.group(1)}>[^/]+)"
        else:
            pattern += slash + re.escape(segment)
    return re.compile(pattern, re.IGNORECASE)


def serve_host(port: int, worker_control: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    routes: list[HostRoute] = []
    client = httpx.AsyncClient(timeout=httpx.Timeout(240.0))
    http_uri = ""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal http_uri
        init = await ask(worker_control, {"type": "init"})
        http_uri = init["capabilities"]["HttpUri"]
        for function in init["functions"]:
            trigger = function["bindings"][0]
            if trigger["type"] == "httpTrigger":
                routes.append(HostRoute(function["name"], compile_template(trigger["route"]), frozenset(trigger["methods"])))
        yield
        await client.aclose()

    async def forward(request: Request) -> Response:
        path = request.url.path.lstrip("/")
        matched = next(((route, m) for route in routes if (m := route.pattern.fullmatch(path)) and request.method in route.methods), None)
        if matched is None:
            return PlainTextResponse("", status_code=404)
        route, match = matched
        invocation = str(uuid.uuid4())
        route_params = {name: value for name, value in match.groupdict().items() if value is not None}
        headers = [(name, value) for name, value in request.headers.items() if name not in _HOP_BY_HOP]
        peer = request.client.host if request.client else "127.0.0.1"
        headers += [
            (INVOCATION_HEADER, invocation),
            ("x-forwarded-for", peer),
            ("x-forwarded-proto", request.url.scheme),
            ("x-forwarded-host", request.headers.get("host", "")),
        ]
        invoked = asyncio.create_task(
            ask(worker_control, {"type": "invoke", "invocation_id": invocation, "function": route.function, "route_params": route_params,
                                 "method": request.method, "url": str(request.url)})
        )  # fmt: skip
        target = http_uri + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        forwarded = client.build_request(request.method, target, headers=headers, content=request.stream() if has_body else None)
        upstream = await client.send(forwarded, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await invoked

        answer_headers = {name: value for name, value in upstream.headers.multi_items() if name not in _HOP_BY_HOP}
        return StreamingResponse(relay(), status_code=upstream.status_code, headers=answer_headers)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- for tests ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionsApp:
    """`function_app` served by the stand-ins: clients call `url` (the host)."""

    url: str
    worker: subprocess.Popen[bytes]
    host: subprocess.Popen[bytes]
    control_port: int
    #: The worker's stdout and stderr: what the Functions host would forward to its logs.
    log: Path

    def stop_worker_normally(self) -> int:
        """End the worker's loop as the host does when it closes the worker's stream; returns its exit code."""
        asyncio.run(ask(self.control_port, {"type": "stop"}))
        return self.worker.wait(30)


def start(env: dict[str, str], log: Path) -> FunctionsApp:
    """Start a worker (with the app settings `env`, as under Functions) and a host in front of it."""
    control_port, port = devstack.free_port(), devstack.free_port()
    settings = {**os.environ, **env, "FUNCTIONS_WORKER_RUNTIME": "python", "PYTHON_ENABLE_INIT_INDEXING": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "tests.functions_host", "worker", "--control-port", str(control_port)],
                                  env=settings, cwd=devstack.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        devstack.wait_for_port(control_port, worker)
        host = devstack.start_python(["tests.functions_host", "host", "--port", str(port), "--worker-control", str(control_port)], {}, port)
    except BaseException:
        devstack.stop(worker)
        raise
    return FunctionsApp(f"http://127.0.0.1:{port}", worker, host, control_port, log)


def stop(app: FunctionsApp) -> None:
    devstack.stop(app.host)
    devstack.stop(app.worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", choices=["worker", "host"])
    parser.add_argument("--control-port", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--worker-control", type=int)
    args = parser.parse_args()
    if args.role == "worker":
        asyncio.run(run_worker(args.control_port))
    else:
        serve_host(args.port, args.worker_control)


if __name__ == "__main__":
    main()
