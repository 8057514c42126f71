"""`rate-limit` and `rate-limit-by-key`: calls per renewal period per subscription or key, 429 past them."""

from __future__ import annotations

import orjson

from tests.policy_helpers import FakeServices, doc, make_context, pipeline_of


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
