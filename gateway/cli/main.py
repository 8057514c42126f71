"""`python -m gateway …`: run the gateway locally and manage its subscriptions."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gateway.cli import console
from gateway.dev import devstack
from gateway.cli import progress
from gateway.handling.operations import V1_API, VERSIONED_API
from gateway.config.settings import Settings
from gateway.errors import StorageError
from gateway.stores.subscriptions import KeyHasher, SubscriptionRepository, validate_scope
from policies.document import Scope
from policies.statement import Loader

if TYPE_CHECKING:
    from gateway.stores.policies import PolicyRepository
    from gateway.stores.tables import Tables

T = TypeVar("T")
LOCAL_DIR = devstack.REPO_ROOT / ".local"


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

    _settings_or_exit()
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
                        "id": "simulator", "url": f"http://127.0.0.1:{simulator_port}", "api_key_setting": "SIMULATOR_API_KEY",
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
        settings = _settings_or_exit()
        key = _demo_key(settings)
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


@main.group()
def subscriptions() -> None:
    """Create, inspect, rotate, suspend and delete subscriptions (keys are shown once, stored hashed)."""


@subscriptions.command("create")
@click.argument("name")
@click.option("--scope", default="all", show_default=True, help="all, api:<id> or product:<name>.")
@click.option("--id", "subscription_id", default=None, help="Subscription id (default: random).")
def create_subscription(name: str, scope: str, subscription_id: str | None) -> None:
    """Create a subscription and print its two keys, once."""
    settings = _settings_or_exit()
    try:
        validate_scope(scope, settings.products, (VERSIONED_API, V1_API))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    sub, primary, secondary = _run_with_repository(settings, lambda repo: repo.create(name, scope, subscription_id))
    _echo_json({**sub.public_view(), "primaryKey": primary, "secondaryKey": secondary})
    click.echo("Store these keys now: the gateway keeps only their hashes and cannot show them again.", err=True)


@subscriptions.command("create-bulk")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--format", "output_format", type=click.Choice(["json", "csv"]), default="json", show_default=True, help="How to print the keys.")
def create_bulk(file: Any, output_format: str) -> None:
    """Create a subscription per row of a CSV (header: name[,scope][,id]) or JSON file; print every key, once."""
    from gateway.cli import bulk

    settings = _settings_or_exit()
    try:
        rows = bulk.parse(file.read(), file.name, settings.products, (VERSIONED_API, V1_API))
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was created. Fix the file and run the command again.") from None

    with click.progressbar(length=len(rows), label=f"Creating {len(rows)} subscriptions", file=sys.stderr, hidden=not progress.interactive()) as bar:
        results = _run_with_repository(settings, lambda repo: bulk.create_all(repo, rows, lambda: bar.update(1)))
    views = [r.view for r in results if isinstance(r, bulk.Created)]
    if views:
        click.echo(bulk.to_csv(views) if output_format == "csv" else json.dumps(views, indent=2), nl=output_format == "json")
        click.echo(f"Created {len(views)} of {len(rows)}. Store these keys now: the gateway keeps only their hashes.", err=True)
    failed = [r for r in results if isinstance(r, bulk.Failed)]
    if failed:
        reasons = "\n".join(f"  {r.row.where} ({r.row.name}): {r.reason}" for r in failed)
        raise click.ClickException(f"{len(failed)} of {len(rows)} rows were not created:\n{reasons}\nRun again with only these rows.")


@subscriptions.command("list")
def list_subscriptions() -> None:
    """List subscriptions (without keys)."""
    settings = _settings_or_exit()
    subs = _run_with_repository(settings, lambda repo: repo.list())
    _echo_json([s.public_view() for s in subs])


@subscriptions.command("show")
@click.argument("subscription_id")
def show_subscription(subscription_id: str) -> None:
    """Show one subscription (without keys)."""
    settings = _settings_or_exit()
    sub = _run_with_repository(settings, lambda repo: repo.get(subscription_id))
    if sub is None:
        _fail_unknown(subscription_id)
    _echo_json(sub.public_view())


@subscriptions.command("rotate")
@click.argument("subscription_id")
@click.option("--key", "slot", type=click.Choice(["primary", "secondary"]), default="primary", show_default=True)
def rotate_subscription(subscription_id: str, slot: str) -> None:
    """Replace one key and print the new one, once."""
    settings = _settings_or_exit()

    async def rotate(repo: SubscriptionRepository) -> str | None:
        if await repo.get(subscription_id) is None:
            return None
        return await repo.rotate(subscription_id, "primary" if slot == "primary" else "secondary")

    key = _run_with_repository(settings, rotate)
    if key is None:
        _fail_unknown(subscription_id)
    _echo_json({"id": subscription_id, f"{slot}Key": key})
    click.echo(
        f"The old {slot} key stops working within {settings.subscription_cache_seconds:g} s on running gateways.",
        err=True,
    )


def _state_command(name: str, state: str, help_text: str) -> None:
    @subscriptions.command(name, help=help_text)
    @click.argument("subscription_id")
    def command(subscription_id: str) -> None:
        settings = _settings_or_exit()

        async def change(repo: SubscriptionRepository) -> Any:
            if await repo.get(subscription_id) is None:
                return None
            return await repo.set_state(subscription_id, state)

        sub = _run_with_repository(settings, change)
        if sub is None:
            _fail_unknown(subscription_id)
        _echo_json(sub.public_view())


_state_command("suspend", "suspended", "Suspend a subscription: its keys are refused until it is resumed.")
_state_command("resume", "active", "Make a suspended subscription active again.")
_state_command("cancel", "cancelled", "Cancel a subscription for good (its keys are refused).")


@subscriptions.command("delete")
@click.argument("subscription_id")
def delete_subscription(subscription_id: str) -> None:
    """Delete a subscription and its key index."""
    settings = _settings_or_exit()
    if not _run_with_repository(settings, lambda repo: repo.delete(subscription_id)):
        _fail_unknown(subscription_id)
    click.echo(f"Deleted subscription {subscription_id}.")


@main.group()
def policies() -> None:
    """Check, apply and inspect APIM policy documents (scopes: global, product:NAME, api:ID, operation:ID)."""


def _scope_option(default: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--scope", "scope_text", default=default, required=default is None, show_default=default is not None,
        help="global, product:NAME, api:openai|openai-v1 or operation:ID.",
    )  # fmt: skip


def _parse_scope(scope_text: str) -> Scope:
    try:
        return Scope.parse(scope_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None


@policies.command("check")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option("global")
def check_policy(file: Any, scope_text: str) -> None:
    """Validate a document exactly as `apply` would, without storing it."""
    from policies.policy_set import load_scoped

    scope = _parse_scope(scope_text)
    try:
        document = load_scoped(file.read(), scope, _loader())
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was applied. Fix the document and run `policies check` again.") from None
    count = sum(len(items) for items in document.sections.values())
    click.echo(f"OK: {file.name} is a valid policy document for scope {scope} ({count} top-level items).")


@policies.command("apply")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option()
def apply_policy(file: Any, scope_text: str) -> None:
    """Validate and store a document; running gateways pick it up within their poll interval."""
    from gateway.stores.policies import apply_document

    scope = _parse_scope(scope_text)
    settings = _settings_or_exit()
    xml = file.read()

    async def apply(account: _Account) -> int:
        return await apply_document(account.policy_repository, scope, xml, account.loader)

    try:
        with progress.spinner(f"Applying {file.name} to {scope}"):
            version = _run_with_account(settings, apply)
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was applied; the policies in force are unchanged.") from None
    click.echo(
        f"Applied {file.name} to scope {scope} (config version {version}); gateways reload within "
        f"{settings.policy_poll_seconds:g} s."
    )


@policies.command("delete")
@_scope_option()
def delete_policy(scope_text: str) -> None:
    """Remove the document of one scope (the scope then inherits everything)."""
    scope = _parse_scope(scope_text)
    settings = _settings_or_exit()

    async def delete(account: _Account) -> int | None:
        repository = account.policy_repository
        if await repository.document(scope) is None:
            return None
        return int(await repository.delete(scope))

    version = _run_with_account(settings, delete)
    if version is None:
        raise click.ClickException(f"No document is stored for scope {scope}. `policies list` shows the stored scopes.")
    click.echo(f"Deleted the policy of scope {scope} (config version {version}).")


@policies.command("show")
@_scope_option()
def show_policy(scope_text: str) -> None:
    """Print the stored document of one scope."""
    scope = _parse_scope(scope_text)

    async def show(account: _Account) -> str | None:
        return await account.policy_repository.document(scope)

    xml = _run_with_account(_settings_or_exit(), show)
    if xml is None:
        raise click.ClickException(f"No document is stored for scope {scope}. `policies list` shows the stored scopes.")
    click.echo(xml)


@policies.command("list")
def list_policies() -> None:
    """List stored scopes and the config version."""

    async def listing(account: _Account) -> tuple[int, dict[str, str]]:
        repository = account.policy_repository
        return await repository.version(), await repository.documents()

    version, documents = _run_with_account(_settings_or_exit(), listing)
    _echo_json({"version": version, "scopes": {scope: len(xml) for scope, xml in sorted(documents.items())}})


@policies.command("effective")
@click.option("--operation", "operation_id", required=True, help="Operation id, e.g. ChatCompletions_Create.")
@click.option("--product", default=None, help="Product of the calling subscription, if any.")
def effective_policy(operation_id: str, product: str | None) -> None:
    """Print the effective document for an operation: every scope merged at its <base />."""
    from policies.policy_set import compile_policy_set
    from gateway.handling.operations import ALL_OPERATIONS

    operation = next((op for op in ALL_OPERATIONS if op.id == operation_id), None)
    if operation is None:
        known = ", ".join(op.id for op in ALL_OPERATIONS)
        raise click.BadParameter(f"Unknown operation {operation_id!r}; known: {known}.", param_hint="--operation")

    async def documents(account: _Account) -> dict[str, str]:
        return await account.policy_repository.documents()

    settings = _settings_or_exit()
    policy_set = compile_policy_set(_run_with_account(settings, documents), 0, _loader())
    click.echo(policy_set.pipeline(product, operation.api, operation.id).to_xml())


@policies.command("enqueue")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option()
def enqueue_policy(file: Any, scope_text: str) -> None:
    """Send a document through the `policy-updates` queue, as an automated pipeline would."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    scope = _parse_scope(scope_text)
    settings = _settings_or_exit()
    queue = QueueClient.from_connection_string(
        settings.storage_connection.reveal(), settings.policy_queue, message_encode_policy=TextBase64EncodePolicy()
    )
    with queue:
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        queue.send_message(json.dumps({"scope": str(scope), "xml": file.read()}))
    click.echo(f"Queued {file.name} for scope {scope}; a gateway validates and applies it shortly.")


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

    settings = _settings_or_exit()
    with progress.spinner(f"Reading metrics since {start:%Y-%m-%d %H:%M} UTC") as show:

        async def read(account: _Account) -> list[dict[str, Any]]:
            return await summarize(account.store.table("metrics"), start, group_by, lambda count: show(f"{count:,} rows"))

        rows = _run_with_account(settings, read)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"No token metrics since {start:%Y-%m-%d %H:%M} UTC. Is an emit-token-metric policy applied?")
        return
    columns = ["group", "requests", "prompt", "completion", "total", "cached", "reasoning", "estimated", "cacheHits", "savedTokens", "refused429", "refused403"]
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

    settings = _settings_or_exit()
    report = _run_with_account(settings, lambda account: backend_status(account.store, settings.backends))
    if as_json:
        _echo_json(report)
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


def _loader() -> Loader:
    """The loader `apply` uses: named values and backend ids from settings, when settings are complete."""
    from gateway.backends.registry import BackendRegistry

    try:
        settings = Settings.from_env()
    except ValueError:
        return Loader()
    registry = BackendRegistry(settings.backends)
    return Loader(named_values=settings.named_values, backend_ids=registry.ids, embeddings_backend_ids=registry.embeddings_ids)


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nLocally, `python -m gateway run` sets up Azurite and a pepper for you.") from None


def _run_with_repository(settings: Settings, action: Callable[[SubscriptionRepository], Awaitable[T]]) -> T:
    return _run_with_account(settings, lambda account: action(account.subscriptions))


@dataclass
class _Account:
    """The tables of the gateway's storage account, as the commands need them (no gateway is built)."""

    store: Tables
    subscriptions: SubscriptionRepository
    policy_repository: PolicyRepository
    loader: Loader


def _run_with_account(settings: Settings, action: Callable[[_Account], Awaitable[T]]) -> T:
    from gateway.stores.policies import PolicyRepository
    from gateway.stores.tables import AzureTables

    async def go() -> T:
        store = AzureTables(settings.storage_connection.reveal(), settings.table_prefix, deadline_seconds=30)
        account = _Account(
            store, SubscriptionRepository(store.table("subscriptions"), KeyHasher(settings.key_pepper.reveal())),
            PolicyRepository(store.table("policies")), _loader(),
        )  # fmt: skip
        try:
            return await action(account)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except StorageError as exc:
        raise click.ClickException(
            f"Table Storage failed: {exc.message} Check GATEWAY_STORAGE_CONNECTION (or AzureWebJobsStorage): locally, is "
            "Azurite running? `python -m gateway run` starts it; in Azure, check the connection string, the account key "
            "and the account's firewall."
        ) from None


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

    primary = _run_with_repository(settings, create_or_rotate)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(primary)
    path.chmod(0o600)
    return primary


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def _fail_unknown(subscription_id: str) -> None:
    click.echo(f"No subscription {subscription_id!r}. `python -m gateway subscriptions list` shows the ids.", err=True)
    sys.exit(1)
