"""No key in the platform's logs: the streaming extension's own uvicorn server, started as the Functions worker
starts it after importing `function_app.py`, logs a `?subscription-key=` request without the key."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from gateway.dev import devstack
from gateway.hosts.log_redaction import RedactSecrets, redact

#: What the Functions worker does: import the app (indexing), attach its own handler to the root logger at INFO,
#: then serve HTTP through the extension's WebApp/WebServer (uvicorn with its default logging configuration).
WORKER = textwrap.dedent(
    """
    import asyncio, logging, sys
    import function_app  # noqa: F401  the import path under the worker
    from azurefunctions.extensions.http.fastapi.web import WebApp, WebServer
    from fastapi import Request
    from fastapi.responses import PlainTextResponse

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(logging.StreamHandler(sys.stdout))
    logging.getLogger("azure.data.tables").info("SDK-CHATTER storage request")

    async def relay(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = WebApp()
    app.route(relay)
    asyncio.run(WebServer("127.0.0.1", int(sys.argv[1]), app).serve())
    """
)


def test_the_extensions_server_logs_no_key(tmp_path: Path) -> None:
    port = devstack.free_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", WORKER, str(port)], cwd=devstack.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            devstack.wait_for_port(port, process)
            base = f"http://127.0.0.1:{port}/openai/v1/models"
            for query in (
                "subscription-key=SECRET-ONE&api-version=2024-10-21",
                "Subscription%2DKey=SECRET-TWO",
                "api-key=SECRET-THREE&key=SECRET-FOUR",
            ):
                assert httpx.get(f"{base}?{query}").text == "ok"
        finally:
            devstack.stop(process)
    logged = log.read_text()
    assert logged.count('"GET /openai/v1/models?') == 3  # the access log is on, and these are its lines
    assert "SECRET" not in logged and "subscription-key=REDACTED&api-version=2024-10-21" in logged
    assert "SDK-CHATTER" not in logged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/openai/v1/models", "/openai/v1/models"),
        ("/x?api-version=1&subscription-key=abc", "/x?api-version=1&subscription-key=REDACTED"),
        ("/x?API-KEY=a=b&sig=c&flag", "/x?API-KEY=REDACTED&sig=REDACTED&flag"),
        ("/x?subscription+key=a&subscription%2dkey=b", "/x?subscription+key=a&subscription%2dkey=REDACTED"),
    ],
)
def test_secret_query_values_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_filter_rewrites_record_arguments() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", "/a?key=k", "1.1", 200), None)
    assert RedactSecrets().filter(record) and record.getMessage() == '1.2.3.4:5 - "GET /a?key=REDACTED HTTP/1.1" 200'
