"""Long CLI operations: bulk subscription creation from CSV/JSON, and the progress shown on a terminal."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from gateway.cli import bulk, progress
from gateway.cli.main import main as cli
from tests.conftest import API_VERSION, GatewayProcess


def invoke(env: dict[str, str], *arguments: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(arguments), env=env)


def listed_ids(env: dict[str, str]) -> set[str]:
    return {sub["id"] for sub in json.loads(invoke(env, "subscriptions", "list").stdout)}


def test_csv_rows_become_subscriptions_whose_keys_work(gateway: GatewayProcess, gateway_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "teams.csv"
    path.write_text("name,scope,id\nbulk-a,all,bulk-a\nbulk-b,api:openai-v1,\nbulk-c,product:starter,\n")
    result = invoke(gateway_env, "subscriptions", "create-bulk", str(path))
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)  # stdout is only the keys: progress and notes go to stderr
    assert [(c["name"], c["scope"]) for c in created] == [("bulk-a", "all"), ("bulk-b", "api:openai-v1"), ("bulk-c", "product:starter")]
    assert created[0]["id"] == "bulk-a" and "Created 3 of 3" in result.stderr
    assert {c["id"] for c in created} <= listed_ids(gateway_env)
    answer = httpx.post(
        f"{gateway.url}/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION}, headers={"api-key": created[0]["secondaryKey"]}, json={"messages": [{"role": "user", "content": "hi"}]},
    )  # fmt: skip
    assert answer.status_code == 200


def test_a_file_with_mistakes_creates_nothing_and_names_every_one(gateway_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "teams.json"
    path.write_text(json.dumps([{"name": "ok", "id": "dup"}, {"name": "", "scope": "product:gold"}, {"name": "x", "id": "dup", "team": 1}]))
    before = listed_ids(gateway_env)
    result = invoke(gateway_env, "subscriptions", "create-bulk", str(path))
    assert result.exit_code == 1
    for expected in (
        "item 2: 'name' is empty",
        "item 2: Invalid scope 'product:gold'",
        "item 3: id 'dup' is also used on item 1",
        "item 3: unknown field(s) ['team']",
        "Nothing was created",
    ):
        assert expected in result.stderr
    assert listed_ids(gateway_env) == before


def test_a_row_that_fails_does_not_hide_the_keys_of_the_others(gateway_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "again.csv"
    path.write_text("name,id\nexisting,bulk-existing\n")
    assert invoke(gateway_env, "subscriptions", "create-bulk", str(path)).exit_code == 0
    path.write_text("name,id\nexisting,bulk-existing\nfresh,bulk-fresh\n")
    result = invoke(gateway_env, "subscriptions", "create-bulk", str(path), "--format", "csv")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "id,name,state,scope,created,primaryKey,secondaryKey" and lines[1].startswith("bulk-fresh,fresh,active,all,")
    assert "line 2 (existing): a subscription with id 'bulk-existing' exists" in result.stderr and "1 of 2 rows" in result.stderr


def test_csv_needs_a_header_with_name() -> None:
    with pytest.raises(ValueError, match="CSV header with a 'name' column"):
        bulk.parse("team-a,all\n", "teams.csv", {}, ("openai", "openai-v1"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_spinner_turns_on_a_terminal_and_stays_silent_in_a_pipe() -> None:
    terminal = Terminal()
    with progress.spinner("Reading metrics", terminal, interval=0.01) as show:
        show("1,000 rows")
        time.sleep(0.05)
    text = terminal.getvalue()
    assert "Reading metrics 1,000 rows" in text and text.endswith(" s 1,000 rows\n") and "Reading metrics: done in " in text
    pipe = io.StringIO()
    with progress.spinner("Reading metrics", pipe) as show:
        show("2 rows")
    assert pipe.getvalue() == ""


def test_spinner_reports_failure() -> None:
    terminal = Terminal()
    with pytest.raises(RuntimeError), progress.spinner("Applying", terminal, interval=0.01):
        raise RuntimeError("boom")
    assert "Applying: failed in" in terminal.getvalue()
