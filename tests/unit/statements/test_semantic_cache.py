"""`azure-openai-semantic-cache-lookup` / `-store` (and their `llm-` aliases) against a fake cache: hits answered from
the cache, misses stored with their usage, bypasses, and load errors."""

from __future__ import annotations

import orjson
import pytest

from policies.errors import PolicyLoadError
from policies.semantic_cache import CachedAnswer, CacheLookup, CacheQuery
from policies.statement import Loader
from policies.usage import Usage
from tests.policy_helpers import FakeServices, make_context, pipeline_of, report_usage
from tests.unit.test_semantic_cache import CACHED, answer

LOADER = Loader(backend_ids=frozenset({"primary", "secondary", "emb"}), embeddings_backend_ids=frozenset({"emb"}))
LOOKUP = '<azure-openai-semantic-cache-lookup score-threshold="{threshold}" embeddings-backend-id="emb" embeddings-backend-auth="system-assigned" {extra}>{children}</azure-openai-semantic-cache-lookup>'


def document(threshold: str = "0.1", extra: str = "", children: str = "", store: str = '<azure-openai-semantic-cache-store duration="60" />') -> str:
    lookup = LOOKUP.format(threshold=threshold, extra=extra, children=children)
    return f"<policies><inbound><base />{lookup}</inbound><outbound><base />{store}</outbound></policies>"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (document(threshold="1.5"), "'score-threshold' has value '1.5': it must be at most 1"),
        (document().replace('embeddings-backend-id="emb"', 'embeddings-backend-id="nope"'), "Unknown embeddings-backend-id 'nope'"),
        (
            document().replace('embeddings-backend-id="emb"', 'embeddings-backend-id="primary"'),
            'has no embeddings deployment: add "embeddings_deployment"',
        ),
        (document().replace("system-assigned", "user-assigned"), "use one of system-assigned"),
        (document(children="<vary-by a='1'>x</vary-by>"), "Unknown attribute 'a'"),
        (document(children="<cache-key />"), "Unexpected element"),
        (document(store="<azure-openai-semantic-cache-store />"), "'duration' is required"),
        ("<policies><inbound><azure-openai-semantic-cache-store duration='1' /></inbound></policies>", "Not allowed in <inbound>"),
    ],
)
def test_load_errors_name_the_attribute(xml: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(xml, LOADER)


class FakeCache:
    scope = "subscription"

    def __init__(self, lookup: CacheLookup) -> None:
        self.result = lookup
        self.queries: list[CacheQuery] = []
        self.stored: list[tuple[object, CachedAnswer, float]] = []

    async def lookup(self, context: object, query: CacheQuery) -> CacheLookup:
        self.queries.append(query)
        return self.result

    def store(self, ticket: object, answer: CachedAnswer, ttl_seconds: float) -> None:
        self.stored.append((ticket, answer, ttl_seconds))


def services_with(lookup: CacheLookup) -> tuple[FakeServices, FakeCache]:
    services = FakeServices()
    cache = FakeCache(lookup)
    services.semantic_cache = cache  # type: ignore[attr-defined]
    return services, cache


async def test_hit_answers_from_cache_with_headers_and_saved_usage() -> None:
    services, cache = services_with(CacheLookup("HIT", 0.01234, CACHED))
    context = make_context(services, body={"messages": [{"role": "user", "content": "capital?"}], "stream": True})
    result = await pipeline_of(document(children='<vary-by>@(context.Request.Headers.GetValueOrDefault("x-user-id", ""))</vary-by>'), LOADER).execute(
        context
    )
    assert result is not None and result.status == 200 and b"data: [DONE]" in result.body
    assert services.forwarded == []
    assert ("x-semantic-cache", "HIT") in context.response_headers and ("x-semantic-cache-distance", "0.0123") in context.response_headers
    assert context.cache_hit_usage == Usage(prompt=9, completion=8, total=17, from_cache=True)
    (query,) = cache.queries
    assert (query.text, query.embeddings_backend_id, query.threshold) == ("user: capital?", "emb", 0.1)
    other_user = make_context(services, headers=[("x-user-id", "bob")], body={"messages": [{"role": "user", "content": "capital?"}]})
    await pipeline_of(document(children='<vary-by>@(context.Request.Headers.GetValueOrDefault("x-user-id", ""))</vary-by>'), LOADER).execute(
        other_user
    )
    assert cache.queries[1].partition != query.partition


async def test_miss_forwards_and_stores_the_answer_with_its_usage() -> None:
    services, cache = services_with(CacheLookup("MISS", 0.5, ticket="ticket-1"))
    context = make_context(services)
    assert await pipeline_of(document(), LOADER).execute(context) is None
    assert ("x-semantic-cache", "MISS") in context.response_headers and ("x-semantic-cache-distance", "0.5000") in context.response_headers
    usage = Usage(prompt=2, completion=3, total=5)
    await report_usage(context, usage)  # the gateway reports usage before telling body listeners
    (store,) = context.body_listeners
    await store(200, orjson.dumps(answer()))
    await store(500, orjson.dumps(answer()))  # not 200: not stored
    await store(200, orjson.dumps(answer("length")))  # truncated: not stored
    ((ticket, cached, ttl),) = cache.stored
    assert (ticket, ttl, cached.usage) == ("ticket-1", 60, usage)
    assert orjson.loads(cached.body)["usage"]["total_tokens"] == 5


@pytest.mark.parametrize(
    ("extra", "body"),
    [
        ('max-message-count="1"', {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        ("", {"input": "embeddings are not cached", "messages": "not a list"}),
    ],
)
async def test_bypass_skips_the_cache(extra: str, body: dict) -> None:
    services, cache = services_with(CacheLookup("MISS"))
    context = make_context(services, body=body)
    assert await pipeline_of(document(extra=extra), LOADER).execute(context) is None
    assert ("x-semantic-cache", "BYPASS") in context.response_headers and cache.queries == []
    assert context.body_listeners == [] and context.cache_ticket is None


async def test_max_message_count_counts_after_dropping_system_messages() -> None:
    services, cache = services_with(CacheLookup("MISS"))
    body = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}
    context = make_context(services, body=body)
    await pipeline_of(document(extra='ignore-system-messages="true" max-message-count="1"'), LOADER).execute(context)
    assert ("x-semantic-cache", "MISS") in context.response_headers and len(cache.queries) == 1


async def test_threshold_expression_out_of_range_is_an_expression_error() -> None:
    services, _ = services_with(CacheLookup("MISS"))
    context = make_context(services, headers=[("x-threshold", "2")])
    xml = document(threshold='@(context.Request.Headers.GetValueOrDefault("x-threshold", "0.1"))')
    result = await pipeline_of(xml, LOADER).execute(context)
    assert result is not None and result.status == 500
    assert "'score-threshold' must be a number from 0 to 1" in context.LastError.Message  # type: ignore[union-attr]


def test_llm_aliases_load() -> None:
    xml = document().replace("azure-openai-semantic-cache", "llm-semantic-cache")
    pipeline = pipeline_of(xml, LOADER)
    assert [type(s).__name__ for s in pipeline.inbound] == ["SemanticCacheLookup"]
    assert [type(s).__name__ for s in pipeline.outbound] == ["SemanticCacheStore"]
