"""A Functions worker that is stopped gives its lease back and writes its buffered metrics (gateway/hosts/lifecycle.py).

The worker (tests/functions_host.py) imports `function_app` and serves through the HTTP streaming extension's
server, as on the platform; it takes a lease of a monthly token quota and records metrics whose flush interval
is far away, then it is stopped: by SIGTERM (the extension's uvicorn drains open streams, then hands the signal
on), or by its event loop ending (the interpreter exits). The tables, not the process, say what happened.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.data.tables import EntityProperty, TableClient
from openai import AzureOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests import functions_host
from tests.conftest import API_VERSION, Keys
from tests.stack_helpers import apply, metric_rows, metric_sum, token_env

POLICY = """<policies><inbound><base />
  <azure-openai-token-limit counter-key="@(context.Subscription.Id)" token-quota="1000000" token-quota-period="Monthly" estimate-prompt-tokens="true" />
  <azure-openai-emit-token-metric namespace="lifecycle"><dimension name="Subscription ID" /></azure-openai-emit-token-metric>
</inbound></policies>"""
QUESTION = "one two three four five six seven eight"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


def counter_rows(env: dict[str, str]) -> list[dict]:
    table = TableClient.from_connection_string(env["GATEWAY_STORAGE_CONNECTION"], env["GATEWAY_TABLE_PREFIX"] + "counters")
    with table:
        return [{name: value.value if isinstance(value, EntityProperty) else value for name, value in row.items()} for row in table.list_entities()]


@pytest.fixture
def worker(
    gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> Iterator[tuple[functions_host.FunctionsApp, AzureOpenAI, dict[str, str]]]:
    # Metrics are flushed every 10 minutes and leases renewed every 200 s: only a stop can write them in time.
    env = token_env(gateway_env, GATEWAY_METRICS_FLUSH_SECONDS="600", GATEWAY_LEASE_SECONDS="600")
    keys = create_subscription("lifecycle", env=env)
    apply(env, POLICY, tmp_path)
    app = functions_host.start(env, tmp_path / "worker.log")
    yield app, AzureOpenAI(azure_endpoint=app.url, api_key=keys.primary, api_version=API_VERSION, max_retries=0), env
    functions_host.stop(app)


def held_lease(env: dict[str, str]) -> str:
    """The one instance holding a lease of the quota, which must hold some of it."""
    (row,) = counter_rows(env)
    ((instance, (held, _expires)),) = json.loads(row["leases"]).items()
    assert held > 0
    return instance


def test_sigterm_drains_an_open_stream_then_gives_the_lease_back_and_writes_metrics(
    worker: tuple[functions_host.FunctionsApp, AzureOpenAI, dict[str, str]],
) -> None:
    app, client, env = worker
    used = client.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage
    assert used is not None
    instance = held_lease(env)
    assert metric_rows(env) == []  # still buffered

    streamed: list[str] = []
    started = threading.Event()

    def stream() -> None:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-sim-token-ms": "150"}):
            if chunk.choices and chunk.choices[0].delta.content:
                streamed.append(chunk.choices[0].delta.content)
                started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(10)
    app.worker.send_signal(signal.SIGTERM)
    reader.join(20)
    assert "".join(streamed) == "Simulated answer to: " + QUESTION  # the stream ran to its end

    assert app.worker.wait(30) == -signal.SIGTERM  # then the process ended by the signal, as it would have
    (row,) = counter_rows(env)
    assert instance not in json.loads(row["leases"])
    assert row["settled"] == 2 * used.total_tokens
    assert metric_sum(env, "requests") == 2 and metric_sum(env, "total") == 2 * used.total_tokens
    assert "Stopped on SIGTERM: leases given back, metrics written." in app.log.read_text()


def test_interpreter_exit_gives_the_lease_back_and_writes_metrics(worker: tuple[functions_host.FunctionsApp, AzureOpenAI, dict[str, str]]) -> None:
    app, client, env = worker
    used = client.chat.completions.create(model="gpt-4o", messages=MESSAGES).usage
    assert used is not None
    instance = held_lease(env)

    assert app.stop_worker_normally() == 0  # its loop ended (and closed): the exit hook reconnects on a new one
    (row,) = counter_rows(env)
    assert instance not in json.loads(row["leases"])
    assert row["settled"] == used.total_tokens
    assert metric_sum(env, "requests") == 1 and metric_sum(env, "total") == used.total_tokens
    assert "At exit: leases given back, metrics written." in app.log.read_text()
