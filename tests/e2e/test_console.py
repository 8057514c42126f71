"""`python -m gateway try`: one request through a running gateway, shown like APIM's test console."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli.console import server_timing
from gateway.cli.main import main as cli
from gateway.dev import devstack
from tests.conftest import GatewayProcess, Keys
from tests.stack_helpers import apply, token_env

LIMITED = """<policies><inbound><base />
  <azure-openai-token-limit counter-key="@(context.Subscription.Id)" tokens-per-minute="100" estimate-prompt-tokens="true"
                            remaining-tokens-header-name="x-remaining-tokens" />
</inbound></policies>"""


def run(gateway_url: str, *arguments: str, key: str | None = None) -> Result:
    env = {"GATEWAY_TRY_KEY": key} if key else {}
    return CliRunner().invoke(cli, ["try", "--gateway", gateway_url, *arguments], env=env)


def test_answer_usage_headers_and_server_timing(gateway: GatewayProcess, keys: Keys) -> None:
    result = run(gateway.url, "--deployment", "gpt-4o", "Hello there", "--key", keys.primary)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Simulated answer to: Hello there" in out and "HTTP 200 in" in out
    assert "Usage: prompt 2, completion 5, total 7" in out
    assert "x-ratelimit-remaining-tokens: 999000" in out  # the backend's headers pass through and are shown
    timing = out.split("Server-Timing:")[1]
    assert all(name in timing for name in ("auth", "upstream", "gateway", "total")) and "█" in timing


def test_stream_prints_the_answer_as_it_comes_and_its_usage(gateway: GatewayProcess, keys: Keys) -> None:
    result = run(gateway.url, "--deployment", "gpt-4o", "--stream", "a b c", key=keys.primary)  # key from GATEWAY_TRY_KEY
    assert result.exit_code == 0, result.output
    assert "Simulated answer to: a b c" in result.stdout and "first token after" in result.stdout
    assert "Usage: prompt 3, completion 6, total 9" in result.stdout  # 2024-10-21 streams report usage


def test_old_api_version_stream_says_why_there_is_no_usage(gateway: GatewayProcess, keys: Keys) -> None:
    result = run(gateway.url, "--deployment", "gpt-4o", "--stream", "--api-version", "2024-02-01", "x", key=keys.primary)
    assert result.exit_code == 0 and "does not report usage on streams" in result.stdout


def test_wrong_key_says_to_check_the_key_and_the_subscription(gateway: GatewayProcess) -> None:
    result = run(gateway.url, "--deployment", "gpt-4o", "Hi", key="not-a-key")
    assert result.exit_code == 1
    assert "HTTP 401" in result.stdout and "invalid subscription key" in result.stderr
    assert "GATEWAY_TRY_KEY" in result.stderr and "subscriptions list" in result.stderr


def test_unknown_deployment_names_the_setting(gateway: GatewayProcess, keys: Keys) -> None:
    result = run(gateway.url, "--deployment", "gpt-9", "Hi", key=keys.primary)
    assert result.exit_code == 1 and "No backend serves deployment 'gpt-9'" in result.stderr and "GATEWAY_BACKENDS" in result.stderr


def test_nothing_listening_asks_whether_the_gateway_runs() -> None:
    url = f"http://127.0.0.1:{devstack.free_port()}"
    result = run(url, "--deployment", "gpt-4o", "Hi", key="k")
    assert result.exit_code == 1 and f"Cannot connect to {url}: is the gateway running there?" in result.stderr


def test_no_key_at_all_is_a_usage_error(gateway: GatewayProcess) -> None:
    result = run(gateway.url, "--deployment", "gpt-4o", "Hi")
    assert result.exit_code == 2 and "pass --key or set GATEWAY_TRY_KEY" in result.stderr


def test_token_limit_headers_and_the_429_advice(
    start_gateway: Callable[[dict[str, str]], GatewayProcess], gateway_env: dict[str, str], create_subscription: Callable[..., Keys], tmp_path: Path
) -> None:
    env = token_env(gateway_env)
    keys = create_subscription("console", env=env)
    apply(env, LIMITED, tmp_path)
    limited = start_gateway(env)
    admitted = run(limited.url, "--deployment", "gpt-4o", "--max-tokens", "20", "one two", key=keys.primary)
    assert admitted.exit_code == 0 and "x-remaining-tokens: " in admitted.stdout
    refused = run(limited.url, "--deployment", "gpt-4o", "--max-tokens", "500", "one two", key=keys.primary)
    assert refused.exit_code == 1 and "HTTP 429" in refused.stdout and "retry-after: " in refused.stdout
    assert "Token limit is exceeded" in refused.stderr and "Retry after" in refused.stderr and "gateway usage" in refused.stderr


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "auth;dur=0.12, upstream;dur=3.40, gateway;dur=0.50, total;dur=4.02",
            [("auth", 0.12), ("upstream", 3.4), ("gateway", 0.5), ("total", 4.02)],
        ),
        ('cache;desc="hit", db;dur=x, app;dur=2', [("app", 2.0)]),
        ("", []),
    ],
)
def test_server_timing_parsing(header: str, expected: list[tuple[str, float]]) -> None:
    assert server_timing(header) == expected
