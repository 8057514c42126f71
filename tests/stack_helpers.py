"""Helpers for end-to-end tests that apply policies and read the metrics table of a test gateway."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from azure.data.tables import EntityProperty, TableClient
from click.testing import CliRunner

from gateway.cli.main import main as cli
from gateway.dev import devstack


def token_env(gateway_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **gateway_env,
        "GATEWAY_TABLE_PREFIX": "k" + secrets.token_hex(4),
        "GATEWAY_POLICY_POLL_SECONDS": "0.3",
        "GATEWAY_METRICS_FLUSH_SECONDS": "0.5",
        "GATEWAY_LOCAL_QUEUE_WORKER": "false",
        **extra,
    }


def apply(env: dict[str, str], xml: str, tmp_path: Path) -> None:
    path = tmp_path / f"policy-{secrets.token_hex(3)}.xml"
    path.write_text(xml)
    result = CliRunner().invoke(cli, ["policies", "apply", str(path), "--scope", "global"], env=env)
    assert result.exit_code == 0, result.output


def metric_rows(env: dict[str, str]) -> list[dict]:
    table = TableClient.from_connection_string(env["GATEWAY_STORAGE_CONNECTION"], env["GATEWAY_TABLE_PREFIX"] + "metrics")
    try:
        return [dict(e) for e in table.list_entities()]
    except Exception:  # the table does not exist until the first flush
        return []


def metric_sum(env: dict[str, str], field: str) -> int:
    return sum(int(r[field].value if isinstance(r[field], EntityProperty) else r[field]) for r in metric_rows(env))


def wait_for_metric(env: dict[str, str], field: str, expected: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (value := metric_sum(env, field)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


@contextlib.contextmanager
def logged_gateway(env: dict[str, str], log: Path) -> Iterator[str]:
    """A gateway process of its own (`python -m gateway serve`) whose stderr goes to `log`; yields its URL."""
    port = devstack.free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)], env={**os.environ, **env}, cwd=devstack.REPO_ROOT, stderr=sink
        )
        try:
            devstack.wait_for_port(port, process)
            yield f"http://127.0.0.1:{port}"
        finally:
            devstack.stop(process)
