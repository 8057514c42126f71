"""`azure-openai-token-limit` / `llm-token-limit`: tokens per minute and token quotas reserved on admission and
settled to real usage, with in-memory counters and a scripted backend."""

from __future__ import annotations

import orjson
import pytest

from policies.counters import Window
from policies.usage import Usage
from tests.policy_helpers import FakeServices, inbound, make_context, pipeline_of, report_usage

TPM = '<azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="100" estimate-prompt-tokens="true" {extra} />'


async def admit(pipeline, services: FakeServices, usage: Usage | None = None):  # type: ignore[no-untyped-def]
    context = make_context(services)
    result = await pipeline.execute(context)
    if result is None:
        await report_usage(context, usage or Usage(prompt=10, completion=20, total=30))
    return result, context


async def test_reservation_admits_until_limit_then_429_with_retry_after() -> None:
    services = FakeServices(prompt_tokens=10, allowance=20)  # each request reserves 30
    pipeline = pipeline_of(inbound(TPM.format(extra='remaining-tokens-header-name="x-remaining" retry-after-variable-name="wait"')))
    remaining = []
    for _ in range(3):
        result, context = await admit(pipeline, services)
        assert result is None
        remaining.append(dict(context.response_headers)["x-remaining"])
    assert remaining == ["70", "40", "10"]
    refused, context = await admit(pipeline, services)
    assert refused is not None and refused.status == 429
    retry_after = int(dict(refused.headers)["Retry-After"])
    assert 1 <= retry_after <= 60 and context.Variables["wait"] == retry_after
    assert orjson.loads(refused.body)["error"]["message"] == f"Token limit is exceeded. Try again in {retry_after} seconds."
    assert context.LastError.Reason == "OpenAITokenLimitExceeded"
    assert dict(context.response_headers)["x-remaining"] == "10"


async def test_settling_to_real_usage_gives_unused_reservation_back() -> None:
    services = FakeServices(prompt_tokens=10, allowance=40)  # reserves 50 of 100
    pipeline = pipeline_of(inbound(TPM.format(extra="")))
    for _ in range(5):  # each really uses 12: 60 in total, but two reservations of 50 never fit at once
        result, _ = await admit(pipeline, services, Usage(prompt=10, completion=2, total=12))
        assert result is None
    result, _ = await admit(pipeline, services)  # 60 used + 50 reserved > 100
    assert result is not None and result.status == 429


async def test_usage_beyond_reservation_is_charged() -> None:
    services = FakeServices(prompt_tokens=10, allowance=10)
    pipeline = pipeline_of(inbound(TPM.format(extra="")))
    result, _ = await admit(pipeline, services, Usage(prompt=10, completion=80, total=90))
    assert result is None
    result, _ = await admit(pipeline, services)
    assert result is not None and result.status == 429


async def test_quota_refusal_is_403_and_gives_back_the_rate_reservation() -> None:
    services = FakeServices(prompt_tokens=10, allowance=20)
    xml = inbound(
        '<llm-token-limit counter-key="k" tokens-per-minute="1000" token-quota="50" token-quota-period="Monthly" '
        'estimate-prompt-tokens="false" remaining-quota-tokens-variable-name="quota-left" remaining-tokens-variable-name="rate-left" />'
    )
    pipeline = pipeline_of(xml)
    result, context = await admit(pipeline, services)
    assert result is None and context.Variables["quota-left"] == 20
    refused, context = await admit(pipeline, services)
    assert refused is not None and refused.status == 403
    assert context.LastError.Reason == "OpenAITokenQuotaExceeded"
    assert orjson.loads(refused.body)["error"]["message"].startswith("Token quota is exceeded. Try again in ")
    # The refused request's 30-token rate reservation was given back: only the first request's 30 remain used.
    rate = await services.counters.acquire("tpm:k", Window.fixed(60), 970, 1000)
    assert rate.allowed


async def test_consumed_tokens_variable_and_header_with_old_attribute_names() -> None:
    services = FakeServices(prompt_tokens=7, allowance=5)
    xml = inbound(
        '<azure-openai-token-limit counter-key="c" tokens-per-minute="1000" estimate-prompt-tokens="true" '
        'consumed-tokens-header-name="x-consumed" consumed-tokens-variable-name="consumed" />'
    )
    pipeline = pipeline_of(xml)
    context = make_context(services)
    assert await pipeline.execute(context) is None
    assert context.Variables["consumed"] == 7  # the prompt estimate until usage is known
    await report_usage(context, Usage(prompt=7, completion=3, total=10))
    assert context.Variables["consumed"] == 10
    assert ("x-consumed", "10") in context.response_headers


async def test_estimate_prompt_tokens_false_starts_consumed_at_zero() -> None:
    xml = inbound(
        '<llm-token-limit counter-key="c" tokens-per-minute="1000" estimate-prompt-tokens="false" tokens-consumed-variable-name="consumed" />'
    )
    context = make_context(FakeServices(prompt_tokens=7))
    await pipeline_of(xml).execute(context)
    assert context.Variables["consumed"] == 0


async def test_custom_retry_after_header_name() -> None:
    services = FakeServices(prompt_tokens=60, allowance=60)
    pipeline = pipeline_of(inbound(TPM.format(extra='retry-after-header-name="x-retry-in"')))
    refused, _ = await admit(pipeline, services)
    assert refused is not None and "x-retry-in" in dict(refused.headers) and "Retry-After" not in dict(refused.headers)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ('counter-key="k" estimate-prompt-tokens="true"', "Set tokens-per-minute, token-quota"),
        ('counter-key="k" token-quota="5" estimate-prompt-tokens="true"', "go together"),
        ('counter-key="k" tokens-per-minute="5"', "'estimate-prompt-tokens' is required"),
        ('counter-key="k" token-quota="5" token-quota-period="Fortnightly" estimate-prompt-tokens="true"', "Hourly, Daily, Weekly, Monthly, Yearly"),
        (
            'counter-key="k" tokens-per-minute="5" estimate-prompt-tokens="true" retry-after-header-name="@(context.Api.Id)"',
            "does not accept policy expressions",
        ),
    ],
)
def test_token_limit_attribute_errors(attributes: str, message: str) -> None:
    from policies.errors import PolicyLoadError

    with pytest.raises(PolicyLoadError, match=message.replace("(", r"\(")):
        pipeline_of(inbound(f"<llm-token-limit {attributes} />"))


async def test_prompt_ceiling_is_the_largest_limit_minus_the_completion_allowance() -> None:
    services = FakeServices(prompt_tokens=10, allowance=20)
    both = '<azure-openai-token-limit counter-key="k" tokens-per-minute="100" token-quota="500" token-quota-period="Monthly" estimate-prompt-tokens="true" />'
    await admit(pipeline_of(inbound(both)), services)
    await admit(pipeline_of(inbound(TPM.format(extra=""))), services)
    tiny = '<azure-openai-token-limit counter-key="k" tokens-per-minute="5" estimate-prompt-tokens="true" />'
    await admit(pipeline_of(inbound(tiny)), services)
    assert services.ceilings == [480, 80, 0]  # a prompt above it is refused whatever its exact count
