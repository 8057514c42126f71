"""`python -m gateway …`: run the gateway locally and manage its subscriptions."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli import console, progress
from gateway.cli.account import Account, echo_json, run_with_account, run_with_repository, settings_or_exit
from gateway.cli.policies import policies
from gateway.cli.subscriptions import subscriptions
from gateway.config.settings import Settings
from gateway.dev import devstack, starter
from gateway.stores.subscriptions import SubscriptionRepository

#: Local state (Azurite data, the pepper, the demo key); GATEWAY_LOCAL_DIR moves it (tests do).
LOCAL_DIR = Path(os.environ.get("GATEWAY_LOCAL_DIR") or devstack.REPO_ROOT / ".local")


@click.group()
def main() -> None:
    """Serverless GenAI gateway for Azure OpenAI."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Processes accepting on the port (e.g. one per core in a container or VM); each is a gateway instance, sharing limits through storage.",
)  # fmt: skip
def serve(host: str, port: int, workers: int) -> None:
    """Serve the gateway with uvicorn, configured from the environment (as under `func start`)."""
    from gateway.hosts.local import serve as serve_gateway

    settings_or_exit()
    serve_gateway(host, port, workers)


@main.command()
@click.option("--port", default=8081, show_default=True, type=int)
@click.option("--api-key", envvar="SIMULATOR_API_KEY", default=None, help="Key the simulator requires (api-key header).")
@click.option("--token-ms", default=0.0, show_default=True, type=float, help="Delay between streamed tokens.")
def simulator(port: int, api_key: str | None, token_ms: float) -> None:
    """Run the simulated Azure OpenAI backend (not a model: deterministic canned answers)."""
    from gateway.dev.simulator import SimulatorSettings
    from gateway.dev.simulator import serve as serve_simulator

    serve_simulator(SimulatorSettings(api_key=api_key, token_ms=token_ms), port=port)


@main.command()
@click.option("--port", default=8080, show_default=True, type=int, help="Gateway port.")
@click.option("--simulator-port", default=8081, show_default=True, type=int)
@click.option("--token-ms", default=20.0, show_default=True, type=float, help="Simulator delay between streamed tokens.")
def run(port: int, simulator_port: int, token_ms: float) -> None:
    """Run everything locally: Azurite, the simulator when no backend is configured, and the gateway."""
    env: dict[str, str] = {}
    children = []
    # uvicorn re-raises SIGTERM once it has shut down; exit normally instead so the finally stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if not (os.environ.get("GATEWAY_STORAGE_CONNECTION") or os.environ.get("AzureWebJobsStorage")):
            ports = devstack.AzuritePorts()
            if not devstack.port_open(ports.table):
                children.append(devstack.start_azurite(LOCAL_DIR / "azurite", ports))
                click.echo(f"Azurite started on 127.0.0.1:{ports.table} (data in .local/azurite).")
            env["GATEWAY_STORAGE_CONNECTION"] = ports.connection_string()
        if not os.environ.get("GATEWAY_KEY_PEPPER"):
            env["GATEWAY_KEY_PEPPER"] = _local_secret("pepper")
        if not (os.environ.get("GATEWAY_BACKENDS") or os.environ.get("AZURE_OPENAI_ENDPOINT")):
            sim_key = _local_secret("simulator-key")
            children.append(
                devstack.start_python(
                    ["gateway", "simulator", "--port", str(simulator_port), "--token-ms", str(token_ms)],
                    {"SIMULATOR_API_KEY": sim_key},
                    simulator_port,
                )
            )
            env["SIMULATOR_API_KEY"] = sim_key
            env["GATEWAY_BACKENDS"] = json.dumps(
                [
                    {
                        "id": "simulator",
                        "url": f"http://127.0.0.1:{simulator_port}",
                        "api_key_setting": "SIMULATOR_API_KEY",
                        "embeddings_deployment": "text-embedding-3-small",
                    }
                ]
            )
            click.secho(
                f"No Azure OpenAI endpoint configured: using the SIMULATED backend on 127.0.0.1:{simulator_port}.\n"
                "Its answers are canned, not a model. Set AZURE_OPENAI_ENDPOINT (or GATEWAY_BACKENDS) for a real one.",
                fg="yellow",
                err=True,
            )
        os.environ.update(env)
        settings = settings_or_exit()
        key = _demo_key(settings)
        if "GATEWAY_BACKENDS" in env and run_with_account(
            settings, lambda account: starter.apply_if_fresh(account.policy_repository, account.loader)
        ):
            click.echo(starter.announcement())
        click.echo(
            f"\nGateway: http://127.0.0.1:{port}   demo subscription key: {key}\n"
            f"  python -c \"from openai import AzureOpenAI; c = AzureOpenAI(azure_endpoint='http://127.0.0.1:{port}', "
            f"api_key='{key}', api_version='2024-10-21'); "
            "print(c.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', 'content': 'Hello'}]).choices[0].message.content)\"\n"
        )
        from gateway.hosts.local import serve as serve_gateway

        serve_gateway("127.0.0.1", port)
    finally:
        for child in reversed(children):
            devstack.stop(child)


@main.command()
@click.option("--since", default="24h", show_default=True, help="How far back: e.g. 90m, 24h, 7d.")
@click.option("--by", "group_by", default="subscription", show_default=True, help="subscription, deployment, namespace, or dimension:NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def usage(since: str, group_by: str, as_json: bool) -> None:
    """Token usage from the metrics table (what emit-token-metric recorded), grouped and summed."""
    from gateway.cli.usage_report import parse_since, summarize

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if group_by not in ("subscription", "deployment", "namespace") and not group_by.startswith("dimension:"):
        raise click.BadParameter("use subscription, deployment, namespace or dimension:NAME.", param_hint="--by")

    settings = settings_or_exit()
    with progress.spinner(f"Reading metrics since {start:%Y-%m-%d %H:%M} UTC") as show:

        async def read(account: Account) -> list[dict[str, Any]]:
            return await summarize(account.store.table("metrics"), start, group_by, lambda count: show(f"{count:,} rows"))

        rows = run_with_account(settings, read)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"No token metrics since {start:%Y-%m-%d %H:%M} UTC. Is an emit-token-metric policy applied?")
        return
    columns = [
        "group",
        "requests",
        "prompt",
        "completion",
        "total",
        "cached",
        "reasoning",
        "estimated",
        "cacheHits",
        "savedTokens",
        "refused429",
        "refused403",
    ]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) if c == "group" else c.rjust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) if c == "group" else str(row[c]).rjust(widths[c]) for c in columns))


@main.group()
def backends() -> None:
    """Backend health as every gateway instance shares it (circuit breakers, waits, failures, latency)."""


@backends.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as GET /ops/backends) instead of a table.")
def backends_status(as_json: bool) -> None:
    """Each backend's breaker state, wait-until, recent failures and p50 latency; each pool's members."""
    from gateway.backends.health_sync import backend_status

    settings = settings_or_exit()
    report = run_with_account(settings, lambda account: backend_status(account.store, settings.backends))
    if as_json:
        echo_json(report)
        return
    singles = [entry for entry in report if entry["type"] == "backend"]
    if not singles:
        click.echo("No backends configured (GATEWAY_BACKENDS or AZURE_OPENAI_ENDPOINT).")
        return
    columns = [("backend", "id"), ("state", "state"), ("open until", "openUntil"), ("wait until", "waitUntil"),
               ("failures", "recentFailures"), ("requests", "recentRequests"), ("p50 ms", "latencyP50Ms"), ("instances", "instances")]  # fmt: skip
    cells = [[("-" if entry[key] is None else str(entry[key])) for _, key in columns] for entry in singles]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (title, _) in enumerate(columns)]
    click.echo("  ".join(title.ljust(width) for (title, _), width in zip(columns, widths)))
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    for pool in (entry for entry in report if entry["type"] == "pool"):
        members = ", ".join(
            f"{m['id']} (priority {m['priority']}, weight {m['weight']}{'' if m['available'] else ', unavailable'})" for m in pool["members"]
        )
        click.echo(f"pool {pool['id']}: {pool['state']}: {members}")
    click.echo("Failures and requests: sums over instances of their breaker interval (60 s without a rule); p50: median of theirs.", err=True)


@main.command("try")
@click.argument("prompt")
@click.option("--deployment", required=True, help="Chat deployment to call, as clients name it.")
@click.option("--gateway", "gateway_url", default=console.DEFAULT_GATEWAY, show_default=True, help="The gateway's base URL.")
@click.option("--key", envvar=console.KEY_SETTING, default=None, help=f"Subscription key (or env {console.KEY_SETTING}; locally, the demo key).")
@click.option("--api-version", default="2024-10-21", show_default=True)
@click.option("--stream", is_flag=True, help="Stream the answer as it is generated.")
@click.option("--max-tokens", type=int, default=None, help="max_tokens of the request.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for the answer.")
def try_deployment(
    prompt: str, deployment: str, gateway_url: str, key: str | None, api_version: str, stream: bool, max_tokens: int | None, timeout: float
) -> None:
    """Send PROMPT through the gateway; show the answer, usage, limit and cache headers, and Server-Timing."""
    demo = LOCAL_DIR / "demo-key"
    if not key and gateway_url == console.DEFAULT_GATEWAY and demo.exists():
        key = demo.read_text().strip()
        click.echo("Using the local demo key (.local/demo-key).", err=True)
    if not key:
        raise click.UsageError(f"No subscription key: pass --key or set {console.KEY_SETTING} (`subscriptions create NAME` makes one).")
    attempt = console.Attempt(gateway_url, key, deployment, prompt, api_version, stream, max_tokens, timeout)
    click.echo(f"POST {attempt.url}?api-version={api_version}", err=True)
    outcome = console.send(attempt, lambda text: click.echo(text, nl=False))
    if outcome.answer:
        click.echo("\n")
    for line in console.report(outcome):
        click.echo(line)
    if outcome.status != 200:
        raise click.ClickException(console.advice(attempt, outcome))


def _local_secret(name: str) -> str:
    """A random secret for local runs, kept in .local/ (git-ignored) so keys survive restarts."""
    path = LOCAL_DIR / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _demo_key(settings: Settings) -> str:
    """The local demo subscription's key, created on the first run."""
    path = LOCAL_DIR / "demo-key"
    if path.exists():
        return path.read_text().strip()

    async def create_or_rotate(repo: SubscriptionRepository) -> str:
        if await repo.get("demo") is None:
            return (await repo.create("demo", "all", "demo"))[1]
        return await repo.rotate("demo", "primary")

    primary = run_with_repository(settings, create_or_rotate)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(primary)
    path.chmod(0o600)
    return primary


main.add_command(subscriptions)
main.add_command(policies)
