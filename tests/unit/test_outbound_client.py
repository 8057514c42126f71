"""The gateway's outbound client (what `send-request` and `send-one-way-request` send with) against a server on
loopback. The statements' tests are in tests/unit/statements/test_send_request.py and test_return_response.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.backends.outbound import OutboundClient
from gateway.backends.proxy import UpstreamClient
from gateway.errors import BackendTimeout, OutboundRequestInvalid, ResponseTooLarge
from policies.services import OutgoingRequest


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "headers": dict(request.headers), "body": (await request.read()).decode()})

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"x" * 65536)
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo")

    app = web.Application()
    app.add_routes([web.post("/echo", echo), web.get("/echo", echo), web.get("/big", big), web.get("/slow", slow), web.get("/redirect", redirect)])
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    upstream = UpstreamClient(5, 30)
    outbound = OutboundClient(upstream, max_response_bytes=1024 * 1024, max_in_flight=2)
    yield outbound
    await outbound.close()
    await upstream.close()


def _url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def test_client_sends_and_reads_the_answer(server: TestServer, client: OutboundClient) -> None:
    answer = await client.send(OutgoingRequest("POST", _url(server, "/echo"), (("x-a", "1"), ("content-type", "text/plain")), b"hello"), 5)
    echoed = orjson.loads(answer.Body.content)
    assert answer.StatusCode == 200 and echoed["body"] == "hello" and echoed["headers"]["x-a"] == "1"


async def test_client_never_follows_redirects(server: TestServer, client: OutboundClient) -> None:
    answer = await client.send(OutgoingRequest("GET", _url(server, "/redirect"), (), b""), 5)
    assert answer.StatusCode == 302 and answer.Headers.GetValueOrDefault("location") == "/echo"


async def test_client_bounds_the_answer_and_the_time(server: TestServer, client: OutboundClient) -> None:
    with pytest.raises(ResponseTooLarge):
        await client.send(OutgoingRequest("GET", _url(server, "/big"), (), b""), 5)
    with pytest.raises(BackendTimeout):
        await client.send(OutgoingRequest("GET", _url(server, "/slow"), (), b""), 0.3)


@pytest.mark.parametrize("header", [("x-a", "line\r\nbreak"), ("bad name", "v"), ("x-a", "nul\x00"), ("x-a", "snow ☃")])
async def test_client_refuses_headers_http_cannot_carry(server: TestServer, client: OutboundClient, header: tuple[str, str]) -> None:
    with pytest.raises(OutboundRequestInvalid):
        await client.send(OutgoingRequest("GET", _url(server, "/echo"), (header,), b""), 5)


async def test_one_way_requests_are_bounded_in_flight(server: TestServer, client: OutboundClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.backends.outbound"):
        for _ in range(5):
            client.send_one_way(OutgoingRequest("GET", _url(server, "/slow"), (), b""), 0.5)
        await asyncio.sleep(0.8)
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.backends.outbound"]
    assert sum("Dropping one-way requests" in m for m in messages) == 1  # once per burst, not per request
    assert sum("one-way request failed" in m for m in messages) == 2  # the two that went out timed out
