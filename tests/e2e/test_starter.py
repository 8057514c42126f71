"""`python -m gateway run` on an empty store applies the starter document, says so, and a newcomer's first requests
show its token limit, metrics and cache hits in `try` and `usage`; a store that was ever written is left alone."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli.main import main as cli
from gateway.dev import devstack, starter
from gateway.stores.memory import MemoryTables
from gateway.stores.policies import PolicyRepository
from policies.document import Scope
from policies.statement import Loader
from tests.stack_helpers import wait_for_metric

SIMULATED = Loader(backend_ids=frozenset({"simulator"}), embeddings_backend_ids=frozenset({"simulator"}))


async def test_the_starter_is_applied_to_a_fresh_store_only(memory_tables: MemoryTables) -> None:
    repository = PolicyRepository(memory_tables.table("policies"))
    assert await starter.apply_if_fresh(repository, SIMULATED) == 1
    assert await repository.document(Scope("global")) == starter.STARTER.read_text()
    await repository.delete(Scope("global"))
    assert await starter.apply_if_fresh(repository, SIMULATED) is None  # removed once: stays removed
    assert await repository.documents() == {}


@pytest.fixture
def local_run(azurite: devstack.AzuritePorts, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """`python -m gateway run` with its own tables and local directory, and no backend configured (so: simulated)."""
    port, simulator_port = devstack.free_port(), devstack.free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("GATEWAY_BACKENDS", "AZURE_OPENAI_ENDPOINT", "GATEWAY_KEY_PEPPER")},
        "GATEWAY_STORAGE_CONNECTION": azurite.connection_string(),
        "GATEWAY_TABLE_PREFIX": "r" + secrets.token_hex(4),
        "GATEWAY_LOCAL_DIR": str(tmp_path / "local"),
        "GATEWAY_METRICS_FLUSH_SECONDS": "0.5",
        "GATEWAY_LOCAL_QUEUE_WORKER": "false",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--port", str(port), "--simulator-port", str(simulator_port), "--token-ms", "0"],
            env=env, cwd=devstack.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        devstack.wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", env, log
    finally:
        devstack.stop(process)
        assert not devstack.port_open(simulator_port)  # run stopped the simulator it started


def test_a_newcomer_sees_limits_metrics_and_cache_hits(local_run: tuple[str, dict[str, str], Path]) -> None:
    url, env, log = local_run
    printed = log.read_text()
    assert "The policy store was empty: applied samples/starter.xml at scope global" in printed
    assert "Remove it: python -m gateway policies delete --scope global" in printed
    local = Path(env["GATEWAY_LOCAL_DIR"])
    key = (local / "demo-key").read_text().strip()
    env = {**env, "GATEWAY_KEY_PEPPER": (local / "pepper").read_text().strip()}  # made by `run`, as the demo key
    runner = CliRunner()
    tried = [runner.invoke(cli, ["try", "What is a token?", "--deployment", "gpt-4o", "--gateway", url, "--key", key], env=env) for _ in range(2)]
    assert all(result.exit_code == 0 for result in tried), tried[0].output
    assert "x-remaining-tokens:" in tried[0].output and "x-semantic-cache: MISS" in tried[0].output
    assert "x-semantic-cache: HIT" in tried[1].output
    assert wait_for_metric(env, "cacheHits", 1) == 1
    usage = runner.invoke(cli, ["usage", "--since", "1h", "--json"], env=env)
    assert usage.exit_code == 0, usage.output
    rows = json.loads(usage.stdout)
    assert rows[0]["group"] == "demo" and rows[0]["requests"] == 2 and rows[0]["cacheHits"] == 1 and rows[0]["total"] > 0
