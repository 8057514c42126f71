"""Subscription owners on the command line: `subscriptions create … --owner-email …` and `subscriptions owner ID …`.

The owner is what policies read as `context.User` (Id, Email, FirstName, LastName, Note, Groups).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from gateway.cli.account import echo_json, run_with_repository, settings_or_exit
from gateway.stores.owners import Owner, make_owner
from gateway.stores.subscriptions import Subscription, SubscriptionRepository

F = TypeVar("F", bound=Callable[..., Any])


def owner_options(command: F) -> F:
    """`--owner-*` options for `subscriptions create`; the command receives them as `owner_*` keywords."""
    for option in reversed(
        (
            click.option("--owner-email", default="", help="Owner's email (context.User.Email); also the default owner id."),
            click.option("--owner-name", default="", help="Owner's name, 'First Last' (context.User.FirstName/LastName)."),
            click.option("--owner-id", default=None, help="Owner's user id (context.User.Id; default: the email)."),
            click.option("--owner-note", default="", help="A note on the owner (context.User.Note)."),
            click.option("--owner-group", "owner_groups", multiple=True, help="A group the owner belongs to (repeat for more)."),
        )
    ):
        command = option(command)
    return command


def owner_of(owner_id: str | None, owner_email: str, owner_name: str, owner_note: str, owner_groups: tuple[str, ...]) -> Owner | None:
    """The owner `owner_options` describe; None when none of them is given."""
    if not (owner_id or owner_email or owner_name or owner_note or owner_groups):
        return None
    try:
        return make_owner(owner_id, owner_email, owner_name, owner_note, owner_groups)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--owner-*") from None


@click.command("owner")
@click.argument("subscription_id")
@click.option("--email", default=None, help="Owner's email.")
@click.option("--name", default=None, help="Owner's name, 'First Last'.")
@click.option("--id", "owner_id", default=None, help="Owner's user id (default: the email).")
@click.option("--note", default=None, help="A note on the owner.")
@click.option("--group", "groups", multiple=True, help="A group the owner belongs to (repeat; replaces the groups; '' for none).")
@click.option("--clear", is_flag=True, help="Remove the owner (context.User becomes null).")
def owner(
    subscription_id: str, email: str | None, name: str | None, owner_id: str | None, note: str | None, groups: tuple[str, ...], clear: bool
) -> None:
    """Set, change or remove the owner of a subscription; options left out keep their current value."""
    settings = settings_or_exit()
    if clear and (email or name or owner_id or note or groups):
        raise click.UsageError("--clear removes the owner: give no other owner option with it.")

    async def change(repo: SubscriptionRepository) -> Subscription | None:
        sub = await repo.get(subscription_id)
        if sub is None:
            return None
        return await repo.set_owner(subscription_id, None if clear else _changed(sub.owner, email, name, owner_id, note, groups))

    sub = run_with_repository(settings, change)
    if sub is None:
        click.echo(f"No subscription {subscription_id!r}. `python -m gateway subscriptions list` shows the ids.", err=True)
        sys.exit(1)
    echo_json(sub.public_view())
    click.echo(f"Running gateways see the change within {settings.subscription_cache_seconds:g} s.", err=True)


def _changed(current: Owner | None, email: str | None, name: str | None, owner_id: str | None, note: str | None, groups: tuple[str, ...]) -> Owner:
    base = current or Owner("")
    keep_name = f"{base.first_name} {base.last_name}".strip()
    try:
        return make_owner(
            owner_id if owner_id is not None else (base.id or None),
            email if email is not None else base.email,
            name if name is not None else keep_name,
            note if note is not None else base.note,
            groups or base.groups,
            base.registered or None,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
