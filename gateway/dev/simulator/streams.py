"""Server-sent events as Azure OpenAI frames them, yielded token by token, and the stream faults that break them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.dev.simulator.faults import StreamFault

#: Stands for the token in a chunk template; `frame` splits the serialised chunk around it.
SENTINEL = "\x00token\x00"
_SENTINEL_JSON = orjson.dumps(SENTINEL)
DONE = b"data: [DONE]\n\n"


class _DroppedStream(Exception):
    """Raised out of a response body so uvicorn closes the connection without the final chunk."""


class _QuietDrops(logging.Filter):
    """A deliberate drop is not an error of the simulator: keep uvicorn's traceback for it out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedStream))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def _event_line(payload: dict[str, Any]) -> bytes:
    """Responses API events name their type on an `event:` line as well."""
    kind = payload.get("type")
    return b"event: " + kind.encode() + b"\n" if isinstance(kind, str) else b""


def frame(payload: dict[str, Any]) -> tuple[bytes, bytes]:
    """Split a chunk around its sentinel once, so each streamed token costs one tiny dumps."""
    head, tail = orjson.dumps(payload).split(_SENTINEL_JSON)
    return _event_line(payload) + b"data: " + head, tail + b"\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return _event_line(payload) + b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse(
    opening: list[bytes],
    frames: list[tuple[bytes, bytes]],
    words: list[str],
    closing: list[bytes],
    delay_s: float,
    fault: StreamFault | None = None,
) -> AsyncIterator[bytes]:
    """Yield every event on its own so proxies see real token-by-token streaming; `closing` ends the stream."""
    for opening_event in opening:
        yield opening_event
    for position, word in enumerate(words):
        if fault is not None and position == fault.after:
            if fault.kind == "end":
                return
            if fault.kind == "stall":
                await asyncio.sleep(fault.stall_s)
            raise _DroppedStream()
        if delay_s:
            await asyncio.sleep(delay_s)
        piece = orjson.dumps(word if position == 0 else " " + word)
        for head, tail in frames:
            yield head + piece + tail
    for closing_event in closing:
        yield closing_event


async def in_pieces(data: bytes, count: int) -> AsyncIterator[bytes]:
    """Send a binary body in `count` pieces, as a streamed audio answer arrives."""
    size = -(-len(data) // count)
    for start in range(0, len(data), size):
        yield data[start : start + size]
