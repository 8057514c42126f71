"""Policy changes arriving as events: a `policy-updates` queue message, or a blob written to `policies/`.

Both the Azure Functions triggers and the local host's queue worker call these, so a change applies the
same way everywhere: validate, store, bump the version row; every instance then reloads within its poll
interval. A message or blob that can never apply (not JSON, no valid scope, a document that does not load,
a row Table Storage refuses) is logged and dropped at once: redelivery cannot fix it, and the policies in
force stay as they were. Anything else that fails (storage unreachable) raises, so the message is tried again.

Queue message (JSON, base64-encoded as the Functions queue extension expects), on the queue named by the
`GATEWAY_POLICY_QUEUE` setting (default `policy-updates`):
    {"scope": "api:openai", "xml": "<policies>…</policies>"}   or   {"scope": "…", "delete": true}
    {"fragment": "<id>", "xml": "<fragment>…</fragment>"}      or   {"fragment": "<id>", "delete": true}
Blob names: `global.xml`, `products/<name>.xml`, `apis/<id>.xml`, `operations/<id>.xml`, `fragments/<id>.xml`.
A scope must name a known API, operation or product (GATEWAY_PRODUCTS), as the CLI requires.

**Retries and poison messages**, as the Functions queue trigger does them (host.json `extensions.queues`):
a message that failed is tried again after `visibilityTimeout` (30 s), at most `maxDequeueCount` (5) times
in all; after the last failed attempt it moves to the queue `<queue>-poison`, where an operator can read it
and send it again. A message that is not base64-encoded UTF-8 moves there at once, as the Functions extension
does with one it cannot decode.

`function_app.py` imports this module for the trigger names, so what applying needs loads on first use.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import EntityRejected

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

    from gateway.handling.gateway import Gateway
    from policies.document import Scope

logger = logging.getLogger(__name__)

#: The setting naming the queue (default `policy-updates`), so several gateways sharing a storage account
#: (different table prefixes) each read their own; Functions resolves it as `%GATEWAY_POLICY_QUEUE%`.
QUEUE_SETTING = "GATEWAY_POLICY_QUEUE"
BLOB_CONTAINER = "policies"
_BLOB_FOLDERS = {"products": "product", "apis": "api", "operations": "operation"}
_FRAGMENT_FOLDER = "fragments"
#: host.json `extensions.queues`: attempts before a message moves to the poison queue, and the pause between them.
MAX_DEQUEUE_COUNT = 5
RETRY_SECONDS = 30
POISON_SUFFIX = "-poison"
#: While the local worker handles a message, nobody else sees it (a document loads and stores in seconds).
_PROCESSING_SECONDS = 60
#: Messages fetched and handled together (host.json `batchSize`).
_BATCH = 16


async def apply_message(gateway: Gateway, text: str | bytes) -> int | None:
    """Apply one queue message; returns the new config version, or None when the message was rejected (logged).

    Raises only for failures worth retrying (storage unreachable), so the trigger tries the message again.
    """
    from policies.document import Scope

    try:
        message: Any = orjson.loads(text)
        if not isinstance(message, dict) or not (isinstance(message.get("scope"), str) or isinstance(message.get("fragment"), str)):
            raise ValueError('the message must be a JSON object with a "scope" or "fragment" string')
        target = Fragment(message["fragment"]) if "fragment" in message else Scope.parse(message["scope"])
        if message.get("delete") is True:
            return await _delete(gateway, target)
        xml = message.get("xml")
        if not isinstance(xml, str):
            raise ValueError('"xml" must be a string (or "delete": true)')
        return await _apply(gateway, target, xml)
    except (ValueError, KeyError, TypeError, EntityRejected) as exc:  # PolicyLoadError and JSONDecodeError are ValueErrors
        logger.error("Rejected a policy update message: %s", exc)
        return None


async def apply_blob(gateway: Gateway, name: str, content: bytes) -> int | None:
    """Apply a policy blob (name relative to the container); None when rejected (logged)."""
    try:
        return await _apply(gateway, target_from_blob_name(name), content.decode("utf-8"))
    except (ValueError, EntityRejected) as exc:  # UnicodeDecodeError is a ValueError
        logger.error("Rejected policy blob %r: %s", name, exc)
        return None


@dataclass(frozen=True)
class Fragment:
    """A policy fragment an update names (by id), as opposed to a document's `Scope`."""

    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError("'fragment' must be a string")


async def _apply(gateway: Gateway, target: Scope | Fragment, xml: str) -> int:
    from gateway.handling.operations import check_policy_scope
    from gateway.stores.policies import apply_document, apply_fragment

    if isinstance(target, Fragment):
        return (await apply_fragment(gateway.policy_repository, target.id, xml, gateway.loader))[0]
    check_policy_scope(target, gateway.settings.products)
    return await apply_document(gateway.policy_repository, target, xml, gateway.loader)


async def _delete(gateway: Gateway, target: Scope | Fragment) -> int | None:
    from gateway.stores.policies import delete_fragment

    if isinstance(target, Fragment):
        return await delete_fragment(gateway.policy_repository, target.id)
    return await gateway.policy_repository.delete(target)


def target_from_blob_name(name: str) -> Scope | Fragment:
    """The scope or fragment a blob in the `policies` container stands for; ValueError for other names."""
    from policies.document import Scope

    name = name.removeprefix(BLOB_CONTAINER + "/")
    if not name.endswith(".xml"):
        raise ValueError(f"Policy blob {name!r} must end in .xml.")
    stem = name[: -len(".xml")]
    if stem == "global":
        return Scope("global")
    folder, _, item = stem.partition("/")
    if folder not in (*_BLOB_FOLDERS, _FRAGMENT_FOLDER) or not item or "/" in item:
        raise ValueError(f"Policy blob {name!r}: use global.xml, products/<name>.xml, apis/<id>.xml, operations/<id>.xml or fragments/<id>.xml.")
    return Fragment(item) if folder == _FRAGMENT_FOLDER else Scope(_BLOB_FOLDERS[folder], item)


class LocalQueueWorker:
    """The queue trigger for hosts without the Functions runtime: polls `policy-updates` and applies messages.

    Like the Functions trigger, it fetches up to 16 messages at a time and handles each on its own (at the
    same time), so one that fails never holds up the others; failures are retried and poisoned as the module
    docstring says. Several instances may poll one queue; a message is handled by whichever dequeued it.
    """

    def __init__(
        self, gateway: Gateway, connection_string: str, queue_name: str, poll_seconds: float = 1.0, retry_seconds: int = RETRY_SECONDS
    ) -> None:
        self._gateway = gateway
        self._connection_string = connection_string
        self._queue_name = queue_name
        self._poll_seconds = poll_seconds
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        from azure.storage.queue.aio import QueueClient

        # No decode policy: one message that is not base64 must not fail the page it arrives in.
        async with (
            QueueClient.from_connection_string(self._connection_string, self._queue_name) as queue,
            QueueClient.from_connection_string(self._connection_string, self._queue_name + POISON_SUFFIX) as poison,
        ):
            created = False
            while True:
                try:
                    if not created:
                        await _create(queue)
                        created = True
                    messages = [
                        m async for m in queue.receive_messages(messages_per_page=_BATCH, max_messages=_BATCH, visibility_timeout=_PROCESSING_SECONDS)
                    ]
                    outcomes = await asyncio.gather(*(self._handle(queue, poison, message) for message in messages), return_exceptions=True)
                    for outcome in outcomes:  # the queue itself failed (a delete, a release): the message comes back
                        if isinstance(outcome, Exception):
                            logger.warning("Settling a message on %s failed; it will be delivered again.", self._queue_name, exc_info=outcome)
                except Exception:
                    logger.warning("Polling %s failed; retrying.", self._queue_name, exc_info=True)
                    messages = []
                if len(messages) < _BATCH:
                    await asyncio.sleep(self._poll_seconds)

    async def _handle(self, queue: QueueClient, poison: QueueClient, message: QueueMessage) -> None:
        """Apply one message, then delete it, give it back for a retry, or move it to the poison queue."""
        try:
            text = base64.b64decode(message.content, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error and UnicodeDecodeError
            logger.error("A message on %s is not base64-encoded UTF-8 text; moved to %s.", self._queue_name, poison.queue_name)
            await _move(queue, poison, message)
            return
        try:
            await apply_message(self._gateway, text)
        except Exception:
            if message.dequeue_count is not None and message.dequeue_count >= MAX_DEQUEUE_COUNT:
                logger.error("A policy update failed %d times; moved to %s.", message.dequeue_count, poison.queue_name, exc_info=True)
                await _move(queue, poison, message)
            else:
                logger.warning(
                    "A policy update failed (attempt %s of %d); retrying in %d s.", message.dequeue_count, MAX_DEQUEUE_COUNT, self._retry_seconds,
                    exc_info=True,
                )  # fmt: skip
                await queue.update_message(message, visibility_timeout=self._retry_seconds)
            return
        await queue.delete_message(message)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _create(queue: QueueClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        await queue.create_queue()
    except ResourceExistsError:
        pass


async def _move(queue: QueueClient, poison: QueueClient, message: QueueMessage) -> None:
    """Copy the message as it was sent to the poison queue (created on first use), then delete it here."""
    await _create(poison)
    await poison.send_message(message.content)
    await queue.delete_message(message)
