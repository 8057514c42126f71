"""The message a body-changing statement works on: the request in `inbound`/`backend`, the response in
`outbound`/`on-error`.

A streamed answer (`text/event-stream`) is relayed to the client chunk by chunk as it arrives and never
buffered, so its body cannot be changed in `outbound`; the statements leave it untouched and log why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from policies.context import Body, Context, Headers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    body: Body
    headers: Headers


def message_of(context: Context, section: str, element: str) -> Message | None:
    """The message `element` changes in `section`, or None (no response yet, or a stream being relayed)."""
    if section in ("inbound", "backend"):
        return Message(context.Request.Body, context.Request.Headers)
    response = context.Response
    if response is None:
        return None
    if (response.Headers.GetValueOrDefault("content-type") or "").lower().startswith("text/event-stream"):
        logger.warning("<%s> left a streamed answer unchanged: streams are relayed as they arrive.", element)
        return None
    return Message(response.Body, response.Headers)
