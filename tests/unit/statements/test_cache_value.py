"""`cache-lookup-value`, `cache-store-value` and `cache-remove-value` over a fake value cache."""

from __future__ import annotations

import pytest

from policies.errors import PolicyLoadError
from tests.policy_helpers import FakeServices, doc, pipeline_of, run_document

LOOKUP = '<cache-lookup-value key="@(context.Request.Headers.GetValueOrDefault(&quot;x-key&quot;, &quot;&quot;))" variable-name="v" {extra} />'


async def test_lookup_hit_sets_the_variable_and_a_miss_leaves_it_unset_or_default() -> None:
    services = FakeServices()
    await services.value_cache.store("k1", {"a": 1}, 60)
    _, hit, _ = await run_document(doc(inbound=LOOKUP.format(extra="")), services, headers=[("x-key", "k1")])
    assert hit.Variables.get("v") == {"a": 1}
    _, miss, _ = await run_document(doc(inbound=LOOKUP.format(extra="")), services, headers=[("x-key", "other")])
    assert not miss.Variables.ContainsKey("v")
    _, default, _ = await run_document(doc(inbound=LOOKUP.format(extra='default-value="@(42)"')), services, headers=[("x-key", "other")])
    assert default.Variables.get("v") == 42


async def test_store_and_remove_use_the_evaluated_key_value_and_duration() -> None:
    store = doc(
        inbound='<set-variable name="n" value="@(7)" /><cache-store-value key="@(&quot;user-&quot; + context.Subscription.Id)" value="@(context.Variables[&quot;n&quot;])" duration="@(30 * 2)" caching-type="internal" />'
    )
    _, _, services = await run_document(store)
    assert services.value_cache.values == {"user-sub-1": (7, 60)}
    _, _, services = await run_document(doc(inbound='<cache-remove-value key="user-sub-1" caching-type="external" />'), services)
    assert services.value_cache.values == {}


async def test_a_duration_that_is_not_positive_stores_nothing() -> None:
    _, _, services = await run_document(doc(inbound='<cache-store-value key="k" value="v" duration="@(0)" />'))
    assert services.value_cache.values == {}


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<cache-lookup-value key="k" />', "'variable-name' is required"),
        ('<cache-lookup-value key="k" variable-name="v" caching-type="redis" />', "use one of internal, external, prefer-external"),
        ('<cache-lookup-value key="k" variable-name="@(1)" />', "does not accept policy expressions"),
        ('<cache-store-value key="k" value="v" />', "'duration' is required"),
        ('<cache-store-value key="k" value="v" duration="0" />', "at least 1"),
        ('<cache-store-value key="k" value="v" duration="99999999" />', "at most"),
        ("<cache-remove-value />", "'key' is required"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement))
