"""The local queue worker against Azurite: each message on its own, rejected at once when it can never apply,
retried and then moved to `<queue>-poison` when it keeps failing, as the Functions queue trigger does."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from gateway.config.settings import Settings
from gateway.dev import devstack
from gateway.stores import policy_updates
from tests.stack_helpers import FailingTableProxy, logged_gateway

HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
DOCUMENT = "<policies><inbound><base /></inbound></policies>"
#: Table requests naming this row fail with 500, as if storage failed for this one update every time.
FAILING_ROW = "operation:embeddings_create"


@pytest.fixture
def failing_table(azurite: devstack.AzuritePorts) -> Iterator[FailingTableProxy]:
    with FailingTableProxy(azurite.table, FAILING_ROW) as proxy:
        yield proxy


def test_attempts_and_pause_are_those_of_the_functions_trigger() -> None:
    queues = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    assert queues["maxDequeueCount"] == policy_updates.MAX_DEQUEUE_COUNT
    hours, minutes, seconds = (int(part) for part in queues["visibilityTimeout"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds == policy_updates.RETRY_SECONDS
    base = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}
    assert Settings.from_env(base).policy_queue_retry_seconds == policy_updates.RETRY_SECONDS


def test_queue_names_leave_room_for_the_poison_queue() -> None:
    base = {"GATEWAY_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "GATEWAY_KEY_PEPPER": "p" * 20}
    assert Settings.from_env({**base, "GATEWAY_POLICY_QUEUE": "q" * 56}).policy_queue == "q" * 56
    with pytest.raises(ValueError, match="3-56"):
        Settings.from_env({**base, "GATEWAY_POLICY_QUEUE": "q" * 57})


def send(queue: QueueClient, payload: object) -> None:
    queue.send_message(json.dumps(payload))


def stored_scopes(env: dict[str, str], connection: str) -> set[str]:
    table = TableClient.from_connection_string(connection, env["GATEWAY_TABLE_PREFIX"] + "policies")
    try:
        return {e["RowKey"] for e in table.query_entities("PartitionKey eq 'document'")}
    except Exception:  # no table before the first write
        return set()


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_one_failing_message_is_poisoned_after_five_attempts_and_blocks_nothing(
    gateway_env: dict[str, str], azurite: devstack.AzuritePorts, failing_table: FailingTableProxy, tmp_path: Path
) -> None:
    direct = azurite.connection_string()
    queue_name = "updates-" + secrets.token_hex(4)
    env = {
        **gateway_env,
        "GATEWAY_STORAGE_CONNECTION": direct.replace(f":{azurite.table}/", f":{failing_table.port}/"),
        "GATEWAY_TABLE_PREFIX": "q" + secrets.token_hex(4),
        "GATEWAY_POLICY_QUEUE": queue_name,
        "GATEWAY_POLICY_QUEUE_RETRY_SECONDS": "1",
        "GATEWAY_LOCAL_QUEUE_WORKER": "true",
    }
    encoded = QueueClient.from_connection_string(direct, queue_name, message_encode_policy=TextBase64EncodePolicy())
    raw = QueueClient.from_connection_string(direct, queue_name)
    poison = QueueClient.from_connection_string(direct, queue_name + policy_updates.POISON_SUFFIX)
    raw.create_queue()
    # In one batch: a message that keeps failing, one that can never apply, one that is not base64, and a good one.
    send(encoded, {"scope": FAILING_ROW, "xml": DOCUMENT})
    send(encoded, {"scope": "api:openai", "xml": "<policies><inbound><no-such-statement /></inbound></policies>"})
    send(encoded, {"scope": ["not", "a", "scope"], "xml": DOCUMENT})
    raw.send_message("this is not base64 {}")
    send(encoded, {"scope": "operation:ChatCompletions_Create", "xml": DOCUMENT})
    log = tmp_path / "gateway.log"
    with logged_gateway(env, log):
        wait_until(lambda: "operation:ChatCompletions_Create" in stored_scopes(env, direct), 10, "the good update was held up")
        wait_until(lambda: len(poison.peek_messages(max_messages=32)) == 2, 40, "the failing message never reached the poison queue")
        wait_until(lambda: raw.get_queue_properties().approximate_message_count == 0, 10, "messages are left on the queue")
        # Sent again after a fix, the same update applies: nothing about it is remembered as bad.
        send(encoded, {"scope": "operation:Completions_Create", "xml": DOCUMENT})
        wait_until(lambda: "operation:Completions_Create" in stored_scopes(env, direct), 10, "a later update was held up")
    text = log.read_text()
    poisoned = sorted(m.content for m in poison.peek_messages(max_messages=32))
    failing = base64.b64encode(json.dumps({"scope": FAILING_ROW, "xml": DOCUMENT}).encode()).decode()
    assert poisoned == sorted([failing, "this is not base64 {}"])  # as sent, so an operator can send them again
    assert stored_scopes(env, direct) == {"operation:ChatCompletions_Create", "operation:Completions_Create"}
    assert text.count("A policy update failed (attempt") == policy_updates.MAX_DEQUEUE_COUNT - 1
    assert text.count(f"A policy update failed {policy_updates.MAX_DEQUEUE_COUNT} times; moved to {queue_name}-poison") == 1
    assert text.count("is not base64-encoded UTF-8 text; moved to") == 1
    # Never-applicable messages: rejected once each, with the reason, and not retried.
    assert text.count("Rejected a policy update message") == 2
    assert "no-such-statement" in text and '"fragment" string' in text
    assert failing_table.refused >= policy_updates.MAX_DEQUEUE_COUNT
