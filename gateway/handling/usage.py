"""What a request really used: `usage` from JSON answers and from streams, read as they are relayed.

Streams carry usage only in a final chunk, and only when the request asked for it with
`stream_options.include_usage`. That option exists for chat completions and completions only (deployment
routes from api-version 2024-09-01-preview, and the v1 API); the Responses API reports usage in its
`response.completed` event unasked, and embeddings never stream. When a policy needs usage, the gateway asks for
it upstream where the option exists and, if the client did not, removes that usage-only chunk from the client's
stream. Otherwise — older api-versions, a backend that ignores the option, a stream that breaks off — the
generated text (content, refusals, tool-call and function-call arguments, Responses API deltas) is counted
with tiktoken and the count is marked estimated. A client that asked for `include_usage` and got no usage
chunk from the backend gets an estimated one before `[DONE]`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import orjson

from policies.usage import Usage, UsageListener

logger = logging.getLogger(__name__)

#: The first api-version whose streams can carry usage.
_STREAM_USAGE_SINCE = "2024-09-01"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: Operations whose requests have `stream_options.include_usage`.
_USAGE_OPTION_OPERATIONS = frozenset({"ChatCompletions_Create", "Completions_Create", "createChatCompletion", "createCompletion"})
#: Responses API events that end a stream (with the response, and its usage).
_RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
#: Responses API deltas that are not text: audio is billed by duration, not by its base64.
_NOT_TEXT_DELTAS = frozenset({"response.audio.delta", "response.output_audio.delta"})
#: Fields of a chat delta that are not generated text (audio `data` is base64, billed by duration).
_NOT_GENERATED = frozenset({"role", "id", "type", "index", "data"})
DONE_EVENT = b"data: [DONE]\n\n"
#: Text pieces (one per token, about) joined into one string, so each piece's object overhead is short-lived.
_BLOCK_PIECES = 256


def usage_from_json(payload: Any) -> Usage | None:
    """`usage` of a chat, completion, embeddings or responses answer (or of a usage stream chunk)."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return Usage(
        prompt=prompt,
        completion=completion,
        total=_int(usage.get("total_tokens")) or prompt + completion,
        cached=_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning=_int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0,
    )


def usage_from_body(body: bytes) -> Usage | None:
    try:
        return usage_from_json(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        return None


def has_usage_option(operation_id: str) -> bool:
    """True for the operations whose requests have `stream_options.include_usage` (chat completions, completions)."""
    return operation_id in _USAGE_OPTION_OPERATIONS


def stream_usage_supported(api_version: str | None) -> bool:
    """True for the v1 API (no api-version) and for api-versions from 2024-09-01(-preview) on."""
    if not api_version or not _DATE.match(api_version):
        return True
    return api_version[:10] >= _STREAM_USAGE_SINCE


def stream_usage_available(operation_id: str, api_version: str | None) -> bool:
    """True where a stream can be asked for a usage chunk: chat completions and completions, where the api-version
    supports it."""
    return has_usage_option(operation_id) and stream_usage_supported(api_version)


def asks_for_usage(payload: Any) -> bool:
    """True for a streaming request with `stream_options.include_usage: true`."""
    if not isinstance(payload, dict) or payload.get("stream") is not True:
        return False
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def request_usage_upstream(payload: Any) -> bool:
    """Make a streaming request ask for its usage chunk, in place; False when it does not stream or already asks."""
    if not isinstance(payload, dict) or payload.get("stream") is not True or asks_for_usage(payload):
        return False
    options = payload.get("stream_options")
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


class StreamTap:
    """Reads SSE events as they are relayed, keeping only what the request's listeners asked for.

    `feed` returns the bytes to send on: complete events only (a partial event waits for its end), minus the
    usage-only chunk when `strip_usage` is set. With `add_usage` (the client asked for a usage chunk), a `[DONE]`
    that comes before any usage is held back (`done_held`): the relay sends `usage_event(estimate)` in its place.
    Memory stays small whatever the answer's length: the generated text is kept (for counting) only with
    `count_text` and only until a usage chunk arrives; the answer is assembled only with `assemble` (a
    semantic-cache store wants it), piece by piece; parsed chunks are never kept.
    """

    def __init__(self, strip_usage: bool = False, count_text: bool = True, assemble: bool = False, add_usage: bool = False) -> None:
        self._strip_usage = strip_usage
        self._count_text = count_text
        self._add_usage = add_usage
        self._pending = b""
        self.usage: Usage | None = None
        #: The stream reached its end: `[DONE]`, or a Responses API stream's final event.
        self.completed = False
        self.done_held = False
        #: The generated text so far, as blocks of joined pieces and the pieces since the last block.
        self._blocks: list[str] = []
        self._pieces: list[str] = []
        #: id, object, created, model, system_fingerprint of the first chunk: for the usage chunk and the answer.
        self._meta: dict[str, Any] | None = None
        self._answer: _Answer | None = _Answer() if assemble else None

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: end + 2], data[end + 2 :]
        kept: list[bytes] = []
        for event in complete.split(b"\n\n")[:-1]:
            if self._read(event) or not event:
                kept.append(event)
        return b"\n\n".join(kept) + b"\n\n" if kept else b""

    def flush(self) -> bytes:
        """Whatever partial event remains when the stream ends."""
        rest, self._pending = self._pending, b""
        return rest

    @property
    def text(self) -> str:
        """The generated text seen so far (empty unless `count_text`)."""
        return "".join((*self._blocks, *self._pieces))

    def usage_event(self, usage: Usage) -> bytes:
        """The usage-only chunk the backend would have sent, followed by the `[DONE]` held back for it."""
        chunk = {
            **(self._meta or {}),
            "choices": [],
            "usage": {"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.total},
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n" + DONE_EVENT

    def assembled(self) -> bytes | None:
        """The streamed chat or text completion as the non-streaming JSON answer; None unless assembling a complete one."""
        if self._answer is None or self._meta is None or not self.completed:
            return None
        return self._answer.json(self._meta, self.usage)

    def _read(self, event: bytes) -> bool:
        """Take what we need from one event; False if it must not reach the client."""
        data = _data_of(event)
        if data is None:
            return True
        if data == b"[DONE]":
            self.completed = True
            if self._add_usage and self.usage is None and self._meta is not None:
                self.done_held = True
                return False
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        kind = payload.get("type")
        if isinstance(kind, str):  # Responses API stream
            self._read_response_event(kind, payload)
            return True
        choices = payload.get("choices")
        usage = usage_from_json(payload)
        if usage is not None:
            self._found_usage(usage)
            if self._strip_usage and not choices:
                return False
        if isinstance(choices, list):
            self._read_choices(payload, choices)
        return True

    def _read_response_event(self, kind: str, payload: dict[str, Any]) -> None:
        if kind in _RESPONSES_ENDS:
            self.completed = True
            usage = usage_from_json(payload.get("response"))
            if usage is not None:
                self._found_usage(usage)
        elif kind.endswith(".delta") and kind not in _NOT_TEXT_DELTAS and self._count_text and self.usage is None:
            delta = payload.get("delta")
            if isinstance(delta, str):
                self._keep_text(delta)

    def _read_choices(self, payload: dict[str, Any], choices: list[Any]) -> None:
        if self._meta is None:
            self._meta = {key: payload[key] for key in ("id", "object", "created", "model", "system_fingerprint") if key in payload}
        chat = payload.get("object") == "chat.completion.chunk"
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if chat else choice
            if not isinstance(delta, dict):
                continue
            if self._count_text and self.usage is None:
                piece = delta.get("content" if chat else "text")
                if isinstance(piece, str) and (len(delta) == 1 or not chat):
                    self._keep_text(piece)  # the usual chunk: {"content": "…"}, or a text completion's choice
                elif chat:
                    _generated_text(delta, self._keep_text)
            if self._answer is not None:
                self._answer.add(choice, delta, chat)

    def _keep_text(self, piece: str) -> None:
        self._pieces.append(piece)
        if len(self._pieces) >= _BLOCK_PIECES:
            self._blocks.append("".join(self._pieces))
            self._pieces.clear()

    def _found_usage(self, usage: Usage) -> None:
        self.usage = usage
        self._blocks, self._pieces = [], []  # reported: nothing left to count


def _generated_text(delta: dict[str, Any], keep: Callable[[str], None]) -> None:
    """Every generated string of a chat delta: content, refusal, reasoning, tool-call and function-call names and
    arguments, audio transcripts; whatever new field carries text, not the role, ids or base64 audio."""
    stack: list[Any] = [delta]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(value for key, value in node.items() if key not in _NOT_GENERATED)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node:
            keep(node)


class _Answer:
    """A streamed chat or text completion put back together as its non-streaming answer, choice by choice."""

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}
        self._chat = True

    def add(self, choice: dict[str, Any], delta: dict[str, Any], chat: bool) -> None:
        self._chat = chat
        index = choice.get("index", 0)
        if not isinstance(index, int):
            return
        merged = self._choices.setdefault(index, {"index": index, "content": [], "role": "assistant", "finish_reason": None})
        piece = delta.get("content") if chat else delta.get("text")
        if isinstance(piece, str):
            merged["content"].append(piece)
        if delta.get("role"):
            merged["role"] = delta["role"]
        if delta.get("tool_calls") or delta.get("function_call"):
            merged["tool_calls"] = True
        if choice.get("content_filter_results"):
            merged["content_filter_results"] = choice["content_filter_results"]
        if choice.get("finish_reason"):
            merged["finish_reason"] = choice["finish_reason"]

    def json(self, meta: dict[str, Any], usage: Usage | None) -> bytes:
        answer: dict[str, Any] = {
            "id": meta.get("id"),
            "object": "chat.completion" if self._chat else "text_completion",
            "created": meta.get("created"),
            "model": meta.get("model"),
            "choices": [self._choice(merged) for _, merged in sorted(self._choices.items())],
        }
        if meta.get("system_fingerprint"):
            answer["system_fingerprint"] = meta["system_fingerprint"]
        if usage is not None:
            answer["usage"] = {"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.total}
        return orjson.dumps(answer)

    def _choice(self, merged: dict[str, Any]) -> dict[str, Any]:
        content = "".join(merged["content"])
        choice: dict[str, Any] = {"index": merged["index"], "finish_reason": merged["finish_reason"]}
        if self._chat:
            choice["message"] = {"role": merged["role"], "content": content}
            if merged.get("tool_calls"):
                choice["message"]["tool_calls"] = []  # present but not reassembled: such answers are never cached
        else:
            choice["text"] = content
        if merged.get("content_filter_results"):
            choice["content_filter_results"] = merged["content_filter_results"]
        return choice


def _data_of(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (multi-line data joined), or None for comments and other fields."""
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class UsageReporter:
    """Tells a request's usage listeners, exactly once, what the request used."""

    def __init__(self, listeners: list[UsageListener]) -> None:
        self._listeners = listeners
        self._reported = False

    @property
    def wanted(self) -> bool:
        return bool(self._listeners) and not self._reported

    async def report(self, usage: Usage) -> None:
        if self._reported:
            return
        self._reported = True
        for listener in self._listeners:
            try:
                await listener(usage)
            except Exception:
                logger.exception("A usage listener failed; the request's accounting may be incomplete.")
