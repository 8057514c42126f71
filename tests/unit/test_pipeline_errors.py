"""One error boundary: whatever a statement or the service it calls raises, `<on-error>` runs and the client gets
the OpenAI error shape with the right status."""

from __future__ import annotations

import orjson

from policies.counters import Admission, Window
from policies.errors import ServiceError
from tests.policy_helpers import FakeServices, doc, run_document

ON_ERROR = (
    '<set-header name="x-source" exists-action="override"><value>@(context.LastError.Source)</value></set-header>'
    '<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>'
)
TOKEN_LIMIT = '<llm-token-limit counter-key="k" tokens-per-minute="1000" estimate-prompt-tokens="true" />'


class StoreDown(ServiceError):
    """What the gateway's storage boundary raises (gateway.errors.StorageUnavailable is one)."""

    status = 503
    code = "StorageUnavailable"
    message = "The gateway's state store is temporarily unavailable. Try again in a few seconds."


class FailingCounters:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def acquire(self, key: str, window: Window, amount: int, limit: int) -> Admission:
        raise self.error

    async def add(self, key: str, window: Window, amount: int, limit: int) -> None:
        raise self.error


async def test_a_service_error_in_a_statement_runs_on_error_with_its_status_and_retry_after() -> None:
    services = FakeServices()
    services.counters = FailingCounters(StoreDown(headers={"Retry-After": "2"}))  # type: ignore[assignment]
    result, context, _ = await run_document(doc(inbound=TOKEN_LIMIT, on_error=ON_ERROR), services)
    assert result is not None and result.status == 503
    headers = dict(result.headers)
    assert headers["Retry-After"] == "2"
    assert (headers["x-source"], headers["x-reason"]) == ("azure-openai-token-limit", "StorageUnavailable")
    assert orjson.loads(result.body)["error"]["code"] == "StorageUnavailable"
    assert context.LastError is not None and context.LastError.Section == "inbound"
    assert services.forwarded == []  # refused before the backend was called


async def test_a_foreign_exception_is_a_500_in_the_openai_shape_and_on_error_still_runs() -> None:
    services = FakeServices()
    services.counters = FailingCounters(ConnectionResetError("raw socket error"))  # type: ignore[assignment]
    result, context, _ = await run_document(doc(inbound=TOKEN_LIMIT, on_error=ON_ERROR), services)
    assert result is not None and result.status == 500
    assert dict(result.headers)["x-reason"] == "InternalError"
    body = orjson.loads(result.body)
    assert body["error"]["code"] == "InternalServerError" and "raw socket error" not in result.body.decode()
