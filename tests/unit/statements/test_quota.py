"""`quota` and `quota-by-key`: calls and kilobytes per renewal period, 403 past them, counted once per request."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.statement import Loader
from policies.statements.quota import QuotaByKey
from policies.xml import parse
from tests.policy_helpers import FakeServices, doc, make_context, pipeline_of


async def statuses(xml: str, services: FakeServices, requests: int, **context_args: object) -> list[int]:
    pipeline = pipeline_of(xml)
    answers = []
    for _ in range(requests):
        result = await pipeline.execute(make_context(services, **context_args))  # type: ignore[arg-type]
        answers.append(result.status if result else 200)
    return answers


async def test_calls_past_the_quota_are_refused_with_apims_message_and_retry_after() -> None:
    services = FakeServices()
    xml = doc(inbound='<quota-by-key calls="2" renewal-period="3600" counter-key="@(context.Request.IpAddress)" />')
    assert await statuses(xml, services, 3) == [200, 200, 403]
    refused = make_context(services)
    result = await pipeline_of(xml).execute(refused)
    assert result is not None and refused.LastError.Reason == "QuotaExceeded"
    retry_after = int(dict(result.headers)["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert orjson.loads(result.body)["error"]["message"].startswith("Out of call volume quota. Quota will be replenished in 0")
    assert await statuses(xml, services, 1, ip="10.9.9.9") == [200]


async def test_increment_condition_gives_back_calls_that_do_not_count() -> None:
    xml = doc(inbound='<quota-by-key calls="1" renewal-period="600" counter-key="k" increment-condition="@(context.Response.StatusCode == 200)" />')
    # The backend's two 500s are relayed (200 here means "not refused by policy") and were not counted.
    assert await statuses(xml, FakeServices([500, 500, 200, 200]), 4) == [200, 200, 200, 403]


async def test_bandwidth_counts_request_and_answer_kilobytes() -> None:
    services = FakeServices()
    big = {"messages": [{"role": "user", "content": "x" * 3000}]}  # 3 KB request, tiny answer
    xml = doc(inbound='<quota-by-key bandwidth="7" renewal-period="600" counter-key="bw" />')
    assert await statuses(xml, services, 3, body=big) == [200, 200, 403]  # 3+1, then 3+1 would pass 7
    message = orjson.loads((await pipeline_of(xml).execute(make_context(services, body=big))).body)["error"]["message"]  # type: ignore[union-attr]
    assert message.startswith("Out of bandwidth quota.")


async def test_a_key_named_at_two_scopes_counts_once_per_request() -> None:
    twice = doc(
        inbound='<quota-by-key calls="2" renewal-period="600" counter-key="same" /><quota-by-key calls="2" renewal-period="600" counter-key="same" />'
    )
    assert await statuses(twice, FakeServices(), 3) == [200, 200, 403]


async def test_quota_is_per_subscription_and_lifetime_has_no_retry_after() -> None:
    services = FakeServices()
    xml = doc(inbound='<quota calls="1" renewal-period="0" />')
    assert await statuses(xml, services, 2) == [200, 403]
    result = await pipeline_of(xml).execute(make_context(services))
    assert result is not None and "Retry-After" not in dict(result.headers)
    assert orjson.loads(result.body)["error"]["message"] == "Out of call volume quota."


def test_periods_count_from_first_period_start() -> None:
    element = parse('<quota-by-key calls="1" renewal-period="86400" counter-key="k" first-period-start="2026-01-01T06:00:00Z" />')
    quota = QuotaByKey.load(element, Loader())
    now = dt.datetime(2026, 3, 10, 5, 0, tzinfo=dt.UTC).timestamp()
    window = quota.window(now)
    assert window.end == dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC).timestamp()
    assert quota.window(now + 3600).id != window.id


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ('<quota-by-key renewal-period="60" counter-key="k" />', "Set calls, bandwidth, or both"),
        ('<quota-by-key calls="@(5)" renewal-period="60" counter-key="k" />', "does not accept policy expressions"),
        ('<quota-by-key calls="5" renewal-period="60" counter-key="k" first-period-start="soon" />', "first-period-start"),
        ('<quota calls="5" renewal-period="60"><api name="x" calls="1" /></quota>', "quota-by-key"),
    ],
)
def test_load_errors(element: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        load_document(doc(inbound=element), Scope("api", "openai"), Loader())
