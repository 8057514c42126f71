"""Shared pieces of the benchmarks: the local stack, a loopback load generator, and CPU time from /proc.

Everything runs on 127.0.0.1; request loops are bounded in count. Numbers from a 2-core machine where the
load generator, gateway and backend share the cores: compare columns within one run, not across machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.dev import devstack

API_VERSION = "2024-10-21"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    simulator_url: str
    simulator_key: str
    gateway_url: str
    gateway_pid: int
    subscription_key: str
    env: dict[str, str]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/<pid>/status), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def apply_policy(env: dict[str, str], xml: str, scope: str = "global") -> None:
    """Store a policy document through the CLI, as an operator would; gateways pick it up at their next poll."""
    subprocess.run(
        [sys.executable, "-m", "gateway", "policies", "apply", "-", "--scope", scope],
        input=xml, env={**os.environ, **env}, cwd=devstack.REPO_ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Services:
    """Azurite and the simulator, and the environment a gateway needs to use them (add a table prefix)."""

    simulator_url: str
    simulator_key: str
    env: dict[str, str]


@contextmanager
def services(in_memory_storage: bool = False) -> Iterator[Services]:
    """Azurite and the simulator on loopback; both stopped on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ports = devstack.AzuritePorts(devstack.free_port(), devstack.free_port(), devstack.free_port())
        processes.append(devstack.start_azurite(Path(tempfile.mkdtemp(prefix="bench-azurite-")), ports, in_memory_storage))
        sim_port = devstack.free_port()
        sim_key = secrets.token_hex(8)
        processes.append(devstack.start_python(["gateway", "simulator", "--port", str(sim_port)], {"SIMULATOR_API_KEY": sim_key}, sim_port))
        env = {
            "GATEWAY_STORAGE_CONNECTION": ports.connection_string(),
            "GATEWAY_KEY_PEPPER": secrets.token_urlsafe(24),
            "SIM_KEY": sim_key,
            "GATEWAY_BACKENDS": json.dumps(
                [
                    {
                        "id": "sim",
                        "url": f"http://127.0.0.1:{sim_port}",
                        "api_key_setting": "SIM_KEY",
                        "embeddings_deployment": "text-embedding-3-small",
                    }
                ]
            ),
        }
        yield Services(f"http://127.0.0.1:{sim_port}", sim_key, env)
    finally:
        for process in reversed(processes):
            devstack.stop(process)


def create_subscription(env: dict[str, str], name: str) -> str:
    """A new subscription through the CLI; returns its primary key."""
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "subscriptions", "create", name],
        env={**os.environ, **env}, cwd=devstack.REPO_ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return str(json.loads(created.stdout)["primaryKey"])


@contextmanager
def local_stack(extra_env: dict[str, str] | None = None, in_memory_storage: bool = False) -> Iterator[Stack]:
    """Azurite, the simulator and one gateway process, with one subscription; all stopped on exit."""
    with services(in_memory_storage) as backing:
        env = {**backing.env, **(extra_env or {})}
        gw_port = devstack.free_port()
        gateway = devstack.start_python(["gateway", "serve", "--port", str(gw_port)], env, gw_port)
        try:
            key = create_subscription(env, "bench")
            yield Stack(backing.simulator_url, backing.simulator_key, f"http://127.0.0.1:{gw_port}", gateway.pid, key, env)
        finally:
            devstack.stop(gateway)


@dataclass
class LoadResult:
    latencies_ms: list[float]
    first_byte_ms: list[float]
    seconds: float
    cpu_ms_per_request: float | None

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds


async def run_load(
    url: str, headers: dict[str, str], body: bytes, requests: int, concurrency: int, pid: int | None = None, warmup: int = 50
) -> LoadResult:
    """POST `body` `requests` times with `concurrency` workers; read every response to the end."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def one(latencies: list[float], first_bytes: list[float]) -> None:
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                first = None
                async for _ in response.content.iter_any():
                    if first is None:
                        first = time.perf_counter()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            end = time.perf_counter()
            latencies.append((end - start) * 1000)
            first_bytes.append(((first or end) - start) * 1000)

        async def worker(count: int, latencies: list[float], first_bytes: list[float]) -> None:
            for _ in range(count):
                await one(latencies, first_bytes)

        await worker(warmup, [], [])
        latencies: list[float] = []
        first_bytes: list[float] = []
        cpu_before = cpu_seconds(pid) if pid else 0.0
        start = time.perf_counter()
        share, rest = divmod(requests, concurrency)
        await asyncio.gather(*(worker(share + (i < rest), latencies, first_bytes) for i in range(concurrency)))
        seconds = time.perf_counter() - start
        cpu = (cpu_seconds(pid) - cpu_before) * 1000 / requests if pid else None
        return LoadResult(latencies, first_bytes, seconds, cpu)


def median(values: list[float]) -> float:
    return statistics.median(values)
