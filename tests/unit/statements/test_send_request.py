"""`send-request` and `send-one-way-request` over a fake: the request built from the children, the answer read back as
an IResponse, failures, the URL allow list and load errors."""

from __future__ import annotations

import pytest

from gateway.errors import BackendTimeout
from policies.errors import PolicyLoadError
from policies.statement import Loader
from policies.url_allow_list import UrlAllowList
from tests.policy_helpers import FakeServices, doc, json_response, pipeline_of, run_document
from tests.unit.statements.helpers import SEND

READ_BACK = """<set-header name="x-status" exists-action="override"><value>@(((IResponse)context.Variables["r"]).StatusCode.ToString())</value></set-header>
<set-header name="x-verdict" exists-action="override"><value>@((string)((IResponse)context.Variables["r"]).Body.As&lt;JObject&gt;()["verdict"])</value></set-header>"""


async def test_new_request_is_built_from_the_children_and_the_answer_reads_as_iresponse() -> None:
    services = FakeServices()
    services.answer = lambda request: json_response(201, {"verdict": "fine"})
    _, context, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="false") + READ_BACK + "<base />"), services)
    sent = services.sent[0]
    assert (sent.method, sent.url) == ("POST", "https://api.example.com/check?id=sub-1")
    assert dict(sent.headers) == {"x-team": "team-a", "content-type": "text/plain", "Authorization": "Bearer token-for-api://checker"}
    assert sent.body == b"ask alice"
    assert services.tokens == [("api://checker", None)]
    assert context.Request.Headers.get_all("x-status") == ["201"]
    assert context.Request.Headers.get_all("x-verdict") == ["fine"]
    assert "Authorization" not in dict(services.forwarded[0]["headers"])  # the token went on the policy's request only


async def test_copy_starts_from_the_clients_request_but_not_its_body_in_outbound() -> None:
    services = FakeServices()
    await run_document(
        doc(
            inbound=SEND.replace("<set-method>POST</set-method>", "")
            .replace("<set-body>", "<!--")
            .replace("</set-body>", "-->")
            .format(mode="copy", ignore="false")
        ),
        services,
    )
    copied = services.sent[0]
    assert copied.method == "POST" and b"messages" in copied.body
    assert ("x-user-id", "alice") in copied.headers and ("content-type", "application/json") in copied.headers  # skip kept the client's
    outbound = doc(outbound='<send-request mode="copy" response-variable-name="r"><set-url>https://api.example.com/</set-url></send-request>')
    await run_document(outbound, services)
    assert services.sent[1].body == b""


async def test_a_failure_fails_the_request_unless_ignore_error_makes_the_variable_null() -> None:
    services = FakeServices()
    services.answer = lambda request: BackendTimeout()
    on_error = '<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>'
    result, _, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="false"), on_error=on_error), services)
    assert result is not None and result.status == 504 and ("x-reason", "BackendTimeout") in result.headers
    result, context, _ = await run_document(doc(inbound=SEND.format(mode="new", ignore="true")), services)
    assert result is None and context.Variables.ContainsKey("r") and context.Variables.get("r") is None


async def test_a_computed_url_outside_the_allow_list_fails_even_with_ignore_error() -> None:
    xml = doc(
        inbound='<send-request response-variable-name="r" ignore-error="true"><set-url>@(context.Request.Headers.GetValueOrDefault("x-to", ""))</set-url></send-request>'
    )
    result, context, services = await run_document(xml, headers=[("x-to", "https://attacker.example/steal")])
    assert result is not None and result.status == 403
    assert context.LastError.Reason == "UrlNotAllowed" and services.sent == []


async def test_one_way_request_is_handed_over_without_waiting() -> None:
    xml = doc(
        outbound='<send-one-way-request mode="new" timeout="3"><set-url>https://hooks.example.com/x</set-url><set-method>POST</set-method><set-body>@(context.Response.StatusCode.ToString())</set-body></send-one-way-request>'
    )
    result, _, services = await run_document(xml)
    assert result is None and services.sent == []
    assert [(r.method, r.url, r.body) for r in services.one_way] == [("POST", "https://hooks.example.com/x", b"200")]


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ("<set-method>POST</set-method>", "Add <set-url>"),
        ("<set-url>https://api.example.com/</set-url><proxy url='http://p' />", "<proxy> is not supported"),
        ("<set-url>https://api.example.com/</set-url><authentication-certificate thumbprint='x' />", "certificates are not supported"),
        ("<set-url>https://api.example.com/</set-url><set-url>https://api.example.com/</set-url>", "may appear once"),
        ("<set-url>https://api.example.com/</set-url><set-status code='200' />", "Unexpected element"),
        ("<set-url>https://elsewhere.example.net/</set-url>", "not a configured backend"),
        ("<set-url>https://api.example.com/</set-url><set-method>GET POST</set-method>", "not an HTTP method"),
    ],
)
def test_load_errors(inner: str, message: str) -> None:
    loader = Loader(allowed_urls=UrlAllowList.parse(["api.example.com"]))
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=f'<send-request response-variable-name="r">{inner}</send-request>'), loader)
