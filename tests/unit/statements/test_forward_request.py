"""`forward-request`: the call to the backend, its timeout and failing on an error status."""

from __future__ import annotations

from tests.policy_helpers import FakeServices, doc, run_document


async def test_forward_request_passes_timeout_and_fails_on_error_status() -> None:
    _, _, services = await run_document(doc(backend='<forward-request timeout="7" />'))
    assert services.forwarded[0]["timeout"] == 7
    result, context, _ = await run_document(doc(backend='<forward-request fail-on-error-status-code="true" />'), FakeServices([503]))
    assert result is not None and result.status == 503
    assert context.LastError.Reason == "BackendErrorStatus"
