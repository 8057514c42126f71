"""`python -m gateway policies …`: check, apply, show, list and enqueue policy documents (and fragments)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from gateway.cli import progress
from gateway.cli.account import Account, echo_json, loader_for, run_with_account, settings_or_exit
from gateway.cli.fragments import fragments
from gateway.handling.operations import check_policy_scope
from policies.document import Scope


@click.group()
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


policies.add_command(fragments)


@policies.command("check")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option("global")
def check_policy(file: Any, scope_text: str) -> None:
    """Validate a document exactly as `apply` would, without storing it; say what settings left unchecked."""
    from gateway.cli.policy_check import check_document

    scope = _parse_scope(scope_text)
    try:
        checked = check_document(file.read(), scope, os.environ)
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was applied. Fix the document and run `policies check` again.") from None
    count = sum(len(items) for items in checked.document.sections.values())
    click.echo(f"OK: {file.name} is a valid policy document for scope {scope} ({count} top-level items).")
    if checked.unchecked:
        click.echo("Not checked, for want of settings (apply checks these with the gateway's):")
        click.echo("\n".join(f"  - {item}" for item in checked.unchecked))


@policies.command("apply")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option()
def apply_policy(file: Any, scope_text: str) -> None:
    """Validate and store a document; running gateways pick it up within their poll interval."""
    from gateway.stores.policies import apply_document

    scope = _parse_scope(scope_text)
    settings = settings_or_exit()
    xml = file.read()

    async def apply(account: Account) -> int:
        return await apply_document(account.policy_repository, scope, xml, account.loader)

    try:
        check_policy_scope(scope, settings.products)
        with progress.spinner(f"Applying {file.name} to {scope}"):
            version = run_with_account(settings, apply)
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was applied; the policies in force are unchanged.") from None
    click.echo(f"Applied {file.name} to scope {scope} (config version {version}); gateways reload within {settings.policy_poll_seconds:g} s.")


@policies.command("delete")
@_scope_option()
def delete_policy(scope_text: str) -> None:
    """Remove the document of one scope (the scope then inherits everything)."""
    scope = _parse_scope(scope_text)
    settings = settings_or_exit()

    async def delete(account: Account) -> int | None:
        repository = account.policy_repository
        if await repository.document(scope) is None:
            return None
        return int(await repository.delete(scope))

    version = run_with_account(settings, delete)
    if version is None:
        raise click.ClickException(f"No document is stored for scope {scope}. `policies list` shows the stored scopes.")
    click.echo(f"Deleted the policy of scope {scope} (config version {version}).")


@policies.command("show")
@_scope_option()
def show_policy(scope_text: str) -> None:
    """Print the stored document of one scope."""
    scope = _parse_scope(scope_text)

    async def show(account: Account) -> str | None:
        return await account.policy_repository.document(scope)

    xml = run_with_account(settings_or_exit(), show)
    if xml is None:
        raise click.ClickException(f"No document is stored for scope {scope}. `policies list` shows the stored scopes.")
    click.echo(xml)


@policies.command("list")
def list_policies() -> None:
    """List stored scopes and the config version."""

    async def listing(account: Account) -> tuple[int, dict[str, str]]:
        repository = account.policy_repository
        return await repository.version(), await repository.documents()

    version, documents = run_with_account(settings_or_exit(), listing)
    echo_json({"version": version, "scopes": {scope: len(xml) for scope, xml in sorted(documents.items())}})


@policies.command("effective")
@click.option("--operation", "operation_id", required=True, help="Operation id, e.g. ChatCompletions_Create.")
@click.option("--product", default=None, help="Product of the calling subscription, if any.")
def effective_policy(operation_id: str, product: str | None) -> None:
    """Print the effective document for an operation: every scope merged at its <base />."""
    from gateway.handling.operations import ALL_OPERATIONS
    from policies.policy_set import compile_policy_set

    operation = next((op for op in ALL_OPERATIONS if op.id == operation_id), None)
    if operation is None:
        known = ", ".join(op.id for op in ALL_OPERATIONS)
        raise click.BadParameter(f"Unknown operation {operation_id!r}; known: {known}.", param_hint="--operation")

    async def stored(account: Account) -> tuple[dict[str, str], dict[str, str]]:
        return await account.policy_repository.documents(), await account.policy_repository.fragments()

    settings = settings_or_exit()
    documents, fragments = run_with_account(settings, stored)
    policy_set = compile_policy_set(documents, 0, loader_for(settings), fragments)
    click.echo(policy_set.pipeline(product, operation.api, operation.id).to_xml())


@policies.command("enqueue")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_scope_option()
def enqueue_policy(file: Any, scope_text: str) -> None:
    """Send a document through the `policy-updates` queue, as an automated pipeline would."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    scope = _parse_scope(scope_text)
    settings = settings_or_exit()
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
