"""`authentication-managed-identity`: a bearer token for the resource, and what a failure does."""

from __future__ import annotations

import pytest

from tests.policy_helpers import FakeServices, doc, run_document


async def test_managed_identity_sets_bearer_header_and_variable() -> None:
    xml = doc(
        inbound='<authentication-managed-identity resource="https://cognitiveservices.azure.com" client-id="cid" output-token-variable-name="tok" />'
    )
    _, context, services = await run_document(xml)
    assert services.tokens == [("https://cognitiveservices.azure.com", "cid")]
    assert ("Authorization", "Bearer token-for-https://cognitiveservices.azure.com") in services.forwarded[0]["headers"]
    assert context.Variables["tok"] == "token-for-https://cognitiveservices.azure.com"


class FailingTokens(FakeServices):
    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        raise RuntimeError("no identity here")


@pytest.mark.parametrize(("ignore", "forwarded"), [("true", 1), ("false", 0)])
async def test_managed_identity_failure_respects_ignore_error(ignore: str, forwarded: int) -> None:
    xml = doc(inbound=f'<authentication-managed-identity resource="https://cognitiveservices.azure.com" ignore-error="{ignore}" />')
    result, context, services = await run_document(xml, FailingTokens())
    assert len(services.forwarded) == forwarded
    if forwarded == 0:
        assert result is not None and result.status == 500
        assert context.LastError.Reason == "ManagedIdentityAuthenticationFailure"
