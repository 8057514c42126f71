"""`send-request`, `send-one-way-request` and `return-response response-variable-name`: the statements over a
fake, and the gateway's outbound client against a server on loopback."""

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
from policies.context import Body, Headers, Response
from policies.errors import PolicyLoadError
from policies.services import OutgoingRequest
from policies.statement import Loader
from policies.url_allow_list import UrlAllowList
from tests.policy_helpers import FakeServices, doc, json_response, pipeline_of, run_document

SEND = """<send-request mode="{mode}" response-variable-name="r" timeout="5" ignore-error="{ignore}">
    <set-url>@("https://api.example.com/check?id=" + context.Subscription.Id)</set-url>
    <set-method>POST</set-method>
    <set-header name="x-team" exists-action="override"><value>@(context.Subscription.Name)</value></set-header>
    <set-header name="content-type" exists-action="skip"><value>text/plain</value></set-header>
    <set-body>@("ask " + context.Request.Headers.GetValueOrDefault("x-user-id", ""))</set-body>
    <authentication-managed-identity resource="api://checker" />
</send-request>"""
READ_BACK = """<set-header name="x-status" exists-action="override"><value>@(((IResponse)context.Variables["r"]).StatusCode.ToString())</value></set-header>
<set-header name="x-verdict" exists-action="override"><value>@((string)((IResponse)context.Variables["r"]).Body.As&lt;JObject&gt;()["verdict"])</value></set-header>"""


async def test_new_request_is_built_from_the_children_and_the_answer_reads_as_iresponse() -> None:
    services = FakeServices()
    services.answer = lambda request: json_response(201, {"verdict": "fine"})
    _, context, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="false") + READ_BACK + "<base />"), services)
    sent = services.sent[0]
    assert (sent.method, sent.url) == ("POST", "https://api.example.com/check?id=sub-1")
    assert dict(sent.headers) == {"x-team": "team-a", "content-type": "text/plain", "Authorization": "Bearer token-for-api://checker"}
    assert sent.body == b"ask alice"
    assert services.tokens == [("api://checker", None)]
    assert context.Request.Headers.get_all("x-status") == ["201"]
    assert context.Request.Headers.get_all("x-verdict") == ["fine"]
    assert "Authorization" not in dict(services.forwarded[0]["headers"])  # the token went on the policy's request only


async def test_copy_starts_from_the_clients_request_but_not_its_body_in_outbound() -> None:
    services = FakeServices()
    await run_document(
        doc(
            inbound=SEND.replace("<set-method>POST</set-method>", "")
            .replace("<set-body>", "<!--")
            .replace("</set-body>", "-->")
            .format(mode="copy", ignore="false")
        ),
        services,
    )
    copied = services.sent[0]
    assert copied.method == "POST" and b"messages" in copied.body
    assert ("x-user-id", "alice") in copied.headers and ("content-type", "application/json") in copied.headers  # skip kept the client's
    outbound = doc(outbound='<send-request mode="copy" response-variable-name="r"><set-url>https://api.example.com/</set-url></send-request>')
    await run_document(outbound, services)
    assert services.sent[1].body == b""


async def test_a_failure_fails_the_request_unless_ignore_error_makes_the_variable_null() -> None:
    services = FakeServices()
    services.answer = lambda request: BackendTimeout()
    on_error = '<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>'
    result, _, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="false"), on_error=on_error), services)
    assert result is not None and result.status == 504 and ("x-reason", "BackendTimeout") in result.headers
    result, context, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="true")), services)
    assert result is None and context.Variables.ContainsKey("r") and context.Variables.get("r") is None


async def test_a_computed_url_outside_the_allow_list_fails_even_with_ignore_error() -> None:
    xml = doc(
        inbound='<send-request response-variable-name="r" ignore-error="true"><set-url>@(context.Request.Headers.GetValueOrDefault("x-to", ""))</set-url></send-request>'
    )
    result, context, services = await run_document(xml, headers=[("x-to", "https://attacker.example/steal")])
    assert result is not None and result.status == 403
    assert context.LastError.Reason == "UrlNotAllowed" and services.sent == []


async def test_one_way_request_is_handed_over_without_waiting() -> None:
    xml = doc(
        outbound='<send-one-way-request mode="new" timeout="3"><set-url>https://hooks.example.com/x</set-url><set-method>POST</set-method><set-body>@(context.Response.StatusCode.ToString())</set-body></send-one-way-request>'
    )
    result, _, services = await run_document(xml)
    assert result is None and services.sent == []
    assert [(r.method, r.url, r.body) for r in services.one_way] == [("POST", "https://hooks.example.com/x", b"200")]


async def test_return_response_answers_with_the_stored_response_changed_by_its_children() -> None:
    services = FakeServices()
    services.answer = lambda request: Response(418, "Teapot", Headers([("x-from", "remote")]), Body(b"remote body"))
    xml = doc(
        inbound=SEND.format(mode="new", ignore="false")
        + '<return-response response-variable-name="r"><set-header name="x-added" exists-action="override"><value>1</value></set-header></return-response>'
    )
    result, _, _ = await run_document(xml, services)
    assert result is not None and (result.status, result.reason, result.body) == (418, "Teapot", b"remote body")
    assert ("x-from", "remote") in result.headers and ("x-added", "1") in result.headers


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ("<set-method>POST</set-method>", "Add <set-url>"),
        ("<set-url>https://api.example.com/</set-url><proxy url='http://p' />", "<proxy> is not supported"),
        ("<set-url>https://api.example.com/</set-url><authentication-certificate thumbprint='x' />", "certificates are not supported"),
        ("<set-url>https://api.example.com/</set-url><set-url>https://api.example.com/</set-url>", "may appear once"),
        ("<set-url>https://api.example.com/</set-url><set-status code='200' />", "Unexpected element"),
        ("<set-url>https://elsewhere.example.net/</set-url>", "not a configured backend"),
        ("<set-url>https://api.example.com/</set-url><set-method>GET POST</set-method>", "not an HTTP method"),
    ],
)
def test_load_errors(inner: str, message: str) -> None:
    loader = Loader(allowed_urls=UrlAllowList.parse(["api.example.com"]))
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=f'<send-request response-variable-name="r">{inner}</send-request>'), loader)


# --- the gateway's outbound client, against a real server on loopback ------------------------------------------


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


async def test_return_response_with_an_unset_variable_starts_blank_and_refuses_a_non_response() -> None:
    blank = doc(inbound='<return-response response-variable-name="existing context variable"><set-body>ok</set-body></return-response>')
    result, _, _ = await run_document(blank)
    assert result is not None and (result.status, result.body) == (200, b"ok")
    wrong = doc(inbound='<set-variable name="r" value="text" /><return-response response-variable-name="r" />')
    result, context, _ = await run_document(wrong)
    assert result is not None and result.status == 500 and "holds no response" in context.LastError.Message
