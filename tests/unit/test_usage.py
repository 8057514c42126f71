"""Usage from JSON answers and streams (what the stream tap keeps, counts and adds), and the shared lease-based counters on Azurite."""

from __future__ import annotations

import asyncio
import tracemalloc

import orjson
import pytest

from gateway.backends.proxy import EndWatch
from gateway.handling.usage import (
    StreamTap,
    asks_for_usage,
    request_usage_upstream,
    stream_usage_available,
    usage_from_body,
)
from gateway.stores.counters import SharedCounters
from policies.counters import Window
from policies.usage import Usage


def sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else orjson.dumps(p)) + b"\n\n" for p in payloads)


CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}}], "usage": None}
USAGE = {
    "id": "c1",
    "choices": [],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "completion_tokens_details": {"reasoning_tokens": 1}},
}


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
    assert tap.text == "" and tap.completed  # usage reported: no text left to count


def test_tap_keeps_usage_chunk_the_client_asked_for() -> None:
    tap = StreamTap(strip_usage=False)
    stream = sse(CHUNK, USAGE, b"[DONE]")
    assert tap.feed(stream) == stream


def test_tap_holds_partial_events_until_complete() -> None:
    tap = StreamTap(strip_usage=True)
    whole = sse(CHUNK, USAGE)
    cut = whole.index(b'"usage":{') + 3
    first, second = tap.feed(whole[:cut]), tap.feed(whole[cut:])
    assert first == sse(CHUNK)  # the complete event goes at once, the partial one waits
    assert second == b""  # the usage event, once complete, is dropped
    assert tap.usage is not None and tap.usage.total == 6


def test_tap_reads_responses_api_events() -> None:
    tap = StreamTap(strip_usage=False)
    delta = {"type": "response.output_text.delta", "delta": "Hi there"}
    done = {"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}}}
    tap.feed(b"event: response.output_text.delta\n" + sse(delta))
    assert tap.text == "Hi there" and not tap.completed
    tap.feed(b"event: response.completed\n" + sse(done))
    assert tap.usage is not None and tap.usage.total == 4 and tap.completed


def test_tap_strips_a_usage_chunk_sent_with_choices_only_from_its_usage() -> None:
    tap = StreamTap(strip_usage=True)
    last = {**CHUNK, "usage": USAGE["usage"]}
    assert tap.feed(sse(last)) == sse(last)  # it carries choices too: the client needs them
    assert tap.usage is not None and tap.usage.total == 6


@pytest.mark.parametrize(
    ("operation", "version", "available"),
    [
        ("ChatCompletions_Create", "2024-02-01", False),
        ("ChatCompletions_Create", "2024-06-01", False),
        ("ChatCompletions_Create", "2024-09-01-preview", True),
        ("Completions_Create", "2024-10-21", True),
        ("ChatCompletions_Create", "2025-04-01-preview", True),
        ("createChatCompletion", None, True),
        ("createCompletion", None, True),
        ("ChatCompletions_Create", "preview", True),
        ("createResponse", None, False),
        ("createEmbedding", None, False),
        ("embeddings_create", "2024-10-21", False),
    ],
)
def test_stream_usage_exists_only_for_chat_and_completions(operation: str, version: str | None, available: bool) -> None:
    assert stream_usage_available(operation, version) is available


def test_request_usage_upstream_rewrites_only_streams_in_place() -> None:
    assert request_usage_upstream({"stream": False}) is False
    assert request_usage_upstream(None) is False
    payload = {"stream": True, "stream_options": {"x": 1}}
    assert request_usage_upstream(payload) is True and payload["stream_options"] == {"x": 1, "include_usage": True}
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert request_usage_upstream(asked) is False and asks_for_usage(asked)
    assert not asks_for_usage({"stream": False, "stream_options": {"include_usage": True}})


TOOL_CALL = {
    "id": "c2", "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"key\": \"tides of the north\"}"}}]}}],
}  # fmt: skip


def test_tap_counts_tool_call_and_function_call_arguments_and_refusals() -> None:
    tap = StreamTap()
    function_call = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"function_call": {"name": "legacy", "arguments": "{}"}}}]}
    refusal = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"refusal": "I cannot help with that"}}]}
    tap.feed(sse(CHUNK, TOOL_CALL, function_call, refusal, b"[DONE]"))
    text = tap.text
    for generated in ("Hello", "lookup", '{"key": "tides of the north"}', "legacy", "I cannot help with that"):
        assert generated in text
    assert "call_1" not in text and "function" not in text and "assistant" not in text


def test_tap_counts_responses_api_deltas_but_not_audio() -> None:
    tap = StreamTap()
    events = [
        {"type": "response.output_text.delta", "delta": "Hi there"},
        {"type": "response.function_call_arguments.delta", "delta": '{"city": "Oslo"}'},
        {"type": "response.refusal.delta", "delta": "no"},
        {"type": "response.audio.delta", "delta": "UklGRgAAAA=="},
    ]
    tap.feed(b"".join(b"event: " + e["type"].encode() + b"\n" + sse(e) for e in events))
    assert tap.text == 'Hi there{"city": "Oslo"}no' and not tap.completed


def test_tap_keeps_no_text_when_not_counting_and_drops_it_once_usage_arrives() -> None:
    silent = StreamTap(count_text=False)
    silent.feed(sse(CHUNK, CHUNK))
    assert silent.text == ""
    counting = StreamTap()
    counting.feed(sse(CHUNK, CHUNK))
    assert counting.text == "HelloHello"
    counting.feed(sse(USAGE))
    assert counting.text == "" and counting.usage is not None


def test_tap_memory_stays_flat_over_a_long_stream_unless_assembling() -> None:
    chunks = sse(*([CHUNK] * 2000))

    def retained(tap: StreamTap) -> int:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tap.feed(chunks)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return after - before

    assert retained(StreamTap(count_text=False)) < 4_000
    assert retained(StreamTap(count_text=True)) < 40_000  # the text itself, joined as it grows
    assembling = StreamTap(count_text=False, assemble=True)
    retained(assembling)
    assert orjson.loads(assembling.feed(sse(b"[DONE]")) and assembling.assembled() or b"null")["choices"][0]["message"]["content"] == "Hello" * 2000


def test_tap_holds_done_for_an_estimated_usage_chunk_when_the_backend_sent_none() -> None:
    tap = StreamTap(add_usage=True)
    out = tap.feed(sse(CHUNK, b"[DONE]"))
    assert out == sse(CHUNK) and tap.done_held and tap.completed
    event = tap.usage_event(Usage(prompt=3, completion=1, total=4, exact=False))
    usage_chunk, done = event.split(b"\n\n")[:2]
    payload = orjson.loads(usage_chunk.removeprefix(b"data: "))
    assert payload == {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    assert done == b"data: [DONE]"


def test_tap_passes_done_when_the_backend_sent_usage() -> None:
    tap = StreamTap(add_usage=True)
    stream = sse(CHUNK, USAGE, b"[DONE]")
    assert tap.feed(stream) == stream and not tap.done_held


def test_tap_assembles_only_complete_answers() -> None:
    tap = StreamTap(count_text=False, assemble=True)
    tap.feed(sse({**CHUNK, "model": "gpt-4o", "created": 1}, TOOL_CALL))
    assert tap.assembled() is None  # no [DONE] yet
    tap.feed(sse({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, b"[DONE]"))
    answer = orjson.loads(tap.assembled() or b"{}")
    assert answer["object"] == "chat.completion" and answer["model"] == "gpt-4o"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "tool_calls": []}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert StreamTap().assembled() is None  # not asked to assemble


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


async def test_a_request_larger_than_the_limit_does_not_block_the_next(counters_table) -> None:  # type: ignore[no-untyped-def]
    counters = SharedCounters(counters_table, 0.1)
    window = Window.fixed(3600)
    assert (await counters.acquire("k", window, 10, 1000)).allowed
    refused = await counters.acquire("k", window, 5_000, 1000)
    assert not refused.allowed and refused.remaining == 990
    assert (await counters.acquire("k", window, 500, 1000)).allowed  # not "spent" for the next second


def watch(*chunks: bytes) -> bool:
    end = EndWatch()
    for chunk in chunks:
        end.feed(chunk)
    return end.ended


def test_end_watch_sees_done_and_responses_final_events_even_split_across_chunks() -> None:
    assert watch(sse(CHUNK), b"data: [DONE]\n\n")
    assert watch(b"data: [DONE]\n\n")  # an empty stream that ends at once
    assert watch(sse(CHUNK) + b"data: [DO", b"NE]\n\n")
    assert watch(b'event: response.completed\ndata: {"type":"response.completed","response":{}}\n\n')
    assert watch(b'data: {"type": "response.incomplete", "response": {}}\n\n')
    assert watch(b"event: response.fai", b"led\ndata: {}\n\n")


def test_end_watch_is_not_fooled_by_the_markers_inside_generated_text() -> None:
    quoted = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": 'data: [DONE]\n"type":"response.completed"'}}]}
    assert not watch(sse(CHUNK, quoted))
    assert not watch(sse({"type": "response.output_text.delta", "delta": "event: response.completed"}))
