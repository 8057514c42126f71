"""`find-and-replace`: text replaced in the request body (inbound) or the answer (outbound)."""

from __future__ import annotations

import orjson
import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, run_document


async def test_replaces_every_occurrence_in_the_request_body() -> None:
    body = {"messages": [{"role": "user", "content": "secret word, secret again"}]}
    _, _, services = await run_document(doc(inbound='<find-and-replace from="secret" to="***" />'), body=body)
    assert orjson.loads(services.forwarded[0]["body"])["messages"][0]["content"] == "*** word, *** again"


async def test_replaces_in_the_answer_with_expressions() -> None:
    outbound = '<find-and-replace from="@(&quot;status&quot;)" to="@(context.Deployment.Region)" />'
    _, context, _ = await run_document(doc(outbound=outbound))
    assert orjson.loads(context.Response.Body.content) == {"westeurope": 200}


async def test_empty_from_at_run_time_changes_nothing() -> None:
    _, _, services = await run_document(doc(inbound='<find-and-replace from="@(&quot;&quot;)" to="x" />'))
    assert orjson.loads(services.forwarded[0]["body"]) == {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("element", ['<find-and-replace from="" to="x" />', '<find-and-replace from="a" />'])
def test_load_errors(element: str) -> None:
    with pytest.raises(PolicyLoadError):
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
