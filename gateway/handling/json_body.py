"""Request bodies as JSON: parsed once, nesting bounded, refusals in the OpenAI error shape.

One nesting limit everywhere: `MAX_DEPTH` = 64 levels of arrays and objects (`[]` is one level, `{"a": []}`
two). That is the default of System.Text.Json, the parser behind Azure OpenAI, so no body the service would
accept is refused here; and it keeps every later reader safe: orjson parses up to 1,024 levels but serializes
only 254 (the semantic cache re-serializes), and recursive walks stay shallow. The gateway checks the client's
body once, before any policy runs, and answers 400 beyond the limit, or when the body is not JSON at all.

Checking costs nothing for ordinary bodies: a body with at most 64 `[` and `{` bytes cannot nest deeper, so
only bodies with more brackets are walked (iteratively). Bodies above `INLINE_BYTES` are parsed and walked in
the CPU pool, not on the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge
from gateway.handling import names
from gateway.handling.offload import Offload

MAX_DEPTH = 64
#: Bodies up to this size are parsed on the event loop (orjson parses ~1 GB/s: 0.25 ms).
INLINE_BYTES = 256 * 1024
_WINDOW = 1024 * 1024

TOO_DEEP = f"The request body is nested deeper than {MAX_DEPTH} levels of arrays and objects."


def parse(body: bytes) -> Any:
    """The body's JSON value; BadRequest when it is not JSON or nests deeper than `MAX_DEPTH`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson's own limit (1,024) was hit first
            raise BadRequest(TOO_DEEP) from None
        raise BadRequest(f"The request body is not valid JSON ({exc}).") from None
    if _brackets_exceed(body, MAX_DEPTH) and too_deep(value, MAX_DEPTH):
        raise BadRequest(TOO_DEEP)
    return value


def _brackets_exceed(body: bytes, limit: int) -> bool:
    """More than `limit` `[` and `{` bytes? Counted a window at a time, so no single call holds the GIL long."""
    total = 0
    for start in range(0, len(body), _WINDOW):
        window = body[start : start + _WINDOW]
        total += window.count(b"[") + window.count(b"{")
        if total > limit:
            return True
    return False


def too_deep(value: Any, limit: int) -> bool:
    """True when arrays and objects in `value` nest more than `limit` levels."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


async def load(body: bytes, offload: Offload) -> Any:
    """`parse`, off the event loop for large bodies."""
    if len(body) <= INLINE_BYTES:
        return parse(body)
    return await offload.run(lambda: parse(body))


class ParsedBody:
    """A request's JSON, parsed once per distinct body: the client's up front, a policy's replacement when first read."""

    __slots__ = ("_content", "_value")

    def __init__(self, content: bytes = b"", value: Any = None) -> None:
        self._content = content
        self._value = value

    def value(self, content: bytes) -> Any:
        """The JSON of `content` (None for an empty body); BadRequest as `parse`."""
        if content is not self._content:
            self.remember(content, parse(content) if content else None)
        return self._value

    @property
    def latest(self) -> Any:
        """The JSON last parsed (the client's body unless a replacement was read since), without parsing anything."""
        return self._value

    def remember(self, content: bytes, value: Any) -> None:
        """`content` is `value` serialized (the gateway rewrote the body itself): no need to parse it again."""
        self._content, self._value = content, value


async def read(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 once it passes `limit` bytes (declared or as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def model_from(payload: object) -> str:
    """The v1 body's `model`, checked by the deployment naming rule (gateway/handling/names.py)."""
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    return names.body_model(payload.get("model"))
