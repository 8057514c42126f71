"""`log-to-eventhub` messages on their way to Azure Event Hubs, a Storage queue or append blobs.

The one module that talks to `azure-eventhub`, `azure-storage-queue` (for logs) and `azure-storage-blob`; each
SDK is imported when its first logger sends, so a gateway without loggers (and every cold start) never loads
them. A request only puts its message on a bounded in-memory queue (at most `MAX_QUEUED` messages and
`MAX_QUEUED_CHARS` characters); one background task sends what gathered every `LINGER_SECONDS`, in batches per logger
and partition. When the queue is full a message is dropped: one warning when dropping starts, one with the
count when it stops. A logger that fails (unreachable, refused) loses that batch and logs once per outage;
requests never wait for or fail because of a logger.

Message sizes: APIM truncates at 200 KB; so do Event Hubs and blob loggers here. A Storage queue message
holds 64 KiB of base64 (what the Functions queue trigger reads): queue loggers truncate at 48 KiB of text.
A partition key longer than Event Hubs' 128 characters is replaced by its SHA-256.

Blob loggers append one line per message to `<instance>/<UTC date>/<hour>.log` (an append blob; one block per
batch). On a graceful stop the queue is flushed for up to `close`'s grace period; a hard kill loses what
is queued (at most `LINGER_SECONDS` of messages, or what a failing logger holds up).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.backends.credentials import managed_identity_credential
from gateway.config.loggers import LoggerConfig

logger = logging.getLogger(__name__)

MAX_QUEUED = 2000
#: Characters queued at most (an approximation of memory that costs no encoding).
MAX_QUEUED_CHARS = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 200 * 1024
MAX_QUEUE_MESSAGE_BYTES = 48 * 1024
MAX_PARTITION_KEY = 128
LINGER_SECONDS = 0.2
#: Messages one send takes from the queue (an append block holds 4 MiB: 20 messages of 200 KB).
BATCH = 20


@dataclass(frozen=True)
class _Message:
    logger_id: str
    text: str
    partition_key: str | None
    partition_id: str | None


class _Sink(Protocol):
    async def send(self, texts: list[str], partition_key: str | None, partition_id: str | None) -> None: ...

    async def close(self) -> None: ...


class EventLogger:
    """`policies.services.EventLog`: queues messages and sends them in the background (`start()` first)."""

    def __init__(self, configs: Mapping[str, LoggerConfig], instance: str | None = None) -> None:
        self._configs = dict(configs)
        self._instance = instance or uuid.uuid4().hex[:12]
        self._queue: asyncio.Queue[_Message] = asyncio.Queue()
        self._queued_chars = 0
        self._sinks: dict[str, _Sink] = {}
        self._failing: set[str] = set()
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def logger_ids(self) -> frozenset[str]:
        return frozenset(self._configs)

    def log(self, logger_id: str, message: str, partition_key: str | None, partition_id: str | None) -> None:
        config = self._configs.get(logger_id)
        if config is None:  # a computed id cannot happen (logger-id takes no expressions); a removed logger can
            logger.warning("log-to-eventhub names logger %r, which is not in GATEWAY_LOGGERS: message dropped.", logger_id[:100])
            return
        text = _truncate(message, MAX_QUEUE_MESSAGE_BYTES if config.kind == "queue" else MAX_MESSAGE_BYTES)
        size = len(text)
        if self._queue.qsize() >= MAX_QUEUED or self._queued_chars + size > MAX_QUEUED_CHARS:
            if self._dropped == 0:
                logger.warning(
                    "The log-to-eventhub queue is full (%d messages, %d characters): dropping messages.", self._queue.qsize(), self._queued_chars
                )
            self._dropped += 1
            return
        if self._dropped:
            logger.warning("Dropped %d log-to-eventhub messages while the queue was full.", self._dropped)
            self._dropped = 0
        if partition_key is not None and len(partition_key) > MAX_PARTITION_KEY:
            partition_key = hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()
        self._queued_chars += size
        self._queue.put_nowait(_Message(logger_id, text, partition_key, partition_id))

    def start(self) -> None:
        if self._task is None and self._configs:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await asyncio.sleep(LINGER_SECONDS)
            await self._send([first, *self._take(BATCH * 50)])

    def _take(self, limit: int) -> list[_Message]:
        taken: list[_Message] = []
        while len(taken) < limit and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _send(self, messages: list[_Message]) -> None:
        self._queued_chars -= sum(len(message.text) for message in messages)
        groups: dict[tuple[str, str | None, str | None], list[str]] = {}
        for message in messages:
            groups.setdefault((message.logger_id, message.partition_key, message.partition_id), []).append(message.text)
        for (logger_id, partition_key, partition_id), texts in groups.items():
            for start in range(0, len(texts), BATCH):
                await self._send_batch(logger_id, texts[start : start + BATCH], partition_key, partition_id)

    async def _send_batch(self, logger_id: str, texts: list[str], partition_key: str | None, partition_id: str | None) -> None:
        try:
            sink = self._sinks.get(logger_id) or self._sinks.setdefault(logger_id, _sink(self._configs[logger_id], self._instance))
            await sink.send(texts, partition_key, partition_id)
        except Exception as exc:  # the SDKs' errors are many (AzureError, EventHubError, aiohttp, OSError): none may stop logging
            if logger_id not in self._failing:
                self._failing.add(logger_id)
                logger.warning("Logger %r failed (%s: %s); its messages are dropped until it works again.", logger_id, type(exc).__name__, exc)
            return
        if logger_id in self._failing:
            self._failing.discard(logger_id)
            logger.warning("Logger %r works again.", logger_id)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Send what is queued (for up to `grace_seconds`), then stop and close the SDK clients."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(grace_seconds):
                while not self._queue.empty():
                    await self._send(self._take(BATCH * 50))
        except TimeoutError:
            logger.warning("Stopped with %d log-to-eventhub messages unsent.", self._queue.qsize())
        for sink in self._sinks.values():
            await sink.close()


def _truncate(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _sink(config: LoggerConfig, instance: str) -> _Sink:
    if config.kind == "eventhub":
        return _EventHubSink(config)
    if config.kind == "queue":
        return _QueueSink(config)
    return _BlobSink(config, instance)


def _credential(config: LoggerConfig) -> Any:
    return config.connection.reveal() if config.connection is not None else managed_identity_credential(config.client_id)


class _EventHubSink:
    def __init__(self, config: LoggerConfig) -> None:
        from azure.eventhub.aio import EventHubProducerClient

        if config.connection is not None:
            self._client = EventHubProducerClient.from_connection_string(config.connection.reveal(), eventhub_name=config.name)
        else:
            self._client = EventHubProducerClient(config.endpoint or "", config.name, _credential(config))

    async def send(self, texts: list[str], partition_key: str | None, partition_id: str | None) -> None:
        from azure.eventhub import EventData

        batch = await self._client.create_batch(partition_key=partition_key, partition_id=partition_id)
        for text in texts:
            try:
                batch.add(EventData(text))
            except ValueError:  # the batch is full: send it and start the next
                await self._client.send_batch(batch)
                batch = await self._client.create_batch(partition_key=partition_key, partition_id=partition_id)
                batch.add(EventData(text))
        await self._client.send_batch(batch)

    async def close(self) -> None:
        await self._client.close()


class _QueueSink:
    """Base64-encoded, as the Functions queue trigger expects; the queue is created on first use."""

    def __init__(self, config: LoggerConfig) -> None:
        from azure.storage.queue.aio import QueueClient

        if config.connection is not None:
            self._client = QueueClient.from_connection_string(config.connection.reveal(), config.name)
        else:
            self._client = QueueClient(config.endpoint or "", config.name, credential=_credential(config))
        self._created = False

    async def send(self, texts: list[str], partition_key: str | None, partition_id: str | None) -> None:
        if not self._created:
            from azure.core.exceptions import ResourceExistsError

            try:
                await self._client.create_queue()
            except ResourceExistsError:
                pass
            self._created = True
        for text in texts:
            await self._client.send_message(base64.b64encode(text.encode()).decode())

    async def close(self) -> None:
        await self._client.close()


class _BlobSink:
    """Newline-delimited messages in an hourly append blob per instance; container and blob made on first use."""

    def __init__(self, config: LoggerConfig, instance: str) -> None:
        from azure.storage.blob.aio import ContainerClient

        if config.connection is not None:
            self._client = ContainerClient.from_connection_string(config.connection.reveal(), config.name)
        else:
            self._client = ContainerClient(config.endpoint or "", config.name, credential=_credential(config))
        self._instance = instance

    async def send(self, texts: list[str], partition_key: str | None, partition_id: str | None) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        now = datetime.now(UTC)
        blob = self._client.get_blob_client(f"{self._instance}/{now:%Y-%m-%d}/{now:%H}.log")
        data = "".join(text.replace("\n", " ") + "\n" for text in texts).encode()
        try:
            await blob.append_block(data)
        except ResourceNotFoundError:  # the first batch of the hour (or of all): make the container and the blob
            try:
                await self._client.create_container()
            except ResourceExistsError:
                pass
            await blob.create_append_blob()
            await blob.append_block(data)

    async def close(self) -> None:
        await self._client.close()
