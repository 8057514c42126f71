"""`azure-openai-emit-token-metric` / `llm-emit-token-metric`: token usage recorded with default and custom dimensions."""

from __future__ import annotations

import pytest

from policies.usage import Usage
from tests.policy_helpers import FakeServices, inbound, make_context, pipeline_of, report_usage


async def test_emit_token_metric_records_default_and_custom_dimensions() -> None:
    services = FakeServices()
    xml = inbound(
        '<azure-openai-emit-token-metric namespace="openai"><dimension name="Subscription ID" /><dimension name="Backend ID" />'
        '<dimension name="User ID" /><dimension name="Client IP" value="@(context.Request.IpAddress)" /></azure-openai-emit-token-metric>'
    )
    context = make_context(services)
    await pipeline_of(xml).execute(context)
    context.backend_used = "east"
    await report_usage(context, Usage(prompt=5, completion=6, total=11, cached=2))
    ((namespace, dimensions, usage, subscription, deployment),) = services.metrics.records
    assert namespace == "openai"
    assert dimensions == [("Subscription ID", "sub-1"), ("Backend ID", "east"), ("User ID", ""), ("Client IP", "10.1.2.3")]
    assert usage.total == 11 and usage.cached == 2
    assert (subscription, deployment) == ("sub-1", "gpt-4o")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('<dimension name="Colour" />', "needs a value"),
        ('<dimension name="API ID" /><dimension name="API ID" />', "appears twice"),
        ("".join(f'<dimension name="d{i}" value="x" />' for i in range(11)), "at most 10"),
    ],
)
def test_emit_token_metric_dimension_errors(body: str, message: str) -> None:
    from policies.errors import PolicyLoadError

    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(inbound(f"<llm-emit-token-metric>{body}</llm-emit-token-metric>"))
