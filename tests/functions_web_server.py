"""The Functions HTTP streaming extension's web server, serving the `openai` function as the Python worker does.

    python -m tests.functions_web_server --port N     (gateway settings from the environment)

The Python worker (not installable offline) starts the extension's `WebServer` (uvicorn) around the extension's
`WebApp` (FastAPI, one catch-all route) and answers each request with the function's return value, after
copying the trigger's route parameters into `request.path_params`. This does the same without the worker and
the host, so end-to-end tests can see what a client of that server sees.
"""

from __future__ import annotations

import argparse
import asyncio

from azurefunctions.extensions.http.fastapi import WebApp, WebServer
from fastapi import Request
from starlette.responses import Response

import function_app

_PREFIX = "/openai/"


async def catch_all(request: Request) -> Response:
    path = request.url.path
    request.path_params.clear()
    request.path_params["path"] = path[len(_PREFIX) :] if path.startswith(_PREFIX) else path
    response: Response = await function_app.http_functions["openai"](request)
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web_app = WebApp()
    web_app.route(catch_all)
    asyncio.run(WebServer("127.0.0.1", parser.parse_args().port, web_app).serve())


if __name__ == "__main__":
    main()
