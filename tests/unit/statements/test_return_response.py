"""`return-response`: the pipeline ends with the response it builds, or with one `send-request` stored."""

from __future__ import annotations

import orjson

from tests.policy_helpers import doc, run_document


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
