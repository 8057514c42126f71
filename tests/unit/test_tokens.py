"""The tokenizer boundary: what prompt estimates count, bounds that skip tokenizing, work off the event loop,
failures kept inside, and request bodies parsed once with one nesting limit."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest

from gateway.errors import BadRequest
from gateway.handling import json_body
from gateway.handling.json_body import MAX_DEPTH, ParsedBody
from gateway.handling.offload import Offload
from gateway.handling.tokens import (
    IMAGE_TOKENS,
    INLINE_BYTES,
    MAX_TOKEN_BYTES,
    RequestTokens,
    TokenCounter,
    TokenizerError,
    completion_limit,
)

CHAT = {"messages": [{"role": "user", "content": "one two three four five six seven eight"}]}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "what this field holds"} for i in range(40)}},
    },
}


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter({"old": "gpt-35-turbo", "new": "gpt-4o"}, "o200k_base", Offload(1))


def estimate(counter: TokenCounter, payload: Any, ceiling: int | None = None) -> int:
    return asyncio.run(counter.estimate_prompt(None, payload, len(orjson.dumps(payload)), ceiling))


def json_count(counter: TokenCounter, value: Any) -> int:
    return counter.count_now(None, orjson.dumps(value).decode())


def test_tiktoken_counts_offline_with_both_encodings(counter: TokenCounter) -> None:
    assert counter.count_now("old", "hello world") == 2 and counter.count_now("new", "hello world") == 2
    assert counter._encoding("old").name == "cl100k_base" and counter._encoding("new").name == "o200k_base"
    assert (counter.count_now("old", "Здравствуйте, как дела"), counter.count_now("new", "Здравствуйте, как дела")) == (10, 4)


def test_no_token_of_either_encoding_is_longer_than_the_bound(counter: TokenCounter) -> None:
    for deployment in ("old", "new"):
        assert max(map(len, counter._encoding(deployment).token_byte_values())) == MAX_TOKEN_BYTES


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_format", SCHEMA),
        (
            "tools",
            [
                {
                    "type": "function",
                    "function": {"name": "lookup", "description": "Find a record by its key", "parameters": SCHEMA["json_schema"]["schema"]},
                }
            ],
        ),  # type: ignore[index]
        ("functions", [{"name": "lookup", "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}}]),
        ("tool_choice", {"type": "function", "function": {"name": "lookup_the_record_by_key"}}),
        ("prediction", {"type": "content", "content": "the predicted answer, word for word, as the model should write it"}),
        ("data_sources", [{"type": "azure_search", "parameters": {"endpoint": "https://search.example", "index_name": "manuals"}}]),
        ("instructions", "Answer in the voice of a pirate, briefly and with nautical terms."),
        ("text", {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA["json_schema"]["schema"]}}),  # type: ignore[index]
        ("a_field_added_next_year", {"hint": "whatever it says is billed as prompt until proven otherwise"}),
    ],
)
def test_prompt_estimate_counts_every_billed_field(counter: TokenCounter, field: str, value: Any) -> None:
    without = estimate(counter, CHAT)
    with_field = estimate(counter, {**CHAT, field: value})
    assert with_field - without >= json_count(counter, value)


def test_responses_input_and_instructions_count(counter: TokenCounter) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "describe the tides of the northern sea"}]}]
    payload = {"model": "gpt-4o", "instructions": "Be brief.", "input": items}
    assert estimate(counter, payload) >= json_count(counter, items) + json_count(counter, "Be brief.")


def test_settings_are_not_prompt(counter: TokenCounter) -> None:
    settings = {
        "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "top_p": 1,
        "max_tokens": 100, "user": "alice-with-a-very-long-user-identifier", "metadata": {"team": "blue"}, "seed": 7, "n": 2,
    }  # fmt: skip
    assert estimate(counter, {**CHAT, **settings}) == estimate(counter, CHAT)


def test_chat_estimate_covers_openai_chat_accounting(counter: TokenCounter) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five six seven eight nine"},
    ]
    openai = 3 + sum(3 + counter.count_now(None, m["role"]) + counter.count_now(None, m["content"]) for m in messages)
    assert openai <= estimate(counter, {"messages": messages}) <= 2 * openai


def test_media_are_charged_by_rule_not_tokenized_as_base64(counter: TokenCounter) -> None:
    data = "QUJD" * 25_000  # 100,000 base64 characters: 75,000 bytes
    text = {"type": "text", "text": "what is this?"}
    base = estimate(counter, {"messages": [{"role": "user", "content": [text]}]})
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}}
    audio = {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}
    document = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + data}}
    for part, tokens in ((image, IMAGE_TOKENS), (audio, 750), (document, 37_500)):
        charged = estimate(counter, {"messages": [{"role": "user", "content": [text, part]}]}) - base
        assert tokens <= charged <= tokens + 5, part["type"]
    assert estimate(counter, {"messages": [{"role": "user", "content": "image"}]}) < 20  # the word is not a part
    responses_image = {
        "model": "gpt-4o",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64," + data}]}],
    }
    assert IMAGE_TOKENS <= estimate(counter, responses_image) <= IMAGE_TOKENS + 30


def test_token_id_prompts_count_one_token_per_id(counter: TokenCounter) -> None:
    assert estimate(counter, {"model": "text-embedding-3-small", "input": [[1, 2, 3], [4, 5]]}) == 5
    assert estimate(counter, {"prompt": list(range(1000))}) == 1000
    assert estimate(counter, {"input": ["hello world", "hello world"]}) >= 2 * counter.count_now(None, "hello world")


def test_empty_and_non_object_bodies(counter: TokenCounter) -> None:
    assert estimate(counter, None) == 0
    assert estimate(counter, {"model": "gpt-4o"}) == 0
    assert estimate(counter, ["some", "words"]) >= 2


def test_a_prompt_beyond_the_ceiling_is_bounded_without_tokenizing(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst case for the bound: runs of spaces, which tokenize at 128 bytes a token.
    payload = {"messages": [{"role": "user", "content": " " * 1_000_000}]}
    full = estimate(counter, payload)
    assert full >= 1_000_000 / MAX_TOKEN_BYTES

    def refuse(*args: object) -> int:
        raise AssertionError("tokenized although the size alone exceeds the ceiling")

    monkeypatch.setattr(counter, "count_now", refuse)
    bounded = estimate(counter, payload, ceiling=5_000)
    assert 5_000 < bounded <= full  # refused as tokenizing would refuse it, never more than tokenizing says
    with pytest.raises(AssertionError):
        estimate(counter, payload, ceiling=full)  # within the ceiling: must be tokenized


def test_large_bodies_are_estimated_off_the_event_loop(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    count_now = counter.count_now

    def recording(deployment: str | None, text: str) -> int:
        threads.append(threading.current_thread().name)
        return count_now(deployment, text)

    monkeypatch.setattr(counter, "count_now", recording)
    small = {"messages": [{"role": "user", "content": "hi"}]}
    large = {"messages": [{"role": "user", "content": "lorem ipsum " * (INLINE_BYTES // 6)}]}
    estimate(counter, small)
    estimate(counter, large)
    asyncio.run(counter.count(None, "lorem ipsum " * 10_000))
    assert threads[0] == threading.current_thread().name
    assert all(name.startswith("gateway-cpu") for name in threads[1:]) and len(threads) == 3


def test_tokenizer_failures_count_utf8_bytes(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    assert counter.count_now("new", " " * 1_200_000) >= 1_200_000 / MAX_TOKEN_BYTES  # o200k_base's regex fails on this unsliced
    encoding = counter._encoding("new")

    class Broken:
        def encode_ordinary(self, text: str) -> list[int]:
            raise ValueError("Regex error while tokenizing")

    monkeypatch.setattr(counter, "_encoding", lambda deployment: Broken())
    assert counter.count_now("new", "héllo") == len("héllo".encode())
    assert encoding.name == "o200k_base"


def test_an_encoding_that_cannot_load_is_a_gateway_error_and_usage_falls_back_to_bytes() -> None:
    counter = TokenCounter({}, "no_such_encoding", Offload(1))
    with pytest.raises(TokenizerError):
        counter.warm_up()
    body = orjson.dumps(CHAT)
    tokens = RequestTokens(counter, None, ParsedBody(body, orjson.loads(body)))
    usage = asyncio.run(tokens.usage(body, "generated text"))
    assert (usage.prompt, usage.completion, usage.exact) == (len(body), len("generated text"), False)


def test_request_tokens_estimate_once_per_body(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int | None] = []
    original = counter.estimate_prompt

    async def counting(deployment: str | None, payload: Any, size: int, ceiling: int | None = None) -> int:
        calls.append(ceiling)
        return await original(deployment, payload, size, ceiling)

    monkeypatch.setattr(counter, "estimate_prompt", counting)
    body = orjson.dumps({"messages": [{"role": "user", "content": "word " * 5000}]})
    parsed = ParsedBody(body, orjson.loads(body))
    tokens = RequestTokens(counter, None, parsed)

    async def run() -> None:
        bounded = await tokens.prompt(body, ceiling=10)  # above the ceiling: a bound, not remembered
        exact = await tokens.prompt(body, ceiling=100_000)
        assert bounded > 10 and exact > bounded
        assert await tokens.prompt(body) == exact  # remembered: a stream's settlement reuses it
        replaced = orjson.dumps(CHAT)  # a policy replaced the body
        assert await tokens.prompt(replaced) < exact

    asyncio.run(run())
    assert calls == [10, 100_000, None]


def test_completion_limit_reads_every_spelling() -> None:
    assert completion_limit({"max_tokens": 30}) == 30
    assert completion_limit({"max_completion_tokens": 40, "n": 2}) == 80
    assert completion_limit({"max_output_tokens": 5}) == 5
    assert completion_limit({"max_tokens": True}) is None
    assert completion_limit({}) is None and completion_limit(None) is None


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


def test_json_nesting_limit_is_one_number_for_every_depth() -> None:
    assert json_body.parse(nested(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 300, 1_100, 100_000):
        with pytest.raises(BadRequest) as refused:
            json_body.parse(nested(depth))
        assert refused.value.status == 400 and refused.value.message == json_body.TOO_DEEP, depth


def test_wide_bodies_with_many_brackets_are_not_too_deep() -> None:
    wide = orjson.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": str(i)}]} for i in range(500)]})
    assert len(json_body.parse(wide)["messages"]) == 500


def test_invalid_json_is_a_bad_request() -> None:
    for body in (b"{not json", b"\xff\xfe", b'{"a": "\\ud800"}'):
        with pytest.raises(BadRequest) as refused:
            json_body.parse(body)
        assert refused.value.message.startswith("The request body is not valid JSON")


def test_large_bodies_are_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    parse = json_body.parse

    def recording(body: bytes) -> Any:
        threads.append(threading.current_thread().name)
        return parse(body)

    monkeypatch.setattr(json_body, "parse", recording)
    offload = Offload(1)
    asyncio.run(json_body.load(b'{"small": true}', offload))
    asyncio.run(json_body.load(orjson.dumps({"big": "x" * json_body.INLINE_BYTES}), offload))
    assert threads[0] == threading.current_thread().name and threads[1].startswith("gateway-cpu")


def test_parsed_body_parses_each_distinct_body_once(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"a": 1}'
    parsed = ParsedBody(body, {"a": 1})
    monkeypatch.setattr(json_body, "parse", lambda content: pytest.fail("parsed again"))
    assert parsed.value(body) == {"a": 1}
    monkeypatch.undo()
    replaced = b'{"b": 2}'
    assert parsed.value(replaced) == {"b": 2} and parsed.latest == {"b": 2}
    with pytest.raises(BadRequest):
        parsed.value(nested(MAX_DEPTH + 1))
