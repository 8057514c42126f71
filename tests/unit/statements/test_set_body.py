"""`set-body`: literal, expression and Liquid bodies on the request and the response, and their bounds."""

from __future__ import annotations

import orjson
import pytest

from policies.context import Body, Headers, Response
from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import FakeServices, doc, make_context, pipeline_of, run_document


async def test_literal_body_replaces_the_request_body() -> None:
    _, context, _ = await run_document(doc(inbound='<set-body>{"messages": []}</set-body>'))
    assert context.Request.Body.content == b'{"messages": []}'


async def test_expression_body_writes_json_values_as_json() -> None:
    xml = doc(inbound='<set-body>@(context.Request.Body.As&lt;JObject&gt;(preserveContent: true)["messages"])</set-body>')
    _, context, _ = await run_document(xml, body={"messages": [{"role": "user", "content": "hi"}]})
    assert orjson.loads(context.Request.Body.content) == [{"role": "user", "content": "hi"}]


async def test_liquid_template_reads_body_context_and_variables() -> None:
    template = (
        '{"model": "{{ context.Request.MatchedParameters["deployment-id"] }}", '
        '"prompt": "{{ body.messages[0].content | Upcase }}", "team": "{{ context.Variables.team | default: "none" }}"}'
    )
    inbound = f'<set-variable name="team" value="@(context.Subscription.Name)" /><set-body template="liquid">{template}</set-body>'
    _, context, _ = await run_document(doc(inbound=inbound))
    assert orjson.loads(context.Request.Body.content) == {"model": "gpt-4o", "prompt": "HI", "team": "team-a"}


async def test_liquid_braces_are_named_values_only_when_one_is_defined() -> None:
    xml = doc(inbound='<set-body template="liquid">{{region}}/{{ body.messages | size }}/{{missing}}</set-body>')
    result = await pipeline_of(xml, Loader(named_values={"region": "westeurope"})).execute(ctx := make_context())
    assert result is None and ctx.Request.Body.content == b"westeurope/1/"


async def test_outbound_set_body_changes_a_buffered_answer_but_not_a_stream() -> None:
    outbound = '<set-body template="liquid">{"was": {{ body.status }}, "code": {{ context.Response.StatusCode }}}</set-body>'
    _, context, _ = await run_document(doc(outbound=outbound))
    assert orjson.loads(context.Response.Body.content) == {"was": 200, "code": 200}

    class Streaming(FakeServices):
        async def forward(self, context, timeout):  # type: ignore[no-untyped-def]
            context.Response = Response(200, "OK", Headers([("content-type", "text/event-stream")]), Body(b""))

    _, context, _ = await run_document(doc(outbound=outbound), Streaming())
    assert context.Response.Body.content == b""


async def test_liquid_loops_past_the_bound_fail_the_request() -> None:
    template = "{% for i in (1..100000) %}x{% endfor %}"
    result, context, services = await run_document(doc(inbound=f'<set-body template="liquid">{template}</set-body>'))
    assert result is not None and result.status == 500
    assert context.LastError.Reason == "ExpressionValueEvaluationFailure" and services.forwarded == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<set-body template="liquid">{% include "secrets" %}</set-body>', "Liquid template"),
        ('<set-body template="liquid">{{ body | no_such_filter }}</set-body>', "Liquid template"),
        ('<set-body template="xslt">x</set-body>', "use one of liquid, none"),
        ("<set-body><a>x</a></set-body>", "CDATA"),
    ],
)
def test_load_errors(body: str, message: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        load_document(doc(inbound=body), Scope("api", "openai"), Loader())
    assert message in str(caught.value) and caught.value.element == "set-body"
