"""Usage from JSON answers and streams, offline token counting, and the shared lease-based counters on Azurite."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.stores.counters import SharedCounters
from gateway.handling.tokens import IMAGE_TOKENS, TokenCounter, completion_limit
from gateway.handling.usage import (
    StreamTap,
    request_usage_upstream,
    stream_usage_supported,
    usage_from_body,
)
from policies.counters import Window


def sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else orjson.dumps(p)) + b"\n\n" for p in payloads)


CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": None}
USAGE = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "completion_tokens_details": {"reasoning_tokens": 1}}}


def test_usage_from_chat_and_responses_bodies() -> None:
    chat = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}}})
    usage = usage_from_body(chat)
    assert usage is not None and (usage.prompt, usage.completion, usage.total, usage.cached) == (3, 4, 7, 2)
    responses = orjson.dumps({"usage": {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11, "output_tokens_details": {"reasoning_tokens": 3}}})
    usage = usage_from_body(responses)
    assert usage is not None and (usage.prompt, usage.completion, usage.reasoning) == (5, 6, 3)
    assert usage_from_body(orjson.dumps({"usage": {"prompt_tokens": 8, "total_tokens": 8}})).completion == 0  # type: ignore[union-attr]
    assert usage_from_body(b"not json") is None and usage_from_body(b'{"data": []}') is None


def test_tap_strips_injected_usage_chunk_but_keeps_usage() -> None:
    tap = StreamTap(strip_usage=True)
    out = tap.feed(sse(CHUNK, USAGE, b"[DONE]"))
    assert out == sse(CHUNK, b"[DONE]")
    assert tap.usage is not None and tap.usage.total == 6 and tap.usage.reasoning == 1
    assert tap.text == "Hello" and tap.completed


def test_tap_keeps_usage_chunk_the_client_asked_for() -> None:
    tap = StreamTap(strip_usage=False)
    stream = sse(CHUNK, USAGE, b"[DONE]")
    assert tap.feed(stream) == stream


def test_tap_holds_partial_events_until_complete() -> None:
    tap = StreamTap(strip_usage=True)
    whole = sse(CHUNK, USAGE)
    cut = whole.index(b"\"usage\":{") + 3
    first, second = tap.feed(whole[:cut]), tap.feed(whole[cut:])
    assert first == sse(CHUNK)  # the complete event goes at once, the partial one waits
    assert second == b""  # the usage event, once complete, is dropped
    assert tap.usage is not None and tap.usage.total == 6


def test_tap_reads_responses_api_events() -> None:
    tap = StreamTap(strip_usage=False)
    delta = {"type": "response.output_text.delta", "delta": "Hi there"}
    done = {"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}}}
    tap.feed(b"event: response.output_text.delta\n" + sse(delta) + b"event: response.completed\n" + sse(done))
    assert tap.text == "Hi there" and tap.usage is not None and tap.usage.total == 4 and tap.completed


@pytest.mark.parametrize(
    ("version", "supported"),
    [("2024-02-01", False), ("2024-06-01", False), ("2024-09-01-preview", True), ("2024-10-21", True), ("2025-04-01-preview", True), (None, True), ("preview", True)],
)
def test_stream_usage_support_by_api_version(version: str | None, supported: bool) -> None:
    assert stream_usage_supported(version) is supported


def test_request_usage_upstream_rewrites_only_streams() -> None:
    assert request_usage_upstream(b'{"stream": false}') is None
    assert request_usage_upstream(b"not json") is None
    body, asked = request_usage_upstream(b'{"stream": true, "stream_options": {"x": 1}}')  # type: ignore[misc]
    assert orjson.loads(body)["stream_options"] == {"x": 1, "include_usage": True} and asked is False
    same, asked = request_usage_upstream(b'{"stream": true, "stream_options": {"include_usage": true}}')  # type: ignore[misc]
    assert asked is True and same == b'{"stream": true, "stream_options": {"include_usage": true}}'


def test_tiktoken_counts_offline_with_both_encodings() -> None:
    counter = TokenCounter({"old": "gpt-35-turbo", "new": "gpt-4o"})
    assert counter.count("old", "hello world") == 2 and counter.count("new", "hello world") == 2
    assert counter._encoding("old").name == "cl100k_base" and counter._encoding("new").name == "o200k_base"
    assert (counter.count("old", "Здравствуйте, как дела"), counter.count("new", "Здравствуйте, как дела")) == (10, 4)


def test_prompt_estimate_follows_chat_accounting_and_counts_images() -> None:
    counter = TokenCounter({}, "o200k_base")
    text = counter.count(None, "hello world")
    body = orjson.dumps({"messages": [{"role": "user", "content": "hello world"}]})
    assert counter.estimate_prompt(None, body) == 3 + 3 + counter.count(None, "user") + text
    with_image = orjson.dumps(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}
    )
    assert counter.estimate_prompt(None, with_image) == counter.estimate_prompt(None, body) + IMAGE_TOKENS
    assert counter.estimate_prompt(None, orjson.dumps({"input": ["hello world", "hello world"]})) == 2 * text
    assert counter.estimate_prompt(None, b"\x00binary") == 0


def test_completion_limit_reads_every_spelling() -> None:
    assert completion_limit(b'{"max_tokens": 30}') == 30
    assert completion_limit(b'{"max_completion_tokens": 40, "n": 2}') == 80
    assert completion_limit(b'{"max_output_tokens": 5}') == 5
    assert completion_limit(b"{}") is None


@pytest.fixture
async def counters_table(scratch_tables):  # type: ignore[no-untyped-def]
    return await scratch_tables("counters")


async def test_two_instances_never_admit_more_than_the_limit(counters_table) -> None:  # type: ignore[no-untyped-def]
    first, second = SharedCounters(counters_table, 0.1), SharedCounters(counters_table, 0.1)
    window = Window.fixed(3600)
    admitted = requests = 0

    async def client(counters: SharedCounters, amount: int) -> None:
        nonlocal admitted, requests
        for _ in range(40):
            requests += 1
            if (await counters.acquire("k", window, amount, 1000)).allowed:
                admitted += amount

    await asyncio.gather(*(client(c, amount) for c in (first, second) for amount in (7, 13, 29)))
    assert admitted <= 1000
    assert admitted >= 1000 - 2 * 100 - 29  # under-use bound: N x lease + one request
    operations = first.storage_operations + second.storage_operations
    assert operations <= 0.25 * requests  # leases (and a cached "spent"), not a round trip per request


async def test_refund_and_release_give_budget_back(counters_table) -> None:  # type: ignore[no-untyped-def]
    window = Window.fixed(3600)
    instance = SharedCounters(counters_table, 0.5)
    assert (await instance.acquire("k", window, 400, 1000)).allowed  # leases 500
    await instance.add("k", window, -300, 1000)  # used only 100
    await instance.release()  # shutdown: 400 unused go back to the table
    successor = SharedCounters(counters_table, 1.0)
    assert (await successor.acquire("k", window, 900, 1000)).allowed
    assert not (await successor.acquire("k", window, 1, 1000)).allowed


async def test_debt_beyond_reservation_is_charged_to_the_shared_counter(counters_table) -> None:  # type: ignore[no-untyped-def]
    window = Window.fixed(3600)
    first, second = SharedCounters(counters_table, 0.01), SharedCounters(counters_table, 0.01)
    assert (await first.acquire("k", window, 10, 100)).allowed
    await first.add("k", window, 85, 100)  # the answer was far longer than reserved
    assert not (await second.acquire("k", window, 10, 100)).allowed
