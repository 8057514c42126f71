"""Responses API ids bound to the subscription that created them, on the request path (the rule and the table:
gateway/stores/response_owners.py).

Before anything is forwarded, `check_access` refuses `GET`/`DELETE /openai/v1/responses/{id}` and a create
request's `previous_response_id` for a response the caller's subscription did not create. After the backend
created one (status 200), its id is recorded: from a buffered answer's JSON `id` before the answer is returned
(`record_answer`), from a stream's first event, `response.created`, as it passes (`ResponseIdTap`: in memory at
once, in the table within one background write, while the stream goes on). An id out of the response-id rule
(gateway/handling/names.py) is never recorded and belongs to no one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway.errors import ResponseNotFound
from gateway.handling.names import RESPONSE_ID
from gateway.handling.usage import StreamTap
from gateway.stores.response_owners import ResponseOwners

CREATE = "createResponse"
_BY_ID = ("getResponse", "deleteResponse")


async def check_access(owners: ResponseOwners, operation_id: str, params: Mapping[str, str], payload: object, subscription: str) -> None:
    """Raise `ResponseNotFound` (404) unless `subscription` created every response the request names.

    `payload` is the request body as the handler parsed it (once, off the loop when large)."""
    if operation_id in _BY_ID:
        await owners.check(params["response-id"], subscription)  # the route checked its shape
    elif operation_id == CREATE:
        previous = payload.get("previous_response_id") if isinstance(payload, dict) else None
        if isinstance(previous, str):  # anything else is the backend's to refuse
            if not RESPONSE_ID.fullmatch(previous):
                raise ResponseNotFound(None, previous=True)
            await owners.check(previous, subscription, previous=True)


async def record_answer(owners: ResponseOwners, body: bytes, subscription: str) -> None:
    """Record the owner of the response a buffered create answer describes."""
    response_id = _field(body, "id")
    if isinstance(response_id, str) and RESPONSE_ID.fullmatch(response_id):
        await owners.record(response_id, subscription)


class ResponseIdTap(StreamTap):
    """A stream tap that also hands the id in the stream's `response.created` event to `on_id`, once.

    The Responses API sends that event first; if the first event is another one, the stream is not searched further.
    """

    def __init__(self, on_id: Callable[[str], None], **options: bool) -> None:
        super().__init__(**options)
        self._on_id: Callable[[str], None] | None = on_id

    def feed(self, chunk: bytes) -> bytes:
        passed = super().feed(chunk)
        if self._on_id is not None and passed:
            payload = _first_event_data(passed)
            if payload is not None:
                response = payload.get("response") if payload.get("type") == "response.created" else None
                response_id = response.get("id") if isinstance(response, dict) else None
                if isinstance(response_id, str) and RESPONSE_ID.fullmatch(response_id):
                    self._on_id(response_id)
                self._on_id = None
        return passed


def _first_event_data(events: bytes) -> dict[str, Any] | None:
    """The JSON `data` of the first event in `events` that has one (None if none does or it is no object)."""
    for event in events.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    payload = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    return {}
                return payload if isinstance(payload, dict) else {}
    return None


def _field(body: bytes, name: str) -> object:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload.get(name) if isinstance(payload, dict) else None
