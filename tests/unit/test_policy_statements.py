"""Each core policy statement run through a real pipeline against a scripted fake backend."""

from __future__ import annotations

import orjson
import pytest

from policies.statement import Loader
from policies.statements.retry import Retry
from tests.policy_helpers import FakeServices, make_context, pipeline_of


async def run(xml: str, services: FakeServices | None = None, **context_args: object):  # type: ignore[no-untyped-def]
    services = services or FakeServices()
    context = make_context(services, **context_args)  # type: ignore[arg-type]
    result = await pipeline_of(xml).execute(context)
    return result, context, services


def doc(inbound: str = "<base />", backend: str = "<base />", outbound: str = "<base />", on_error: str = "<base />") -> str:
    return (
        f"<policies><inbound>{inbound}</inbound><backend>{backend}</backend><outbound>{outbound}</outbound><on-error>{on_error}</on-error></policies>"
    )


async def test_set_variable_is_visible_to_later_expressions() -> None:
    _, context, services = await run(
        doc(
            inbound='<set-variable name="who" value="@(context.Subscription.Name + &quot;/&quot; + context.Product.Id)" />'
            '<set-header name="x-who" exists-action="override"><value>@((string)context.Variables["who"])</value></set-header>'
        )
    )
    assert context.Variables["who"] == "team-a/gold"
    assert ("x-who", "team-a/gold") in services.forwarded[0]["headers"]


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
    _, _, services = await run(doc(inbound=f'<set-header name="X-User-Id" exists-action="{action}">{value}</set-header>'))
    sent = [v for k, v in services.forwarded[0]["headers"] if k.lower() == "x-user-id"]
    assert sent == expected


async def test_set_header_in_outbound_changes_the_response() -> None:
    _, context, _ = await run(
        doc(outbound='<set-header name="x-served-by" exists-action="override"><value>@(context.Deployment.Region)</value></set-header><base />')
    )
    assert context.Response.Headers.GetValueOrDefault("x-served-by") == "westeurope"


async def test_set_query_parameter_changes_forwarded_query() -> None:
    _, _, services = await run(
        doc(
            inbound='<set-query-parameter name="api-version" exists-action="override"><value>2024-02-01</value></set-query-parameter>'
            '<set-query-parameter name="trace" exists-action="append"><value>1</value></set-query-parameter>'
        )
    )
    assert services.forwarded[0]["query"] == [("api-version", "2024-02-01"), ("trace", "1")]


@pytest.mark.parametrize(("deployment", "backend"), [("gpt-4o", "primary"), ("gpt-4o-mini", "secondary")])
async def test_choose_picks_first_matching_branch(deployment: str, backend: str) -> None:
    xml = doc(
        inbound='<choose><when condition="@(context.Request.MatchedParameters[&quot;deployment-id&quot;] == &quot;gpt-4o&quot;)">'
        '<set-backend-service backend-id="primary" /></when><otherwise><set-backend-service backend-id="secondary" /></otherwise></choose>'
    )
    _, _, services = await run(xml, deployment=deployment)
    assert services.forwarded[0]["backend_id"] == backend


async def test_choose_condition_that_is_not_boolean_fails_into_on_error() -> None:
    result, context, services = await run(
        doc(inbound='<choose><when condition="@(context.Api.Id)"><set-variable name="x" value="1" /></when></choose>')
    )
    assert result is not None and result.status == 500
    assert context.LastError.Reason == "ExpressionValueEvaluationFailure"
    assert services.forwarded == []


async def test_return_response_ends_the_pipeline_with_its_response() -> None:
    xml = doc(
        inbound='<return-response><set-status code="418" reason="Teapot" />'
        '<set-header name="content-type" exists-action="override"><value>application/json</value></set-header>'
        '<set-body>@("{\\"sub\\": \\"" + context.Subscription.Id + "\\"}")</set-body></return-response>',
        outbound='<set-variable name="never" value="1" />',
    )
    result, context, services = await run(xml)
    assert result is not None and result.status == 418 and result.reason == "Teapot"
    assert orjson.loads(result.body) == {"sub": "sub-1"}
    assert ("content-type", "application/json") in result.headers
    assert services.forwarded == [] and not context.Variables.ContainsKey("never")


async def test_set_backend_service_base_url() -> None:
    _, context, services = await run(doc(inbound='<set-backend-service base-url="https://other.openai.azure.com/openai" />'))
    assert services.forwarded[0]["base_url"] == "https://other.openai.azure.com"


async def test_managed_identity_sets_bearer_header_and_variable() -> None:
    xml = doc(
        inbound='<authentication-managed-identity resource="https://cognitiveservices.azure.com" client-id="cid" output-token-variable-name="tok" />'
    )
    _, context, services = await run(xml)
    assert services.tokens == [("https://cognitiveservices.azure.com", "cid")]
    assert ("Authorization", "Bearer token-for-https://cognitiveservices.azure.com") in services.forwarded[0]["headers"]
    assert context.Variables["tok"] == "token-for-https://cognitiveservices.azure.com"


class FailingTokens(FakeServices):
    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        raise RuntimeError("no identity here")


@pytest.mark.parametrize(("ignore", "forwarded"), [("true", 1), ("false", 0)])
async def test_managed_identity_failure_respects_ignore_error(ignore: str, forwarded: int) -> None:
    xml = doc(inbound=f'<authentication-managed-identity resource="https://cognitiveservices.azure.com" ignore-error="{ignore}" />')
    result, context, services = await run(xml, FailingTokens())
    assert len(services.forwarded) == forwarded
    if forwarded == 0:
        assert result is not None and result.status == 500
        assert context.LastError.Reason == "ManagedIdentityAuthenticationFailure"


async def test_rate_limit_by_key_refuses_with_retry_after_and_remaining() -> None:
    services = FakeServices()
    xml = doc(
        inbound='<rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Request.IpAddress)" '
        'remaining-calls-header-name="x-remaining" remaining-calls-variable-name="left" retry-after-variable-name="wait" />'
    )
    pipeline = pipeline_of(xml)
    remaining = []
    for _ in range(2):
        context = make_context(services)
        assert await pipeline.execute(context) is None
        remaining.append(dict(context.response_headers)["x-remaining"])
    assert remaining == ["1", "0"]
    refused = make_context(services)
    result = await pipeline.execute(refused)
    assert result is not None and result.status == 429
    retry_after = int(dict(result.headers)["Retry-After"])
    assert 1 <= retry_after <= 60 and refused.Variables["wait"] == retry_after
    assert orjson.loads(result.body)["error"]["message"] == f"Rate limit is exceeded. Try again in {retry_after} seconds."
    assert refused.LastError.Reason == "RateLimitExceeded" and refused.LastError.Source == "rate-limit-by-key"
    other_caller = make_context(services, ip="10.9.9.9")
    assert await pipeline.execute(other_caller) is None
    assert len(services.forwarded) == 3


async def test_rate_limit_counts_only_when_increment_condition_holds() -> None:
    services = FakeServices([500, 500, 200, 200])
    pipeline = pipeline_of(
        doc(inbound='<rate-limit-by-key calls="1" renewal-period="60" counter-key="k" increment-condition="@(context.Response.StatusCode == 200)" />')
    )
    statuses = []
    for _ in range(4):
        result = await pipeline.execute(make_context(services))
        statuses.append(result.status if result else 200)
    assert statuses == [200, 200, 200, 429]  # two 500s were not counted; the first 200 used the only call


async def test_rate_limit_is_per_subscription() -> None:
    services = FakeServices()
    pipeline = pipeline_of(doc(inbound='<rate-limit calls="1" renewal-period="30" total-calls-header-name="x-total" />'))
    first = make_context(services)
    assert await pipeline.execute(first) is None
    assert dict(first.response_headers)["x-total"] == "1"
    assert (await pipeline.execute(make_context(services))).status == 429  # type: ignore[union-attr]


RETRY = '<retry condition="@(context.Response.StatusCode == 429)" count="{count}" interval="0">{body}</retry>'


@pytest.mark.parametrize(
    ("statuses", "count", "calls", "final"), [([429, 429, 200], 2, 3, 200), ([429, 429, 429, 200], 2, 3, 429), ([200], 3, 1, 200)]
)
async def test_retry_reruns_body_while_condition_holds(statuses: list, count: int, calls: int, final: int) -> None:
    xml = doc(backend=RETRY.format(count=count, body="<forward-request />"))
    _, context, services = await run(xml, FakeServices(statuses))
    assert len(services.forwarded) == calls
    assert context.Response.StatusCode == final


async def test_retry_retries_unreachable_backend_then_fails_into_on_error() -> None:
    xml = doc(
        backend=RETRY.format(count=1, body="<forward-request />"),
        on_error='<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>',
    )
    result, context, services = await run(xml, FakeServices(["down", "down"]))
    assert len(services.forwarded) == 2
    assert result is not None and result.status == 502
    assert ("x-reason", "BackendConnectionFailure") in result.headers
    assert context.LastError.Source == "forward-request" and context.LastError.Section == "backend"


async def test_retry_recovers_from_one_unreachable_attempt() -> None:
    _, context, services = await run(doc(backend=RETRY.format(count=2, body="<forward-request />")), FakeServices(["down", 200]))
    assert context.Response.StatusCode == 200 and len(services.forwarded) == 2


@pytest.mark.parametrize(
    ("attributes", "waits"),
    [
        ('interval="2"', [2, 2, 2]),
        ('interval="1" delta="2"', [1, 3, 5]),
        ('interval="1" delta="2" max-interval="4"', [1, None, 4]),  # exponential, capped
        ('interval="1" delta="2" max-interval="4" first-fast-retry="true"', [0, None, 4]),
    ],
)
def test_retry_wait_formulas(attributes: str, waits: list[float | None]) -> None:
    from policies.xml import parse

    element = parse(f'<retry condition="@(true)" count="3" {attributes}><forward-request /></retry>')
    retry = Retry.load(element, Loader(section="backend"))
    context = make_context()
    got = [retry._wait(context, n) for n in (1, 2, 3)]
    if "max-interval" in attributes:
        # exponential: interval + (2^(n-1) - 1) * [0.8, 1.2] * delta, capped at max-interval
        assert got[0] == waits[0]
        assert 1 + 0.8 * 2 <= got[1] <= 1 + 1.2 * 2
        assert got[2] == 4
    else:
        assert got == waits


async def test_forward_request_passes_timeout_and_fails_on_error_status() -> None:
    _, _, services = await run(doc(backend='<forward-request timeout="7" />'))
    assert services.forwarded[0]["timeout"] == 7
    result, context, _ = await run(doc(backend='<forward-request fail-on-error-status-code="true" />'), FakeServices([503]))
    assert result is not None and result.status == 503
    assert context.LastError.Reason == "BackendErrorStatus"


async def test_on_error_return_response_replaces_refusal() -> None:
    xml = doc(
        inbound='<rate-limit-by-key calls="1" renewal-period="60" counter-key="solo" />',
        on_error='<choose><when condition="@(context.LastError.Reason == &quot;RateLimitExceeded&quot;)"><return-response>'
        '<set-status code="503" reason="Busy" /><set-body>@(context.LastError.Message)</set-body></return-response></when></choose>',
    )
    services = FakeServices()
    pipeline = pipeline_of(xml)
    await pipeline.execute(make_context(services))
    result = await pipeline.execute(make_context(services))
    assert result is not None and result.status == 503
    assert result.body.decode().startswith("Rate limit is exceeded.")


async def test_backend_section_without_forward_request_is_an_error() -> None:
    result, context, _ = await run(doc(backend='<set-variable name="x" value="1" />'))
    assert result is not None and result.status == 500
    assert context.LastError.Reason == "NoForwardRequest"


FAILOVER = (
    '<retry condition="@(context.Response.StatusCode == 429)" count="1" interval="0">'
    '<choose><when condition="@(context.Response.StatusCode == 429)"><set-backend-service backend-id="secondary" /></when>'
    '<otherwise><set-backend-service backend-id="primary" /></otherwise></choose>'
    "<forward-request /></retry>"
)


@pytest.mark.parametrize(("statuses", "backends"), [([200], ["primary"]), ([429, 200], ["primary", "secondary"])])
async def test_retry_failover_choose_reads_context_response_in_its_first_pass(statuses: list, backends: list[str]) -> None:
    result, context, services = await run(doc(backend=FAILOVER), FakeServices(statuses))
    assert result is None and context.Response.StatusCode == 200
    assert [sent["backend_id"] for sent in services.forwarded] == backends


async def test_retry_stand_in_response_never_reaches_the_client() -> None:
    inbound = '<retry condition="@(false)" count="0" interval="0"><set-variable name="seen" value="@(context.Response.StatusCode)" /></retry>'
    _, context, services = await run(doc(inbound=inbound))
    assert context.Variables["seen"] == 200
    assert len(services.forwarded) == 1 and context.Response.Body.content == b'{"status":200}'  # the backend's, not the stand-in
    result, context, _ = await run(doc(inbound=inbound, backend='<set-variable name="x" value="1" />'))
    assert result is not None and context.LastError.Reason == "NoForwardRequest"
