"""`set-backend-service`: the backend (or base URL) the request is forwarded to."""

from __future__ import annotations

from tests.policy_helpers import doc, run_document


async def test_set_backend_service_base_url() -> None:
    _, context, services = await run_document(doc(inbound='<set-backend-service base-url="https://other.openai.azure.com/openai" />'))
    assert services.forwarded[0]["base_url"] == "https://other.openai.azure.com"
