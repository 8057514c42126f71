"""Local processes the gateway leans on when nothing in Azure is configured: Azurite and the simulator.

Used by `python -m gateway run` and by the test suite, so both start them the same way. Every process
listens on 127.0.0.1 and is stopped by the PID we started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int = 10000
    queue: int = 10001
    table: int = 10002

    def connection_string(self) -> str:
        base = "http://127.0.0.1:{}/devstoreaccount1"
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_ACCOUNT_KEY};"
            f"BlobEndpoint={base.format(self.blob)};QueueEndpoint={base.format(self.queue)};"
            f"TableEndpoint={base.format(self.table)};"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode} before listening on {port}.")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Nothing listens on 127.0.0.1:{port} after {timeout:.0f} s.")
        time.sleep(0.05)


def azurite_command() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found is None:
        raise FileNotFoundError("Azurite is not installed: run `npm install` in the repository (package.json pins it).")
    return found


def start_azurite(location: Path, ports: AzuritePorts, in_memory: bool = False) -> subprocess.Popen[bytes]:
    """Azurite on loopback, keeping its data in `location`, or only in memory (benchmarks with a month of rows)."""
    location.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            azurite_command(), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
            *(["--inMemoryPersistence"] if in_memory else ["--location", str(location)]),
            "--blobHost", "127.0.0.1", "--blobPort", str(ports.blob),
            "--queueHost", "127.0.0.1", "--queuePort", str(ports.queue),
            "--tableHost", "127.0.0.1", "--tablePort", str(ports.table),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    for port in (ports.blob, ports.queue, ports.table):
        wait_for_port(port, process)
    return process


def start_python(module_args: Sequence[str], env: Mapping[str, str], port: int) -> subprocess.Popen[bytes]:
    """Start `python -m <module_args>` with `env` and wait until it listens on `port`."""
    process = subprocess.Popen([sys.executable, "-m", *module_args], env={**os.environ, **env}, cwd=REPO_ROOT)
    wait_for_port(port, process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process we started (by its PID), gracefully first."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
