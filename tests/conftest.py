"""The real stack for end-to-end tests: Azurite, the simulated backend and gateway processes on loopback.

Everything listens on 127.0.0.1 at free ports and is stopped by PID when the session ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.config.settings import Settings
from gateway.dev import devstack
from gateway.hosts import local as hosting
from gateway.stores.azure_tables import AzureTables
from gateway.stores.memory import MemoryTables
from gateway.stores.subscriptions import KeyHasher, Subscription, SubscriptionRepository
from gateway.stores.tables import Table

#: Deployments the test backend is configured to serve; anything else is "DeploymentNotFound".
DEPLOYMENTS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "whisper", "tts", "dall-e-3"]
API_VERSION = "2024-10-21"


@dataclass(frozen=True)
class Simulator:
    url: str
    api_key: str

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/sim/requests").json()

    def clear_requests(self) -> None:
        httpx.delete(f"{self.url}/sim/requests")

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/sim/stats").json()


@dataclass(frozen=True)
class GatewayProcess:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Keys:
    subscription: Subscription
    primary: str
    secondary: str


#: Fixtures that start processes. Tests under tests/unit run in memory, so they may not use them, even indirectly.
STACK_FIXTURES = frozenset({"azurite", "simulator"})
UNIT_TESTS = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = [item.nodeid for item in items if UNIT_TESTS in item.path.parents and STACK_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if misplaced:
        raise pytest.UsageError(f"unit tests that start the stack belong in tests/e2e: {', '.join(misplaced)}")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.AzuritePorts]:
    ports = devstack.AzuritePorts(devstack.free_port(), devstack.free_port(), devstack.free_port())
    process = devstack.start_azurite(tmp_path_factory.mktemp("azurite"), ports)
    yield ports
    devstack.stop(process)


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    port = devstack.free_port()
    key = "sim-" + secrets.token_hex(8)
    env = {"SIMULATOR_API_KEY": key}
    process = devstack.start_python(["gateway", "simulator", "--port", str(port)], env, port)
    yield Simulator(f"http://127.0.0.1:{port}", key)
    devstack.stop(process)


@pytest.fixture(scope="session")
def gateway_env(azurite: devstack.AzuritePorts, simulator: Simulator) -> dict[str, str]:
    """Settings of the default test gateway; each test session gets its own tables."""
    return {
        "GATEWAY_STORAGE_CONNECTION": azurite.connection_string(),
        "GATEWAY_TABLE_PREFIX": "t" + secrets.token_hex(4),
        "GATEWAY_POLICY_QUEUE": "updates-" + secrets.token_hex(4),
        "GATEWAY_KEY_PEPPER": secrets.token_urlsafe(24),
        "GATEWAY_SUBSCRIPTION_CACHE_SECONDS": "0.5",
        "GATEWAY_SSE_KEEPALIVE_SECONDS": "0.3",
        "GATEWAY_PRODUCTS": json.dumps({"starter": ["openai-v1"], "unlimited": ["openai", "openai-v1"]}),
        "SIMULATOR_KEY": simulator.api_key,
        "GATEWAY_BACKENDS": json.dumps([{"id": "sim", "url": simulator.url, "deployments": DEPLOYMENTS, "api_key_setting": "SIMULATOR_KEY"}]),
    }


@pytest.fixture(scope="session")
def start_gateway(azurite: devstack.AzuritePorts, simulator: Simulator) -> Iterator[Callable[[dict[str, str]], GatewayProcess]]:
    """Start a gateway process (`python -m gateway serve`) with the given settings.

    It depends on Azurite and the simulator so that those stop after the gateways, which flush on shutdown.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> GatewayProcess:
        port = devstack.free_port()
        process = devstack.start_python(["gateway", "serve", "--port", str(port)], env, port)
        started.append(process)
        return GatewayProcess(f"http://127.0.0.1:{port}", env, process)

    yield start
    for process in started:
        devstack.stop(process)


@pytest.fixture(scope="session")
def gateway(start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str]) -> GatewayProcess:
    return start_gateway(gateway_env)


def run_with_repository(env: dict[str, str], action: Callable[[SubscriptionRepository], object]) -> object:
    """Run `action(repository)` against the subscriptions table the gateway with `env` uses."""
    settings = Settings.from_env(env)

    async def go() -> object:
        store = AzureTables(settings.storage_connection.reveal(), settings.table_prefix)
        try:
            return await action(SubscriptionRepository(store.table("subscriptions"), KeyHasher(settings.key_pepper.reveal())))  # type: ignore[misc]
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="session")
def create_subscription(gateway_env: dict[str, str]) -> Callable[..., Keys]:
    def create(name: str = "team", scope: str = "all", env: dict[str, str] | None = None) -> Keys:
        sub, primary, secondary = run_with_repository(env or gateway_env, lambda repo: repo.create(name, scope))  # type: ignore[misc]
        return Keys(sub, primary, secondary)

    return create


@pytest.fixture(scope="session")
def keys(create_subscription: Callable[..., Keys]) -> Keys:
    """An active all-APIs subscription shared by tests that only need a valid key."""
    return create_subscription("shared")


@pytest.fixture
def memory_tables() -> MemoryTables:
    """Tables in memory with Table Storage's semantics (gateway/stores/memory.py): unit tests need no Azurite."""
    return MemoryTables()


@pytest.fixture
async def scratch_tables(memory_tables: MemoryTables) -> Callable[[str], Awaitable[Table]]:
    """Throwaway tables (`await scratch_tables("metrics")`), in memory."""

    async def create(purpose: str) -> Table:
        return memory_tables.table(purpose + secrets.token_hex(4))

    return create


@pytest.fixture(scope="session")
def hasher(gateway_env: dict[str, str]) -> KeyHasher:
    return KeyHasher(gateway_env["GATEWAY_KEY_PEPPER"])


@pytest.fixture
def functions_env(gateway_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process environment as the Functions worker would see it, with a fresh gateway singleton."""
    for name, value in gateway_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hosting, "_current", None)
    yield
