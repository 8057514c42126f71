"""Helpers for end-to-end tests that apply policies and read the metrics table of a test gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from azure.data.tables import EntityProperty, TableClient
from click.testing import CliRunner
from yarl import URL

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


def number(value: object) -> int:
    """A row's integer, whether the tables SDK gives it plain or as an Edm.Int64 `EntityProperty`."""
    return int(value.value if isinstance(value, EntityProperty) else value)  # type: ignore[arg-type]


def metric_sum(env: dict[str, str], field: str) -> int:
    return sum(number(r[field]) for r in metric_rows(env))


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


class FailingTableProxy:
    """A loopback proxy in front of Azurite's table endpoint that answers 500 to requests whose path (decoded)
    contains `marker`, as if storage failed for those rows or that table every time; it forwards the rest."""

    def __init__(self, target_port: int, marker: str) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.marker = marker
        self.port = devstack.free_port()
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.marker in unquote(request.raw_path):
            self.refused += 1
            return web.Response(status=500, text="injected failure")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")}
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Content-Type",)) as session,
            session.request(request.method, URL(self.target + request.raw_path, encoded=True), headers=headers, data=body or None) as answer,
        ):
            body = await answer.read()
            relayed = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            return web.Response(status=answer.status, body=body, headers=relayed)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def __enter__(self) -> FailingTableProxy:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
