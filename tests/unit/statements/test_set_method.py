"""`set-method`: the HTTP method the backend is called with."""

from __future__ import annotations

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, run_document


@pytest.mark.parametrize(
    ("method", "sent"), [("PATCH", "PATCH"), ("get", "GET"), ('@(context.Request.Headers.GetValueOrDefault("x-method", "PUT"))', "PUT")]
)
async def test_backend_is_called_with_the_method(method: str, sent: str) -> None:
    _, _, services = await run_document(doc(inbound=f"<set-method>{method}</set-method>"))
    assert services.forwarded[0]["method"] == sent


async def test_expression_value_that_is_not_a_method_fails_the_request() -> None:
    xml = doc(inbound='<set-method>@(context.Request.Headers.GetValueOrDefault("x-method", ""))</set-method>')
    result, _, services = await run_document(xml, headers=[("x-method", "GET /admin HTTP/1.1")])
    assert result is not None and result.status == 500 and services.forwarded == []


@pytest.mark.parametrize("element", ["<set-method>GET /x</set-method>", "<set-method />", '<set-method verb="x">GET</set-method>'])
def test_load_errors(element: str) -> None:
    with pytest.raises(PolicyLoadError):
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
