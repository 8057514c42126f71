"""`python -m gateway subscriptions …`: create, inspect, rotate, suspend and delete subscriptions."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from gateway.cli import owners, progress
from gateway.cli.account import echo_json, run_with_repository, settings_or_exit
from gateway.handling.operations import V1_API, VERSIONED_API
from gateway.stores.subscriptions import SubscriptionRepository, validate_scope


@click.group()
def subscriptions() -> None:
    """Create, inspect, rotate, suspend and delete subscriptions (keys are shown once, stored hashed)."""


@subscriptions.command("create")
@click.argument("name")
@click.option("--scope", default="all", show_default=True, help="all, api:<id> or product:<name>.")
@click.option("--id", "subscription_id", default=None, help="Subscription id (default: random).")
@owners.owner_options
def create_subscription(name: str, scope: str, subscription_id: str | None, **owner: Any) -> None:
    """Create a subscription and print its two keys, once."""
    settings = settings_or_exit()
    try:
        validate_scope(scope, settings.products, (VERSIONED_API, V1_API))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    user = owners.owner_of(**owner)
    sub, primary, secondary = run_with_repository(settings, lambda repo: repo.create(name, scope, subscription_id, user))
    echo_json({**sub.public_view(), "primaryKey": primary, "secondaryKey": secondary})
    click.echo("Store these keys now: the gateway keeps only their hashes and cannot show them again.", err=True)


subscriptions.add_command(owners.owner)


@subscriptions.command("create-bulk")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--format", "output_format", type=click.Choice(["json", "csv"]), default="json", show_default=True, help="How to print the keys.")
def create_bulk(file: Any, output_format: str) -> None:
    """Create a subscription per row of a CSV (header: name[,scope][,id]) or JSON file; print every key, once."""
    from gateway.cli import bulk

    settings = settings_or_exit()
    try:
        rows = bulk.parse(file.read(), file.name, settings.products, (VERSIONED_API, V1_API))
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was created. Fix the file and run the command again.") from None

    with click.progressbar(length=len(rows), label=f"Creating {len(rows)} subscriptions", file=sys.stderr, hidden=not progress.interactive()) as bar:
        results = run_with_repository(settings, lambda repo: bulk.create_all(repo, rows, lambda: bar.update(1)))
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
    settings = settings_or_exit()
    subs = run_with_repository(settings, lambda repo: repo.list())
    echo_json([s.public_view() for s in subs])


@subscriptions.command("show")
@click.argument("subscription_id")
def show_subscription(subscription_id: str) -> None:
    """Show one subscription (without keys)."""
    settings = settings_or_exit()
    sub = run_with_repository(settings, lambda repo: repo.get(subscription_id))
    if sub is None:
        _fail_unknown(subscription_id)
    else:
        echo_json(sub.public_view())


@subscriptions.command("rotate")
@click.argument("subscription_id")
@click.option("--key", "slot", type=click.Choice(["primary", "secondary"]), default="primary", show_default=True)
def rotate_subscription(subscription_id: str, slot: str) -> None:
    """Replace one key and print the new one, once."""
    settings = settings_or_exit()

    async def rotate(repo: SubscriptionRepository) -> str | None:
        if await repo.get(subscription_id) is None:
            return None
        return await repo.rotate(subscription_id, "primary" if slot == "primary" else "secondary")

    key = run_with_repository(settings, rotate)
    if key is None:
        _fail_unknown(subscription_id)
    echo_json({"id": subscription_id, f"{slot}Key": key})
    click.echo(
        f"The old {slot} key stops working within {settings.subscription_cache_seconds:g} s on running gateways.",
        err=True,
    )


def _state_command(name: str, state: str, help_text: str) -> None:
    @subscriptions.command(name, help=help_text)
    @click.argument("subscription_id")
    def command(subscription_id: str) -> None:
        settings = settings_or_exit()

        async def change(repo: SubscriptionRepository) -> Any:
            if await repo.get(subscription_id) is None:
                return None
            return await repo.set_state(subscription_id, state)

        sub = run_with_repository(settings, change)
        if sub is None:
            _fail_unknown(subscription_id)
        echo_json(sub.public_view())


_state_command("suspend", "suspended", "Suspend a subscription: its keys are refused until it is resumed.")
_state_command("resume", "active", "Make a suspended subscription active again.")
_state_command("cancel", "cancelled", "Cancel a subscription for good (its keys are refused).")


@subscriptions.command("delete")
@click.argument("subscription_id")
def delete_subscription(subscription_id: str) -> None:
    """Delete a subscription and its key index."""
    settings = settings_or_exit()
    if not run_with_repository(settings, lambda repo: repo.delete(subscription_id)):
        _fail_unknown(subscription_id)
    click.echo(f"Deleted subscription {subscription_id}.")


def _fail_unknown(subscription_id: str) -> None:
    click.echo(f"No subscription {subscription_id!r}. `python -m gateway subscriptions list` shows the ids.", err=True)
    sys.exit(1)
