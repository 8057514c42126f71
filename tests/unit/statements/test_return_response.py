"""`return-response`: the pipeline ends with the response it builds, or with one `send-request` stored."""

from __future__ import annotations

import orjson

from policies.context import Body, Headers, Response
from tests.policy_helpers import FakeServices, doc, run_document
from tests.unit.statements.helpers import SEND


async def test_return_response_ends_the_pipeline_with_its_response() -> None:
    xml = doc(
        inbound='<return-response><set-status code="418" reason="Teapot" />'
        '<set-header name="content-type" exists-action="override"><value>application/json</value></set-header>'
        '<set-body>@("{\\"sub\\": \\"" + context.Subscription.Id + "\\"}")</set-body></return-response>',
        outbound='<set-variable name="never" value="1" />',
    )
    result, context, services = await run_document(xml)
    assert result is not None and result.status == 418 and result.reason == "Teapot"
    assert orjson.loads(result.body) == {"sub": "sub-1"}
    assert ("content-type", "application/json") in result.headers
    assert services.forwarded == [] and not context.Variables.ContainsKey("never")


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


async def test_return_response_with_an_unset_variable_starts_blank_and_refuses_a_non_response() -> None:
    blank = doc(inbound='<return-response response-variable-name="existing context variable"><set-body>ok</set-body></return-response>')
    result, _, _ = await run_document(blank)
    assert result is not None and (result.status, result.body) == (200, b"ok")
    wrong = doc(inbound='<set-variable name="r" value="text" /><return-response response-variable-name="r" />')
    result, context, _ = await run_document(wrong)
    assert result is not None and result.status == 500 and "holds no response" in context.LastError.Message
