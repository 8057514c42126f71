"""What a new instance pays before its first answer: the import of the Functions entry, and a new process's first response.

    .venv/bin/python -m bench.coldstart [--runs 15]

1. Import: whole-process wall time of `python -c "import function_app"` beside the platform's own imports
   (`azure.functions` and the HTTP streaming extension, which every Functions app of this kind pays), run in
   turn so drift hits both alike; the median of the pairwise difference is what the gateway adds.
2. First response: a new `gateway serve` process, from spawn until its first chat completion has been answered
   in full (Azurite and the simulated backend already running, as storage and Azure OpenAI are for a new
   instance), and until it first accepts a connection; and a new process that imports `function_app` and calls
   its HTTP function with the same request, as the Functions worker does (the host's own start-up not included).

Each is measured twice: with the gateway's bytecode cached (as on a developer machine, or a package that ships
`__pycache__`), and compiled from source at every start (`PYTHONDONTWRITEBYTECODE`, as when the package is
read-only and ships no bytecode; installed packages keep theirs either way).
Whole-process medians on a shared machine: compare the columns of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import API_VERSION
from gateway.dev import devstack

PLATFORM = "import azure.functions, azurefunctions.extensions.http.fastapi"
ENTRY = "import function_app"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=" + API_VERSION
BODY = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16})


def bytecode_modes() -> dict[str, dict[str, str]]:
    """Environments for child processes: all bytecode cached (in a scratch directory, never in the repository),
    or the repository's modules compiled at every start (installed packages keep the bytecode pip wrote)."""
    if any(next((devstack.REPO_ROOT / package).rglob("__pycache__"), None) for package in ("gateway", "policies")):
        print("note: the repository holds __pycache__ directories; 'compiled at start' then reads them", file=sys.stderr)
    plain = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {
        "bytecode cached": {**plain, "PYTHONPYCACHEPREFIX": tempfile.mkdtemp(prefix="bench-pycache-")},
        "compiled at start": {**plain, "PYTHONDONTWRITEBYTECODE": "1"},
    }


def process_seconds(code: str, env: dict[str, str]) -> float:
    """Wall time of a whole `python -c code` process (interpreter start-up included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=devstack.REPO_ROOT, env=env, check=True)
    return time.perf_counter() - start


def import_costs(runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    process_seconds(PLATFORM, env), process_seconds(ENTRY, env)  # warm the page cache (and the bytecode cache)
    platform, entry = [], []
    for _ in range(runs):
        platform.append(process_seconds(PLATFORM, env))
        entry.append(process_seconds(ENTRY, env))
    return platform, entry


def _connect(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


#: A new process that imports the Functions entry and answers one chat completion through its HTTP function.
FUNCTIONS_FIRST = """
import asyncio, os, sys
import function_app
from starlette.requests import Request

async def first() -> None:
    scope = {"type": "http", "method": "POST", "scheme": "https", "server": ("gateway", 443), "client": ("10.0.0.1", 1),
             "path": "/openai/deployments/gpt-4o/chat/completions", "query_string": b"api-version=%s",
             "headers": [(b"api-key", os.environ["BENCH_KEY"].encode()), (b"content-type", b"application/json")],
             "path_params": {"path": "deployments/gpt-4o/chat/completions"}}
    body = %r

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    response = await function_app.openai(Request(scope, receive))
    print(response.status_code, flush=True)  # the parent's clock stops here; closing is not part of the answer
    await function_app.current_gateway().close()

asyncio.run(first())
""" % (API_VERSION, BODY.encode())


def functions_first_response(env: dict[str, str], key: str) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", FUNCTIONS_FIRST], env={**env, "BENCH_KEY": key}, cwd=devstack.REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    status = process.stdout.readline().strip()
    answered = time.perf_counter() - start
    if process.wait() != 0 or status != "200":
        raise RuntimeError(f"the Functions entry's first request got {status!r} (exit code {process.returncode})")
    return answered


def first_response(env: dict[str, str], key: str) -> tuple[float, float]:
    """(seconds to the first accepted connection, seconds to the first answered chat completion) of a new process."""
    port = devstack.free_port()
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)], env=env, cwd=devstack.REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not _connect(port):
            if process.poll() is not None or time.perf_counter() - start > 30:
                raise RuntimeError(f"the gateway did not start (exit code {process.returncode})")
            time.sleep(0.002)
        listening = time.perf_counter() - start
        response = httpx.post(f"http://127.0.0.1:{port}{CHAT}", content=BODY, headers={"api-key": key, "content-type": "application/json"})
        answered = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"the first request got {response.status_code}: {response.text[:200]}")
        return listening, answered
    finally:
        devstack.stop(process)


def first_responses(runs: int, modes: dict[str, dict[str, str]]) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per mode: seconds to listening, to the first answer, and to the Functions entry's first answer, of `runs`
    new processes each, modes in turn."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ports = devstack.AzuritePorts(devstack.free_port(), devstack.free_port(), devstack.free_port())
        processes.append(devstack.start_azurite(Path(tempfile.mkdtemp(prefix="bench-azurite-")), ports))
        sim_port, sim_key = devstack.free_port(), secrets.token_hex(8)
        processes.append(devstack.start_python(["gateway", "simulator", "--port", str(sim_port)], {"SIMULATOR_API_KEY": sim_key}, sim_port))
        env = {
            "GATEWAY_STORAGE_CONNECTION": ports.connection_string(),
            "GATEWAY_KEY_PEPPER": secrets.token_urlsafe(24),
            "SIM_KEY": sim_key,
            "GATEWAY_BACKENDS": json.dumps([{"id": "sim", "url": f"http://127.0.0.1:{sim_port}", "api_key_setting": "SIM_KEY"}]),
        }
        created = subprocess.run(
            [sys.executable, "-m", "gateway", "subscriptions", "create", "bench"],
            env={**os.environ, **env}, cwd=devstack.REPO_ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        key = json.loads(created.stdout)["primaryKey"]
        results: dict[str, tuple[list[float], list[float], list[float]]] = {mode: ([], [], []) for mode in modes}
        for mode_env in modes.values():
            first_response({**mode_env, **env}, key)  # tables created, files cached: what a new instance meets
            functions_first_response({**mode_env, **env}, key)
        for _ in range(runs):
            for mode, mode_env in modes.items():
                listen, answer = first_response({**mode_env, **env}, key)
                results[mode][0].append(listen)
                results[mode][1].append(answer)
                results[mode][2].append(functions_first_response({**mode_env, **env}, key))
        return results
    finally:
        for process in reversed(processes):
            devstack.stop(process)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})"


def main(runs: int) -> None:
    modes = bytecode_modes()
    print(f"whole-process import, {runs} runs each, in turn")
    for mode, env in modes.items():
        platform, entry = import_costs(runs, env)
        added = [e - p for p, e in zip(platform, entry)]
        print(f"  {mode}:")
        print(f"    platform only ({PLATFORM[7:]})  {spread(platform)}")
        print(f"    {ENTRY:<65}  {spread(entry)}")
        print(f"    added by the gateway (pairwise)  median {statistics.median(added):.3f} s")
    print(f"\nnew processes, {runs} runs each")
    for mode, (listening, answered, functions) in first_responses(runs, modes).items():
        print(f"  {mode}:")
        print(f"    `gateway serve` to the first accepted connection      {spread(listening)}")
        print(f"    `gateway serve` to the first chat completion answered {spread(answered)}")
        print(f"    import function_app + its first chat completion       {spread(functions)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    main(parser.parse_args().runs)
