"""What a request really used: `usage` from JSON answers and from streams, read as they are relayed.

Streams carry usage only in a final chunk, and only when the request asked for it
(`stream_options.include_usage`, api-version 2024-09-01-preview or later, and the v1 API). When a policy
needs usage, the gateway asks for it upstream and, if the client did not, removes that usage-only chunk
from the client's stream. Otherwise — older api-versions, or a client that hangs up early — the streamed text
is counted with tiktoken and the count is marked estimated. A stream the client aborts is charged for what
was relayed.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from policies.usage import Usage, UsageListener

logger = logging.getLogger(__name__)

#: The first api-version whose streams can carry usage.
_STREAM_USAGE_SINCE = "2024-09-01"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


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


def stream_usage_supported(api_version: str | None) -> bool:
    """True for the v1 API (no api-version) and for api-versions from 2024-09-01(-preview) on."""
    if not api_version or not _DATE.match(api_version):
        return True
    return api_version[:10] >= _STREAM_USAGE_SINCE


def request_usage_upstream(body: bytes) -> tuple[bytes, bool] | None:
    """For a streaming JSON request: the body asking for a usage chunk, and whether the client asked itself.

    None when the request does not stream (or is not JSON): nothing to change.
    """
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("stream") is not True:
        return None
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, True
    payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(payload), False


class StreamTap:
    """Reads SSE events as they are relayed: usage, the streamed text, and (optionally) the answer assembled.

    `feed` returns the bytes to send on: complete events only (a partial event waits for its end), minus the
    usage-only chunk when `strip_usage` is set.
    """

    def __init__(self, strip_usage: bool) -> None:
        self._strip_usage = strip_usage
        self._pending = b""
        self.usage: Usage | None = None
        self._text: list[str] = []
        self.chunks: list[dict[str, Any]] = []
        self.completed = False

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
        return "".join(self._text)

    def assembled(self) -> bytes | None:
        """The streamed chat or text completion as the non-streaming JSON answer, or None if not one."""
        if not self.chunks:
            return None
        first = self.chunks[0]
        chat = first.get("object") == "chat.completion.chunk"
        choices: dict[int, dict[str, Any]] = {}
        for chunk in self.chunks:
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", 0)
                merged = choices.setdefault(index, {"index": index, "content": [], "role": "assistant", "finish_reason": None})
                delta = choice.get("delta") if chat else choice
                if isinstance(delta, dict):
                    piece = delta.get("content") if chat else delta.get("text")
                    if isinstance(piece, str):
                        merged["content"].append(piece)
                    if delta.get("role"):
                        merged["role"] = delta["role"]
                    if delta.get("tool_calls") or delta.get("function_call"):
                        merged["tool_calls"] = True
                    if choice.get("content_filter_results"):
                        merged.setdefault("content_filter_results", []).append(choice["content_filter_results"])
                if choice.get("finish_reason"):
                    merged["finish_reason"] = choice["finish_reason"]
        answer: dict[str, Any] = {
            "id": first.get("id"),
            "object": "chat.completion" if chat else "text_completion",
            "created": first.get("created"),
            "model": first.get("model"),
            "choices": [_assembled_choice(merged, chat) for _, merged in sorted(choices.items())],
        }
        if first.get("system_fingerprint"):
            answer["system_fingerprint"] = first["system_fingerprint"]
        if self.usage is not None:
            answer["usage"] = {"prompt_tokens": self.usage.prompt, "completion_tokens": self.usage.completion, "total_tokens": self.usage.total}
        return orjson.dumps(answer)

    def _read(self, event: bytes) -> bool:
        """Take what we need from one event; False if it must not reach the client."""
        data = _data_of(event)
        if data is None:
            return True
        if data == b"[DONE]":
            self.completed = True
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        if payload.get("type") == "response.completed":  # Responses API stream
            self.completed = True
            self.usage = usage_from_json(payload.get("response")) or self.usage
            return True
        if payload.get("type") == "response.output_text.delta":
            self._text.append(str(payload.get("delta", "")))
            return True
        choices = payload.get("choices")
        usage = usage_from_json(payload)
        if usage is not None:
            self.usage = usage
            if self._strip_usage and not choices:
                return False
        if isinstance(choices, list):
            self.chunks.append(payload)
            for choice in choices:
                if isinstance(choice, dict):
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    if isinstance(text, str):
                        self._text.append(text)
        return True


def _assembled_choice(merged: dict[str, Any], chat: bool) -> dict[str, Any]:
    content = "".join(merged["content"])
    choice: dict[str, Any] = {"index": merged["index"], "finish_reason": merged["finish_reason"]}
    if chat:
        choice["message"] = {"role": merged["role"], "content": content}
        if merged.get("tool_calls"):
            choice["message"]["tool_calls"] = []  # present but not reassembled: such answers are never cached
    else:
        choice["text"] = content
    if merged.get("content_filter_results"):
        choice["content_filter_results"] = merged["content_filter_results"][-1]
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
