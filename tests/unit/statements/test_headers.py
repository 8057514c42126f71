"""`set-header` and `set-query-parameter`: exists-actions on the request and the response; values that cannot be sent
are load errors naming the element when constant, and fail the statement before anything is forwarded when computed
(see tests/e2e/test_header_values.py)."""

from __future__ import annotations

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, run_document


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("override", ["new"]),
        ("skip", ["alice"]),
        ("append", ["alice", "new"]),
        ("delete", []),
    ],
)
async def test_set_header_exists_actions_on_request(action: str, expected: list[str]) -> None:
    value = "" if action == "delete" else "<value>new</value>"
    _, _, services = await run_document(doc(inbound=f'<set-header name="X-User-Id" exists-action="{action}">{value}</set-header>'))
    sent = [v for k, v in services.forwarded[0]["headers"] if k.lower() == "x-user-id"]
    assert sent == expected


async def test_set_header_in_outbound_changes_the_response() -> None:
    _, context, _ = await run_document(
        doc(outbound='<set-header name="x-served-by" exists-action="override"><value>@(context.Deployment.Region)</value></set-header><base />')
    )
    assert context.Response.Headers.GetValueOrDefault("x-served-by") == "westeurope"


async def test_set_query_parameter_changes_forwarded_query() -> None:
    _, _, services = await run_document(
        doc(
            inbound='<set-query-parameter name="api-version" exists-action="override"><value>2024-02-01</value></set-query-parameter>'
            '<set-query-parameter name="trace" exists-action="append"><value>1</value></set-query-parameter>'
        )
    )
    assert services.forwarded[0]["query"] == [("api-version", "2024-02-01"), ("trace", "1")]


NAMED = {"with-newline": "a\nb", "with-nul": "a\x00b", "fine": "token-123"}


def load_error(inbound: str) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        load_document(doc(inbound=inbound), Scope("api", "openai"), Loader(named_values=NAMED))
    return caught.value


@pytest.mark.parametrize(
    ("inbound", "element", "problem"),
    [
        ('<set-header name="x-a"><value>a&#13;&#10;Injected: 1</value></set-header>', "value", "control character"),
        ('<set-header name="x-a"><value>{{with-nul}}</value></set-header>', "value", "control character"),  # XML cannot hold NUL
        ('<set-header name="x-a"><value>{{with-newline}}</value></set-header>', "value", "control character"),
        ('<set-header name="x-a"><value>price €5</value></set-header>', "value", "outside ISO-8859-1"),
        ('<set-header name="x a"><value>v</value></set-header>', "set-header", "header name"),
        ('<set-query-parameter name="q"><value>a&#10;b</value></set-query-parameter>', "value", "control character"),
        (
            '<return-response><set-header name="x-a"><value>a&#10;b</value></set-header></return-response>',
            "value",
            "control character",
        ),
    ],
)
def test_constants_that_cannot_be_sent_are_load_errors(inbound: str, element: str, problem: str) -> None:
    error = load_error(inbound)
    assert error.element == element and error.line == 1
    assert problem in str(error)


def test_sendable_constants_load() -> None:
    inbound = (
        '<set-header name="x-a"><value>déjà vu</value><value>{{fine}}</value><value>tab\tok</value></set-header>'
        '<set-query-parameter name="q"><value>café €</value></set-query-parameter>'
        '<set-header name="x a" exists-action="delete" />'
    )
    load_document(doc(inbound=inbound), Scope("api", "openai"), Loader(named_values=NAMED))


async def test_a_computed_value_fails_the_statement_and_on_error_runs() -> None:
    xml = doc(
        inbound='<set-header name="x-a"><value>@(context.Request.Headers.GetValueOrDefault("x-user-id", "") + "\\r\\nInjected: 1")</value></set-header>',
        on_error='<set-header name="x-reason"><value>@(context.LastError.Reason + "/" + context.LastError.Source)</value></set-header>',
    )
    result, _, services = await run_document(xml)
    assert result is not None and result.status == 500
    assert ("x-reason", "InvalidHeaderValue/set-header") in result.headers
    assert services.forwarded == []


async def test_a_computed_header_name_is_checked_too() -> None:
    xml = doc(
        inbound='<set-header name="@(&quot;x-&quot; + context.Request.Headers.GetValueOrDefault(&quot;x-user-id&quot;, &quot;&quot;) + &quot;: no&quot;)"><value>v</value></set-header>'
    )
    result, _, services = await run_document(xml)
    assert result is not None and result.status == 500 and b"InvalidHeaderValue" in result.body
    assert services.forwarded == []
