"""`log-to-eventhub`: the loggers setting, the statement over a fake, and the background sender with fake sinks."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import pytest

from gateway.config.loggers import LoggerConfig, parse_loggers
from gateway.stores import event_log
from gateway.stores.event_log import MAX_MESSAGE_BYTES, MAX_QUEUE_MESSAGE_BYTES, EventLogger
from policies.errors import PolicyLoadError
from policies.statement import Loader
from tests.policy_helpers import doc, pipeline_of, run_document


def test_loggers_setting_reads_connection_settings_and_managed_identities() -> None:
    loggers = parse_loggers({
        "EH": "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s",
        "GATEWAY_LOGGERS": json.dumps({
            "audit": {"type": "eventhub", "connection_setting": "EH", "name": "audit-hub"},
            "archive": {"type": "blob", "endpoint": "https://acct.blob.core.windows.net", "name": "logs", "managed_identity": {"client_id": "c1"}},
        }),
    })  # fmt: skip
    assert loggers["audit"].kind == "eventhub" and loggers["audit"].connection is not None
    assert "SharedAccessKey=s" not in repr(loggers["audit"])
    assert (loggers["archive"].endpoint, loggers["archive"].client_id) == ("https://acct.blob.core.windows.net", "c1")


@pytest.mark.parametrize(
    ("logger", "message"),
    [
        ({"type": "kafka", "connection_setting": "C", "name": "x"}, "'type' must be one of"),
        ({"type": "queue", "connection_setting": "C", "name": "Bad_Name"}, "'name' must be a queue name"),
        ({"type": "queue", "connection_setting": "MISSING", "name": "logs"}, "'MISSING' is missing"),
        ({"type": "queue", "name": "logs"}, "give either 'connection_setting'"),
        ({"type": "queue", "endpoint": "https://a.queue.core.windows.net", "name": "logs"}, 'needs "managed_identity"'),
        ({"type": "queue", "connection_setting": "C", "name": "logs", "secret": "x"}, "unknown key 'secret'"),
    ],
)
def test_loggers_setting_errors_name_the_logger(logger: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_loggers({"C": "UseDevelopmentStorage=true", "GATEWAY_LOGGERS": json.dumps({"l1": logger})})


async def test_statement_logs_the_evaluated_message_and_partition_key() -> None:
    xml = doc(
        outbound='<log-to-eventhub logger-id="audit" partition-key="@(context.Subscription.Id)">@("status " + context.Response.StatusCode)</log-to-eventhub>'
    )
    _, _, services = await run_document(xml)
    assert services.event_log.messages == [("audit", "status 200", "sub-1", None)]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('<log-to-eventhub logger-id="nope">m</log-to-eventhub>', "Unknown logger-id 'nope'"),
        ('<log-to-eventhub logger-id="audit" partition-id="0" partition-key="k">m</log-to-eventhub>', "not both"),
        ('<log-to-eventhub logger-id="audit" partition-id="first">m</log-to-eventhub>', "not a partition index"),
        ('<log-to-eventhub logger-id="@(&quot;audit&quot;)">m</log-to-eventhub>', "does not accept policy expressions"),
    ],
)
def test_load_errors(statement: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message):
        pipeline_of(doc(inbound=statement), Loader(logger_ids=frozenset({"audit"})))


class FakeSink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[list[str], str | None, str | None]] = []
        self.fail = fail
        self.closed = False

    async def send(self, texts: list[str], partition_key: str | None, partition_id: str | None) -> None:
        if self.fail:
            raise ConnectionError("unreachable")
        self.batches.append((texts, partition_key, partition_id))

    async def close(self) -> None:
        self.closed = True


CONFIGS = {"hub": LoggerConfig("hub", "eventhub", "h"), "queue": LoggerConfig("queue", "queue", "q")}


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeSink]:
    made: dict[str, FakeSink] = {}
    monkeypatch.setattr(event_log, "_sink", lambda config, instance: made.setdefault(config.id, FakeSink(config.id == "broken")))
    monkeypatch.setattr(event_log, "LINGER_SECONDS", 0.01)
    return made


async def test_messages_go_out_in_the_background_batched_per_logger_and_partition(sinks: dict[str, FakeSink]) -> None:
    logger = EventLogger(CONFIGS)
    logger.start()
    logger.log("hub", "a", "k1", None)
    logger.log("hub", "b", "k1", None)
    logger.log("hub", "c", None, "2")
    logger.log("queue", "q" * (MAX_QUEUE_MESSAGE_BYTES + 10), None, None)
    logger.log("hub", "é" * MAX_MESSAGE_BYTES, "k" * 300, None)
    await asyncio.sleep(0.2)
    await logger.close()
    hub = sinks["hub"].batches
    assert hub[0] == (["a", "b"], "k1", None) and hub[1] == (["c"], None, "2")
    assert len(hub[2][0][0].encode()) <= MAX_MESSAGE_BYTES and len(hub[2][1] or "") == 64  # truncated; long key hashed
    assert len(sinks["queue"].batches[0][0][0]) == MAX_QUEUE_MESSAGE_BYTES
    assert sinks["hub"].closed and sinks["queue"].closed


async def test_a_full_queue_drops_messages_and_logs_once_per_burst(
    sinks: dict[str, FakeSink], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(event_log, "MAX_QUEUED", 3)
    logger = EventLogger(CONFIGS)
    with caplog.at_level(logging.WARNING, logger="gateway.stores.event_log"):
        for index in range(10):
            logger.log("hub", f"m{index}", None, None)
        await logger.close()
    assert sinks["hub"].batches == [(["m0", "m1", "m2"], None, None)]
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1


async def test_a_failing_logger_loses_its_batch_logs_once_and_never_raises(sinks: dict[str, FakeSink], caplog: pytest.LogCaptureFixture) -> None:
    logger = EventLogger({"broken": LoggerConfig("broken", "queue", "q"), **CONFIGS})
    logger.start()
    with caplog.at_level(logging.WARNING, logger="gateway.stores.event_log"):
        for index in range(3):
            logger.log("broken", f"x{index}", None, None)
            logger.log("hub", f"y{index}", None, None)
            await asyncio.sleep(0.05)
        await logger.close()
    assert [text for batch in sinks["hub"].batches for text in batch[0]] == ["y0", "y1", "y2"]
    assert sum("Logger 'broken' failed" in r.getMessage() for r in caplog.records) == 1


def test_the_logging_sdks_are_not_imported_at_start() -> None:
    code = "import sys, gateway.handling.gateway; print(sorted(m for m in sys.modules if m.startswith(('azure.eventhub', 'azure.storage.blob'))))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
