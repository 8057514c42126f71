"""Policy changes arriving as events: a `policy-updates` queue message, or a blob written to `policies/`.

Both the Azure Functions triggers and the local host's queue worker call these, so a change applies the
same way everywhere: validate, store, bump the version row; every instance then reloads within its poll
interval. A document that does not validate is logged and dropped (redelivery cannot fix it), and the
policies in force stay as they were.

Queue message (JSON, base64-encoded as the Functions queue extension expects), on the queue named by the
`GATEWAY_POLICY_QUEUE` setting (default `policy-updates`):
    {"scope": "api:openai", "xml": "<policies>…</policies>"}   or   {"scope": "…", "delete": true}
Blob names: `global.xml`, `products/<name>.xml`, `apis/<id>.xml`, `operations/<id>.xml`.

`function_app.py` imports this module for the trigger names, so what applying needs loads on first use.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.handling.gateway import Gateway
    from policies.document import Scope

logger = logging.getLogger(__name__)

#: The setting naming the queue (default `policy-updates`), so several gateways sharing a storage account
#: (different table prefixes) each read their own; Functions resolves it as `%GATEWAY_POLICY_QUEUE%`.
QUEUE_SETTING = "GATEWAY_POLICY_QUEUE"
BLOB_CONTAINER = "policies"
_BLOB_FOLDERS = {"products": "product", "apis": "api", "operations": "operation"}


async def apply_message(gateway: Gateway, text: str) -> int | None:
    """Apply one queue message; returns the new config version, or None when the message was rejected."""
    from gateway.stores.policies import apply_document
    from policies.document import Scope

    try:
        message: Any = orjson.loads(text)
        scope = Scope.parse(message["scope"])
        if message.get("delete") is True:
            return await gateway.policy_repository.delete(scope)
        xml = message["xml"]
        if not isinstance(xml, str):
            raise TypeError("'xml' must be a string")
        return await apply_document(gateway.policy_repository, scope, xml, gateway.loader)
    except (ValueError, KeyError, TypeError) as exc:
        logger.error("Rejected a policy update message: %s", exc)
        return None


async def apply_blob(gateway: Gateway, name: str, content: bytes) -> int | None:
    """Apply a policy blob (name relative to the container); None when rejected."""
    from gateway.stores.policies import apply_document

    try:
        scope = scope_from_blob_name(name)
        return await apply_document(gateway.policy_repository, scope, content.decode("utf-8"), gateway.loader)
    except (ValueError, UnicodeDecodeError) as exc:
        logger.error("Rejected policy blob %r: %s", name, exc)
        return None


def scope_from_blob_name(name: str) -> Scope:
    from policies.document import Scope

    name = name.removeprefix(BLOB_CONTAINER + "/")
    if not name.endswith(".xml"):
        raise ValueError(f"Policy blob {name!r} must end in .xml.")
    stem = name[: -len(".xml")]
    if stem == "global":
        return Scope("global")
    folder, _, item = stem.partition("/")
    if folder not in _BLOB_FOLDERS or not item or "/" in item:
        raise ValueError(f"Policy blob {name!r}: use global.xml, products/<name>.xml, apis/<id>.xml or operations/<id>.xml.")
    return Scope(_BLOB_FOLDERS[folder], item)


class LocalQueueWorker:
    """The queue trigger for hosts without the Functions runtime: polls `policy-updates` and applies messages.

    Several instances may poll one queue; each message is handled by whichever dequeues it (visibility
    timeout), like the Functions trigger.
    """

    def __init__(self, gateway: Gateway, connection_string: str, queue_name: str, poll_seconds: float = 1.0) -> None:
        self._gateway = gateway
        self._connection_string = connection_string
        self._queue_name = queue_name
        self._poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64DecodePolicy
        from azure.storage.queue.aio import QueueClient

        async with QueueClient.from_connection_string(
            self._connection_string, self._queue_name, message_decode_policy=TextBase64DecodePolicy()
        ) as queue:
            try:
                await queue.create_queue()
            except ResourceExistsError:
                pass
            while True:
                try:
                    async for message in queue.receive_messages(messages_per_page=16, visibility_timeout=30):
                        await apply_message(self._gateway, message.content)
                        await queue.delete_message(message)
                except Exception:
                    logger.warning("Polling %s failed; retrying.", self._queue_name, exc_info=True)
                await asyncio.sleep(self._poll_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
