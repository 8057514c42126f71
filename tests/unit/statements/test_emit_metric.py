"""`emit-metric`: a custom metric with its value and dimensions, recorded by a fake."""

from __future__ import annotations

import pytest

from policies.errors import PolicyLoadError
from tests.policy_helpers import doc, pipeline_of, run_document

EMIT = """<emit-metric name="Requests by tier" value="@(context.Request.Headers.GetValueOrDefault(&quot;x-n&quot;, &quot;2.5&quot;))" namespace="contoso">
    <dimension name="Subscription ID" />
    <dimension name="Tier" value='@(context.Request.Headers.GetValueOrDefault("x-tier", "free"))' />
</emit-metric>"""


async def test_value_and_dimensions_are_evaluated_when_it_runs() -> None:
    _, _, services = await run_document(doc(outbound=EMIT), headers=[("x-tier", "gold")])
    assert services.metrics.custom == [("contoso", "Requests by tier", 2.5, [("Subscription ID", "sub-1"), ("Tier", "gold")])]


async def test_defaults_are_value_one_and_apims_namespace() -> None:
    _, _, services = await run_document(doc(inbound='<emit-metric name="Calls" />'))
    assert services.metrics.custom == [("API Management", "Calls", 1.0, [])]


async def test_a_value_that_is_not_a_number_fails_like_an_expression() -> None:
    result, context, services = await run_document(doc(inbound=EMIT), headers=[("x-n", "many")])
    assert result is not None and result.status == 500 and "is not a number" in context.LastError.Message
    assert services.metrics.custom == []


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<emit-metric value="1" />', "'name' is required"),
        ('<emit-metric name="@(&quot;x&quot;)" />', "does not accept policy expressions"),
        ('<emit-metric name="m" value="lots" />', "expected a number"),
        ('<emit-metric name="m"><dimension name="Client IP" /></emit-metric>', "needs a value"),
        ('<emit-metric name="m"><dimension name="API ID" /><dimension name="API ID" /></emit-metric>', "appears twice"),
        ('<emit-metric name="m">' + "".join(f'<dimension name="d{i}" value="v" />' for i in range(11)) + "</emit-metric>", "at most 10"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement))
