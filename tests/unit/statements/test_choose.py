"""`choose`: the first `<when>` whose condition holds runs, else `<otherwise>`."""

from __future__ import annotations

import pytest

from tests.policy_helpers import doc, run_document


@pytest.mark.parametrize(("deployment", "backend"), [("gpt-4o", "primary"), ("gpt-4o-mini", "secondary")])
async def test_choose_picks_first_matching_branch(deployment: str, backend: str) -> None:
    xml = doc(
        inbound='<choose><when condition="@(context.Request.MatchedParameters[&quot;deployment-id&quot;] == &quot;gpt-4o&quot;)">'
        '<set-backend-service backend-id="primary" /></when><otherwise><set-backend-service backend-id="secondary" /></otherwise></choose>'
    )
    _, _, services = await run_document(xml, deployment=deployment)
    assert services.forwarded[0]["backend_id"] == backend


async def test_choose_condition_that_is_not_boolean_fails_into_on_error() -> None:
    result, context, services = await run_document(
        doc(inbound='<choose><when condition="@(context.Api.Id)"><set-variable name="x" value="1" /></when></choose>')
    )
    assert result is not None and result.status == 500
    assert context.LastError.Reason == "ExpressionValueEvaluationFailure"
    assert services.forwarded == []
