"""Statements together in a pipeline: on-error answering a refusal, and a backend section that never forwards.
Each statement's own tests are in tests/unit/statements/test_<module>.py."""

from __future__ import annotations

from tests.policy_helpers import FakeServices, doc, make_context, pipeline_of, run_document


async def test_on_error_return_response_replaces_refusal() -> None:
    xml = doc(
        inbound='<rate-limit-by-key calls="1" renewal-period="60" counter-key="solo" />',
        on_error='<choose><when condition="@(context.LastError.Reason == &quot;RateLimitExceeded&quot;)"><return-response>'
        '<set-status code="503" reason="Busy" /><set-body>@(context.LastError.Message)</set-body></return-response></when></choose>',
    )
    services = FakeServices()
    pipeline = pipeline_of(xml)
    await pipeline.execute(make_context(services))
    result = await pipeline.execute(make_context(services))
    assert result is not None and result.status == 503
    assert result.body.decode().startswith("Rate limit is exceeded.")


async def test_backend_section_without_forward_request_is_an_error() -> None:
    result, context, _ = await run_document(doc(backend='<set-variable name="x" value="1" />'))
    assert result is not None and result.status == 500
    assert context.LastError.Reason == "NoForwardRequest"
