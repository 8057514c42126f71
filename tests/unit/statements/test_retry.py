"""`retry`: its statements run again while the condition holds, with the waits between attempts."""

from __future__ import annotations

import pytest

from policies.statement import Loader
from policies.statements.retry import Retry
from tests.policy_helpers import FakeServices, doc, make_context, run_document

RETRY = '<retry condition="@(context.Response.StatusCode == 429)" count="{count}" interval="0">{body}</retry>'


@pytest.mark.parametrize(
    ("statuses", "count", "calls", "final"), [([429, 429, 200], 2, 3, 200), ([429, 429, 429, 200], 2, 3, 429), ([200], 3, 1, 200)]
)
async def test_retry_reruns_body_while_condition_holds(statuses: list, count: int, calls: int, final: int) -> None:
    xml = doc(backend=RETRY.format(count=count, body="<forward-request />"))
    _, context, services = await run_document(xml, FakeServices(statuses))
    assert len(services.forwarded) == calls
    assert context.Response.StatusCode == final


async def test_retry_retries_unreachable_backend_then_fails_into_on_error() -> None:
    xml = doc(
        backend=RETRY.format(count=1, body="<forward-request />"),
        on_error='<set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header>',
    )
    result, context, services = await run_document(xml, FakeServices(["down", "down"]))
    assert len(services.forwarded) == 2
    assert result is not None and result.status == 502
    assert ("x-reason", "BackendConnectionFailure") in result.headers
    assert context.LastError.Source == "forward-request" and context.LastError.Section == "backend"


async def test_retry_recovers_from_one_unreachable_attempt() -> None:
    _, context, services = await run_document(doc(backend=RETRY.format(count=2, body="<forward-request />")), FakeServices(["down", 200]))
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


FAILOVER = (
    '<retry condition="@(context.Response.StatusCode == 429)" count="1" interval="0">'
    '<choose><when condition="@(context.Response.StatusCode == 429)"><set-backend-service backend-id="secondary" /></when>'
    '<otherwise><set-backend-service backend-id="primary" /></otherwise></choose>'
    "<forward-request /></retry>"
)


@pytest.mark.parametrize(("statuses", "backends"), [([200], ["primary"]), ([429, 200], ["primary", "secondary"])])
async def test_retry_failover_choose_reads_context_response_in_its_first_pass(statuses: list, backends: list[str]) -> None:
    result, context, services = await run_document(doc(backend=FAILOVER), FakeServices(statuses))
    assert result is None and context.Response.StatusCode == 200
    assert [sent["backend_id"] for sent in services.forwarded] == backends


async def test_retry_stand_in_response_never_reaches_the_client() -> None:
    inbound = '<retry condition="@(false)" count="0" interval="0"><set-variable name="seen" value="@(context.Response.StatusCode)" /></retry>'
    _, context, services = await run_document(doc(inbound=inbound))
    assert context.Variables["seen"] == 200
    assert len(services.forwarded) == 1 and context.Response.Body.content == b'{"status":200}'  # the backend's, not the stand-in
    result, context, _ = await run_document(doc(inbound=inbound, backend='<set-variable name="x" value="1" />'))
    assert result is not None and context.LastError.Reason == "NoForwardRequest"
