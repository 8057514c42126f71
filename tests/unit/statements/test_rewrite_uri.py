"""`rewrite-uri`: the path and query the backend is called with, relative to the API, and what is refused."""

from __future__ import annotations

import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, run_document


@pytest.mark.parametrize(
    ("template", "copy", "path", "query"),
    [
        ("/deployments/gpt-4o-mini/chat/completions", "true", "/openai/deployments/gpt-4o-mini/chat/completions", [("api-version", "2024-10-21")]),
        (
            "deployments/{deployment-id}-eu/chat/completions?trace=1",
            "true",
            "/openai/deployments/gpt-4o-eu/chat/completions",
            [("trace", "1"), ("api-version", "2024-10-21")],
        ),
        (
            "/deployments/{deployment-id}/chat/completions?api-version=2024-02-01",
            "true",
            "/openai/deployments/gpt-4o/chat/completions",
            [("api-version", "2024-02-01")],
        ),
        ("/deployments/x/embeddings", "false", "/openai/deployments/x/embeddings", []),
        (
            "@(&quot;/deployments/&quot; + context.Subscription.Name + &quot;/chat/completions&quot;)",
            "true",
            "/openai/deployments/team-a/chat/completions",
            [("api-version", "2024-10-21")],
        ),
    ],
)
async def test_rewrite_changes_forwarded_path_and_query(template: str, copy: str, path: str, query: list) -> None:
    _, context, services = await run_document(doc(inbound=f'<rewrite-uri template="{template}" copy-unmatched-params="{copy}" />'))
    assert (services.forwarded[0]["path"], services.forwarded[0]["query"]) == (path, query)
    assert context.Request.OriginalUrl.Path == "/openai/deployments/gpt-4o/chat/completions"


async def test_matched_parameters_are_escaped_into_one_segment() -> None:
    _, _, services = await run_document(doc(inbound='<rewrite-uri template="/deployments/{deployment-id}/chat" />'), deployment="a b&c")
    assert services.forwarded[0]["path"] == "/openai/deployments/a%20b%26c/chat"


@pytest.mark.parametrize(
    "template",
    ["@(&quot;/../../admin&quot;)", "/deployments/{no-such-parameter}/chat", "@(&quot;https://evil.example/x&quot;)"],
)
async def test_bad_rewrites_at_run_time_fail_the_request(template: str) -> None:
    result, context, services = await run_document(doc(inbound=f'<rewrite-uri template="{template}" />'))
    assert result is not None and result.status == 500 and services.forwarded == []
    assert context.LastError.Reason == "ExpressionValueEvaluationFailure"


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ('<rewrite-uri template="https://other.example/openai" />', "relative to the API"),
        ('<rewrite-uri template="/deployments/../x" />', "'..' segments"),
        ("<rewrite-uri />", "'template' is required"),
    ],
)
def test_load_errors(element: str, message: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
    assert message in str(caught.value)


def test_rewrite_uri_is_inbound_only() -> None:
    with pytest.raises(PolicyLoadError, match="Not allowed in <outbound>"):
        load_document(doc(outbound='<rewrite-uri template="/x" />'), Scope("api", "openai"), Loader())
