"""The semantic cache without processes: what is embedded, partitions, what may be stored, SSE replay, the table
entity format, the configuration, and the service's bounds. The two statements' tests are in
tests/unit/statements/test_semantic_cache.py."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import re
import time
import zlib

import numpy as np
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from gateway.backends.config import parse_backends
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import SemanticCacheSettings, Settings
from gateway.errors import BackendError, BackendTimeout, StorageUnavailable
from gateway.handling.timing import ServerTiming
from gateway.handling.usage import StreamTap
from gateway.stores import cache_outages, semantic_cache_rows
from gateway.stores import semantic_cache as service
from gateway.stores.tables import Query, Row
from policies.semantic_cache import (
    MAX_PROMPT_CHARS,
    CachedAnswer,
    CacheLookup,
    CacheQuery,
    cache_prompt,
    partition_key,
    replay,
    storable,
    tenant,
    with_usage,
)
from policies.usage import Usage
from tests.function_metadata import function_bindings
from tests.policy_helpers import make_context

CHAT = "ChatCompletions_Create"


def chat_body(*messages: tuple[str, object], **params: object) -> bytes:
    return orjson.dumps({"messages": [{"role": role, "content": content} for role, content in messages], **params})


def prompt_of(body: bytes, ignore_system: bool = True, operation: str = CHAT):  # type: ignore[no-untyped-def]
    prompt = cache_prompt(operation, body, ignore_system)
    assert prompt is not None
    return prompt


# --- what is embedded ---------------------------------------------------------------------------------------


def test_embedded_text_is_the_non_system_messages_in_order_with_roles() -> None:
    body = chat_body(("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello!"), ("developer", "Be nice."), ("user", "Capital of France?"))
    assert prompt_of(body).text == "user: Hi\nassistant: Hello!\nuser: Capital of France?"
    assert prompt_of(body).message_count == 3
    kept = prompt_of(body, ignore_system=False)
    assert kept.text.startswith("system: You are terse.\nuser: Hi") and kept.message_count == 5


def test_text_parts_are_joined_and_other_parts_partition() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_image = prompt_of(chat_body(("user", [{"type": "text", "text": "What is"}, {"type": "text", "text": "this?"}, image])))
    other_image = prompt_of(
        chat_body(
            (
                "user",
                [
                    {"type": "text", "text": "What is"},
                    {"type": "text", "text": "this?"},
                    {**image, "image_url": {"url": "https://example.com/b.png"}},
                ],
            )
        )
    )
    assert with_image.text == "user: What is\nthis?"
    assert with_image.fingerprint != other_image.fingerprint


def test_completions_embed_the_prompt() -> None:
    assert prompt_of(orjson.dumps({"prompt": "Once upon a time"}), operation="Completions_Create").text == "Once upon a time"
    assert prompt_of(orjson.dumps({"prompt": ["Once"]}), operation="createCompletion").kind == "completions"


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("embeddings_create", orjson.dumps({"input": "x"})),
        (CHAT, b"not json"),
        (CHAT, orjson.dumps({"messages": []})),
        (CHAT, orjson.dumps({"messages": [{"role": "system", "content": "only a system prompt"}]})),
        (CHAT, chat_body(("user", "x"), logprobs=True)),
        ("Completions_Create", orjson.dumps({"prompt": ["one", "two"]})),
        ("Completions_Create", orjson.dumps({"prompt": [1, 2, 3]})),
    ],
)
def test_what_is_not_cacheable(operation: str, body: bytes) -> None:
    assert cache_prompt(operation, body, True) is None


def test_prompts_too_long_to_embed_are_not_cached() -> None:
    longest = "x" * (MAX_PROMPT_CHARS - len("user: "))
    assert prompt_of(chat_body(("user", longest))).text == "user: " + longest
    assert cache_prompt(CHAT, chat_body(("user", longest + "x")), True) is None
    assert cache_prompt("Completions_Create", orjson.dumps({"prompt": "p" * (MAX_PROMPT_CHARS + 1)}), True) is None


def test_fields_nested_deeper_than_a_fingerprint_can_be_written_are_not_cached() -> None:
    nested = "[" * 300 + '"deep"' + "]" * 300  # parsing accepts 1,024 levels, writing the fingerprint only 254
    body = '{"messages": [{"role": "user", "content": "hi"}], "metadata": %s}' % nested
    assert cache_prompt(CHAT, body.encode(), True) is None
    part = '{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": %s}]}]}' % nested
    assert cache_prompt(CHAT, part.encode(), True) is None


# --- partitions ---------------------------------------------------------------------------------------------


def key(body: bytes, owner: str = "subscription:s1", deployment: str = "gpt-4o", vary_by: tuple[str, ...] = ()) -> str:
    return partition_key(owner, deployment, prompt_of(body), vary_by)


def test_paraphrases_share_a_partition_and_streaming_does_not_split_it() -> None:
    first = chat_body(("system", "Be brief."), ("user", "What is the capital of France?"), temperature=0)
    second = chat_body(
        ("system", "Be brief."), ("user", "Tell me France's capital"), temperature=0, stream=True, stream_options={"include_usage": True}, user="u1"
    )
    assert key(first) == key(second)
    assert prompt_of(second).stream and prompt_of(second).include_usage


def test_tenant_deployment_and_vary_by_always_partition() -> None:
    body = chat_body(("user", "hi"))
    keys = {
        key(body),
        key(body, owner="subscription:s2"),
        key(body, owner="product:gold"),
        key(body, deployment="gpt-4o-mini"),
        key(body, vary_by=("alice",)),
        key(body, vary_by=("ab", "c")),
        key(body, vary_by=("a", "bc")),
    }
    assert len(keys) == 7
    assert key(body, vary_by=("",)) != key(body)  # an empty vary-by still counts as one


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.2}, {"top_p": 0.5}, {"seed": 7}, {"n": 2}, {"max_tokens": 10}, {"stop": ["\n"]},
        {"presence_penalty": 1}, {"frequency_penalty": 1}, {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]}, {"tool_choice": "none"},
        {"functions": [{"name": "f"}]}, {"data_sources": [{"type": "azure_search"}]}, {"reasoning_effort": "low"},
    ],
)  # fmt: skip
def test_parameters_that_change_the_answer_partition(params: dict) -> None:
    assert key(chat_body(("user", "hi"))) != key(chat_body(("user", "hi"), **params))


def test_an_ignored_system_prompt_partitions_instead_of_being_embedded() -> None:
    terse, pirate = chat_body(("system", "Be terse."), ("user", "hi")), chat_body(("system", "Talk like a pirate."), ("user", "hi"))
    assert key(terse) != key(pirate)
    assert prompt_of(terse).text == prompt_of(pirate).text
    kept = prompt_of(terse, ignore_system=False), prompt_of(pirate, ignore_system=False)
    assert kept[0].fingerprint == kept[1].fingerprint and kept[0].text != kept[1].text


def test_tool_calls_in_the_conversation_partition() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    plain = orjson.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]})
    assert key(plain) != key(orjson.dumps({"messages": [{"role": "user", "content": "x"}, call]}))


def test_tenant_is_the_subscription_or_the_product() -> None:
    context = make_context(product="gold")
    assert tenant(context, "subscription") == "subscription:sub-1"
    assert tenant(context, "product") == "product:gold"
    assert tenant(make_context(product=None), "product") == "subscription:sub-1"
    context.Subscription = None
    assert tenant(context, "subscription") is None


# --- what is stored -----------------------------------------------------------------------------------------


def answer(finish: str = "stop", **message: object) -> dict:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "Paris.", **message}}],
    }


@pytest.mark.parametrize(
    ("status", "payload", "any_status", "expected"),
    [
        (200, answer(), False, True),
        (200, answer("length"), False, False),
        (200, answer("content_filter"), False, False),
        (200, answer("tool_calls", tool_calls=[{"id": "c"}]), False, False),
        (200, answer(function_call={"name": "f"}), False, False),
        (
            200,
            {**answer(), "choices": [{**answer()["choices"][0], "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}}}]},
            False,
            False,
        ),
        (
            200,
            {**answer(), "choices": [{**answer()["choices"][0], "content_filter_results": {"violence": {"filtered": False, "severity": "safe"}}}]},
            False,
            True,
        ),
        (
            200,
            {
                **answer(),
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False, "detected": True}}}],
            },
            False,
            False,
        ),
        (400, {"error": {"code": "BadRequest"}}, False, False),
        (400, {"error": {"code": "BadRequest"}}, True, True),
        (400, {"error": {"code": "content_filter", "innererror": {"code": "ResponsibleAIPolicyViolation"}}}, True, False),
    ],
)
def test_only_complete_unfiltered_answers_without_tool_calls_are_stored(status: int, payload: dict, any_status: bool, expected: bool) -> None:
    assert storable(status, orjson.dumps(payload), any_status) is expected


def test_with_usage_adds_usage_only_when_missing() -> None:
    usage = Usage(prompt=3, completion=4, total=7)
    assert orjson.loads(with_usage(orjson.dumps(answer()), usage))["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    own = orjson.dumps({**answer(), "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    assert with_usage(own, usage) == own


# --- replay -------------------------------------------------------------------------------------------------

STORED = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o", "system_fingerprint": "fp",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris is the capital."}},
                {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "It is Paris."}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
}  # fmt: skip
CACHED = CachedAnswer(200, orjson.dumps(STORED), Usage(prompt=9, completion=8, total=17))


def events_of(body: bytes) -> list[bytes]:
    events = [event for event in body.split(b"\n\n") if event]
    assert all(event.startswith(b"data: ") for event in events)
    return [event[6:] for event in events]


def test_stream_replay_has_the_backends_chunk_shape_and_reassembles_to_the_answer() -> None:
    response = replay(CACHED, stream=True, include_usage=True)
    assert ("content-type", "text/event-stream") in response.headers
    data = events_of(response.body)
    assert data[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(d)) for d in data[:-1]]
    assert [len(c.choices) for c in chunks] == [1, 1, 1, 1, 1, 1, 0]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert chunks[1].choices[0].delta.content == "Paris is the capital."
    assert chunks[2].choices[0].finish_reason == "stop" and chunks[2].choices[0].delta.content is None
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17
    assert {c.id for c in chunks} == {"chatcmpl-1"} and {c.object for c in chunks} == {"chat.completion.chunk"}
    tap = StreamTap(assemble=True)
    tap.feed(response.body)
    assert orjson.loads(tap.assembled() or b"")["choices"] == STORED["choices"]


def test_stream_replay_without_include_usage_has_no_usage_at_all() -> None:
    data = events_of(replay(CACHED, stream=True, include_usage=False).body)
    assert all(b'"usage"' not in d for d in data)


def test_completion_replay_and_buffered_replay() -> None:
    stored = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": "upon a time", "finish_reason": "stop"}],
    }
    data = events_of(replay(CachedAnswer(200, orjson.dumps(stored), Usage()), stream=True, include_usage=False).body)
    chunks = [orjson.loads(d) for d in data[:-1]]  # as the backend streams them: finish_reason null until the last
    assert [(c["object"], c["choices"][0]["text"], c["choices"][0]["finish_reason"]) for c in chunks] == [
        ("text_completion", "upon a time", None),
        ("text_completion", "", "stop"),
    ]
    buffered = replay(CACHED, stream=False, include_usage=True)
    assert buffered.status == 200 and buffered.body == CACHED.body and ("content-type", "application/json") in buffered.headers
    error = replay(CachedAnswer(400, b'{"error": {}}', Usage()), stream=True, include_usage=False)
    assert error.status == 400 and error.body == b'{"error": {}}'


# --- table entities -----------------------------------------------------------------------------------------


def test_binary_values_split_into_64_kib_properties_and_join_back() -> None:
    data = bytes(range(256)) * 600  # 150 KiB
    parts = semantic_cache_rows.split_binary("Answer", data)
    assert list(parts) == ["Answer", "Answer1", "Answer2"] and all(len(p) <= 64 * 1024 for p in parts.values())
    assert semantic_cache_rows.join_binary(parts, "Answer") == data
    assert semantic_cache_rows.split_binary("Answer", b"") == {"Answer": b""}


def test_entity_round_trip_compressed_and_too_large_entries_refused() -> None:
    vector = np.linspace(-1, 1, 1536).astype(np.float32)
    body = orjson.dumps({**STORED, "pad": "x" * 200_000})
    entry = semantic_cache_rows.Entry(200, zlib.compress(body), Usage(prompt=9, completion=8, total=17))
    entity = semantic_cache_rows.encode_entity("p", "r", vector, entry, 1_900_000_000.0)
    assert entity is not None and len(entry.answer) < 10_000  # compressed
    assert isinstance(entity["Embedding"], bytes) and len(entity["Embedding"]) == 1536 * 4
    row_key, decoded, expires, restored = semantic_cache_rows.decode_entity(entity)
    assert (row_key, expires) == ("r", 1_900_000_000.0) and np.array_equal(decoded, vector)
    assert restored.cached_answer() == CachedAnswer(200, body, entry.usage)
    incompressible = np.random.default_rng(1).bytes(1024 * 1024)
    assert semantic_cache_rows.encode_entity("p", "r", vector, semantic_cache_rows.Entry(200, incompressible, Usage()), 1.0) is None


def test_outages_are_logged_once_and_their_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outages = cache_outages.Outages()
    with caplog.at_level(logging.INFO, logger="gateway.stores.semantic_cache"):
        for _ in range(5):
            outages.failed("the table", "reading the table failed (refused)")
        assert outages.skipping("the table")
        outages.recovered("the table")
        outages.recovered("the table")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "reading the table failed" in messages[0] and "works again" in messages[1]
    assert not outages.skipping("the table")


# --- configuration ------------------------------------------------------------------------------------------


def test_embeddings_deployment_by_field_or_apim_url_and_pools() -> None:
    configs = parse_backends(
        {
            "GATEWAY_BACKENDS": json.dumps(
                [
                    {"id": "a", "url": "https://a.example", "embeddings_deployment": "emb"},
                    {"id": "b", "url": "https://b.example/openai/deployments/text-embedding-3-small/embeddings"},
                    {"id": "c", "url": "https://c.example"},
                    {"id": "ab", "type": "pool", "pool": {"services": [{"id": "a"}, {"id": "b"}]}},
                    {"id": "ac", "type": "pool", "pool": {"services": [{"id": "a"}, {"id": "c"}]}},
                ]
            )
        }
    )
    a, b, c = configs[:3]
    assert (a.url, a.embeddings_deployment) == ("https://a.example", "emb")  # type: ignore[union-attr]
    assert (b.url, b.embeddings_deployment) == ("https://b.example", "text-embedding-3-small")  # type: ignore[union-attr]
    assert c.embeddings_deployment is None  # type: ignore[union-attr]
    assert BackendRegistry(configs).embeddings_ids == {"a", "b", "ab"}
    single = parse_backends({"AZURE_OPENAI_ENDPOINT": "https://x.example", "AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_EMBEDDINGS_DEPLOYMENT": "emb"})
    assert single[0].embeddings_deployment == "emb"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"id": "a", "url": "https://a.example", "embeddings_deployment": ""}, "'embeddings_deployment' must be a deployment name"),
        ({"id": "a", "url": "https://a.example/openai/deployments/x/embeddings", "embeddings_deployment": "y"}, "names embeddings deployment 'x'"),
    ],
)
def test_embeddings_deployment_mistakes(item: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_backends({"GATEWAY_BACKENDS": json.dumps([item])})


def test_semantic_cache_settings() -> None:
    base = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}
    defaults = Settings.from_env(base).semantic_cache
    assert (defaults.scope, defaults.staleness_seconds, defaults.timeout_seconds, defaults.cleanup_seconds, defaults.connection) == (
        "subscription",
        2.0,
        1.0,
        600.0,
        None,
    )
    assert defaults.max_mib == 128.0
    custom = Settings.from_env(
        {
            **base,
            "GATEWAY_SEMANTIC_CACHE_SCOPE": "product",
            "GATEWAY_SEMANTIC_CACHE_STALENESS_SECONDS": "0.5",
            "GATEWAY_SEMANTIC_CACHE_TIMEOUT_SECONDS": "0.2",
            "GATEWAY_SEMANTIC_CACHE_CONNECTION": "UseDevelopmentStorage=true",
            "GATEWAY_SEMANTIC_CACHE_MAX_MIB": "0.5",
        }
    ).semantic_cache
    assert (custom.scope, custom.staleness_seconds, custom.timeout_seconds, custom.max_mib) == ("product", 0.5, 0.2, 0.5)
    assert custom.connection is not None and "Secret" in repr(custom.connection)
    with pytest.raises(ValueError, match="GATEWAY_SEMANTIC_CACHE_SCOPE"):
        Settings.from_env({**base, "GATEWAY_SEMANTIC_CACHE_SCOPE": "everyone"})
    with pytest.raises(ValueError, match="GATEWAY_SEMANTIC_CACHE_MAX_MIB"):
        Settings.from_env({**base, "GATEWAY_SEMANTIC_CACHE_MAX_MIB": "0"})


# --- the service's bounds, with a table that hangs or fails -------------------------------------------------


class FakeTable:
    """Answers queries with `rows`, or hangs, or fails, as the test says."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.mode = "answer"
        self.queries = 0
        self.written: list[dict] = []

    async def insert(self, entity: dict) -> None:
        self.written.append(entity)

    async def query(self, query: Query, page_size: int = 1000):  # type: ignore[no-untyped-def]
        self.queries += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail":
            raise StorageUnavailable("Table Storage refused the connection.")
        for row in self.rows:
            # A row's "Timestamp" (default now) is its last-modified time, as Table Storage reports it.
            values = {k: v for k, v in row.items() if k != "Timestamp"}
            yield Row(values, "etag", row.get("Timestamp") or datetime.datetime.now(datetime.UTC))


class FakeStore:
    def __init__(self, table: FakeTable) -> None:
        self._table = table

    def table(self, name: str) -> FakeTable:
        return self._table


def topic(n: int) -> np.ndarray:
    """A random direction of its own per topic (64 dimensions: unrelated topics are at distance 1 ± 0.15)."""
    return np.random.default_rng(n).standard_normal(64).astype(np.float32)


class InstantEmbeddings(service.SemanticCacheService):
    """The real service with embeddings that arrive at once ("paris" and anything else on two axes, "topic <n>"
    a direction of its own): what is tested is the table and memory side."""

    async def _embed(self, backend: object, deployment: str, source: str, text: str, deadline: float) -> np.ndarray:
        if match := re.search(r"topic (\d+)", text):
            return topic(int(match[1]))
        return np.eye(64, dtype=np.float32)[0 if "paris" in text else 1]


def cache_service(table: FakeTable, timeout: float = 0.2, staleness: float = 60.0, max_mib: float = 128.0) -> InstantEmbeddings:
    backends = BackendRegistry(
        parse_backends({"GATEWAY_BACKENDS": json.dumps([{"id": "emb", "url": "https://e.example", "embeddings_deployment": "e"}])})
    )
    settings = SemanticCacheSettings(timeout_seconds=timeout, staleness_seconds=staleness, max_mib=max_mib)
    return InstantEmbeddings(FakeStore(table), backends, None, settings)  # type: ignore[arg-type]


def lookup_context():  # type: ignore[no-untyped-def]
    """Where a lookup books its time (the request's Server-Timing)."""
    return ServerTiming().add


async def test_hanging_table_holds_one_request_for_the_timeout_and_no_other() -> None:
    table = FakeTable()
    table.mode = "hang"
    cache = cache_service(table, timeout=0.2)
    query = CacheQuery("p", "user: paris", "emb", 0.1)
    started = time.perf_counter()
    assert (await cache.lookup(query, lookup_context())).outcome == "BYPASS"
    assert 0.15 < time.perf_counter() - started < 0.5
    started = time.perf_counter()
    assert (await cache.lookup(query, lookup_context())).outcome == "BYPASS"
    assert time.perf_counter() - started < 0.05  # the load still runs, but nobody else waits for it
    assert table.queries == 1
    await cache.close()


async def test_a_loaded_index_keeps_serving_while_the_table_fails(caplog: pytest.LogCaptureFixture) -> None:
    table = FakeTable()
    cache = cache_service(table, staleness=0.05)
    query = CacheQuery("p", "user: paris", "emb", 0.1)
    miss = await cache.lookup(query, lookup_context())
    assert miss.outcome == "MISS" and miss.ticket is not None
    cache.store(miss.ticket, CACHED, 60)  # visible to this instance at once; the table write runs in the background
    await asyncio.sleep(0)
    assert [e["PartitionKey"] for e in table.written] == [miss.ticket.partition.key]  # type: ignore[attr-defined]
    table.mode = "fail"
    await asyncio.sleep(0.06)  # stale: the next lookup refreshes, which fails
    with caplog.at_level(logging.WARNING, logger="gateway.stores.semantic_cache"):
        for _ in range(3):
            hit = await cache.lookup(query, lookup_context())
            assert hit.outcome == "HIT" and hit.answer == CACHED and hit.distance == 0.0
    (record,) = caplog.records  # logged once
    assert "reading the semantic cache table failed (StorageUnavailable(" in record.getMessage()
    far = await cache.lookup(CacheQuery("p", "user: london", "emb", 0.1), lookup_context())
    assert far.outcome == "MISS" and far.distance == pytest.approx(1.0)
    await cache.close()


def test_cleanup_runs_every_ten_minutes_under_functions() -> None:
    (binding,) = function_bindings()["semantic_cache_cleanup"]["bindings"]
    assert (binding["type"], binding["schedule"]) == ("timerTrigger", "0 */10 * * * *")


def held(cache: service.SemanticCacheService) -> int:
    return sum(p.index.nbytes for p in cache._partitions.values() if p.index is not None)


async def test_memory_cap_evicts_the_least_recently_hit_from_memory_never_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    table = FakeTable()
    cache = cache_service(table, max_mib=0.01)

    async def ask(partition: str, text: str) -> CacheLookup:
        clock[0] += 1
        return await cache.lookup(CacheQuery(partition, text, "emb", 0.1), lookup_context())

    paris = await ask("p1", "user: paris")
    cache.store(paris.ticket, CACHED, 3600)
    for n in range(40):
        if n % 5 == 0:
            assert (await ask("p1", "user: paris")).outcome == "HIT"  # hit again and again: stays
        miss = await ask("p2", f"user: topic {n}")
        assert miss.outcome == "MISS"
        cache.store(miss.ticket, CACHED, 3600)
        assert held(cache) <= 0.01 * 2**20
    assert (await ask("p1", "user: paris")).outcome == "HIT"
    assert (await ask("p2", "user: topic 39")).outcome == "HIT"  # the newest stay
    oldest = await ask("p2", "user: topic 0")
    assert oldest.outcome == "MISS" and oldest.distance > 0.5  # left memory: unrelated ones are the nearest now
    await cache.close()
    assert len(table.written) == 41  # all of them are in the table, for as long as they live


async def test_a_partition_larger_than_the_cap_loads_page_by_page_and_keeps_its_newest_entries() -> None:
    table = FakeTable()
    entry = semantic_cache_rows.Entry(200, zlib.compress(orjson.dumps(STORED)), CACHED.usage)
    start, expires = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1), time.time() + 3600
    rows = 2500
    for i in range(rows):
        row = semantic_cache_rows.encode_entity("p", f"{i:05d}", topic(i % 50), entry, expires)
        # Rows come in key order; here the first keys were written last (their Timestamp is what counts).
        table.rows.append({**row, "Timestamp": start + datetime.timedelta(seconds=rows - i)})  # type: ignore[dict-item]
    cache = cache_service(table, max_mib=0.3)
    assert (await cache.lookup(CacheQuery("p", "user: topic 3", "emb", 0.1), lookup_context())).outcome == "HIT"
    (partition,) = cache._partitions.values()
    index = partition.index
    assert index is not None and 100 < len(index) < rows and held(cache) <= 0.3 * 2**20
    assert all(f"{i:05d}" in index for i in range(len(index)))  # the newest, by their table Timestamp
    await cache.close()


# --- what counts as an outage of the embeddings backend ---------------------------------------------------


class ScriptedEmbeddings:
    """The upstream client as the embeddings call sees it: each `send` answers the next scripted outcome."""

    def __init__(self, *outcomes: int | Exception | float) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def send(self, method: str, url: str, headers: list, body: bytes, *args: object) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, float):  # seconds of silence
            await asyncio.sleep(outcome)
            outcome = 200
        return ScriptedResponse(outcome)


class ScriptedResponse:
    def __init__(self, status: int) -> None:
        self.status = status

    async def read(self) -> bytes:
        if self.status != 200:
            return b'{"error": {"code": "x"}}'
        vector = np.eye(8, dtype="<f4")[0].tobytes()
        return orjson.dumps({"data": [{"embedding": base64.b64encode(vector).decode()}]})

    def release(self) -> None:
        pass


def embedding_service(upstream: ScriptedEmbeddings) -> service.SemanticCacheService:
    env = {
        "GATEWAY_BACKENDS": json.dumps([{"id": "emb", "url": "https://e.example", "embeddings_deployment": "e", "api_key_setting": "K"}]),
        "K": "k",
    }
    settings = SemanticCacheSettings(timeout_seconds=0.2)
    return service.SemanticCacheService(FakeStore(FakeTable()), BackendRegistry(parse_backends(env)), upstream, settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("refusal", [400, 413, 429, 0.5, BackendTimeout()], ids=["400", "413", "429", "slow", "read timeout"])
async def test_one_refused_or_slow_embedding_bypasses_only_its_request(refusal: int | float | Exception, caplog: pytest.LogCaptureFixture) -> None:
    upstream = ScriptedEmbeddings(refusal, 200)
    cache = embedding_service(upstream)
    query = CacheQuery("p", "user: a prompt", "emb", 0.1)
    with caplog.at_level(logging.WARNING, logger="gateway.stores.semantic_cache"):
        assert (await cache.lookup(query, lookup_context())).outcome == "BYPASS"
        assert (await cache.lookup(query, lookup_context())).outcome == "MISS"  # the next caller embeds as usual
    assert upstream.calls == 2 and caplog.records == []
    await cache.close()


@pytest.mark.parametrize("failure", [503, 500, BackendError()], ids=["503", "500", "unreachable"])
async def test_an_unreachable_or_failing_embeddings_backend_is_an_outage(failure: int | Exception, caplog: pytest.LogCaptureFixture) -> None:
    upstream = ScriptedEmbeddings(failure, 200)
    cache = embedding_service(upstream)
    query = CacheQuery("p", "user: a prompt", "emb", 0.1)
    with caplog.at_level(logging.WARNING, logger="gateway.stores.semantic_cache"):
        assert (await cache.lookup(query, lookup_context())).outcome == "BYPASS"
        assert (await cache.lookup(query, lookup_context())).outcome == "BYPASS"  # not tried again for a while
    assert upstream.calls == 1
    (record,) = caplog.records
    assert "Requests go to the backend without the cache" in record.getMessage()
    await cache.close()
