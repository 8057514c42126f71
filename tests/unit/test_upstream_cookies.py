"""The backend client is shared by every client of the gateway, so it must keep no cookies: a backend's
`Set-Cookie` answered to one request never rides along on the next (another subscription's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.backends.proxy import UpstreamClient, read_body


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A backend on loopback that sets a cookie on every answer and records the Cookie header it received."""
    received: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        received.append(request.headers.get("cookie"))
        response = web.json_response({"ok": True})
        response.set_cookie("affinity", "instance-7")
        return response

    app = web.Application()
    app.router.add_post("/openai/chat", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # A host name, not an IP address: cookie jars keep no cookies for IP hosts, which would hide the behaviour.
    yield f"http://localhost:{port}/openai/chat", received
    await runner.cleanup()


async def test_backend_cookies_are_never_sent_back(backend: tuple[str, list[str | None]]) -> None:
    url, received = backend
    client = UpstreamClient(connect_timeout=5, read_timeout=5)
    try:
        for _ in range(2):
            upstream = await client.send("POST", url, [("content-type", "application/json")], b"{}")
            assert "affinity=instance-7" in upstream.headers.get("set-cookie", "")
            await read_body(upstream)
    finally:
        await client.close()
    assert received == [None, None]
