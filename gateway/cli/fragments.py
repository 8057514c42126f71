"""`python -m gateway policies fragments …`: store, list, show and delete policy fragments.

A fragment is a `<fragment>` document of statements that `<include-fragment fragment-id="ID" />` inlines where
it stands; it is stored beside the policy documents and applies the same way (validated first, then the
version row is bumped, and running gateways reload within their poll interval).
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from gateway.cli import progress
from gateway.cli.account import Account, echo_json, run_with_account, settings_or_exit
from policies.statements.include_fragment import included_ids


def _id_option() -> Any:
    return click.option("--id", "fragment_id", required=True, help="Fragment id, as include-fragment's fragment-id names it.")


@click.group()
def fragments() -> None:
    """Policy fragments: `<fragment>` documents that `<include-fragment fragment-id="ID" />` inlines."""


@fragments.command("apply")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_id_option()
def apply_fragment(file: Any, fragment_id: str) -> None:
    """Validate and store a fragment; the stored documents that include it must still load with it."""
    from gateway.stores.policies import apply_fragment as apply

    settings = settings_or_exit()
    xml = file.read()
    try:
        with progress.spinner(f"Applying {file.name} as fragment {fragment_id}"):
            version, sections = run_with_account(settings, lambda account: apply(account.policy_repository, fragment_id, xml, account.loader))
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was applied; the fragments in force are unchanged.") from None
    click.echo(
        f"Applied {file.name} as fragment {fragment_id} (config version {version}); it can be included in "
        f"{', '.join(f'<{section}>' for section in sections)}. Gateways reload within {settings.policy_poll_seconds:g} s."
    )


@fragments.command("list")
def list_fragments() -> None:
    """List stored fragments: their size and what includes them."""

    async def listing(account: Account) -> tuple[int, dict[str, str], dict[str, str]]:
        repository = account.policy_repository
        return await repository.version(), await repository.fragments(), await repository.documents()

    version, stored, documents = run_with_account(settings_or_exit(), listing)
    includes = {f"scope {scope}": included_ids(xml) for scope, xml in documents.items()}
    includes.update({f"fragment {other}": included_ids(xml) for other, xml in stored.items()})
    echo_json(
        {
            "version": version,
            "fragments": {
                fragment_id: {"chars": len(xml), "includedBy": sorted(user for user, ids in includes.items() if fragment_id in ids)}
                for fragment_id, xml in sorted(stored.items())
            },
        }
    )


@fragments.command("show")
@_id_option()
def show_fragment(fragment_id: str) -> None:
    """Print a stored fragment."""

    async def show(account: Account) -> str | None:
        return await account.policy_repository.fragment(fragment_id)

    xml = run_with_account(settings_or_exit(), show)
    if xml is None:
        _fail_unknown(fragment_id)
    click.echo(xml)


@fragments.command("delete")
@_id_option()
def delete_fragment(fragment_id: str) -> None:
    """Delete a fragment; refused while a stored document or fragment includes it."""
    from gateway.stores.policies import delete_fragment as delete

    try:
        version = run_with_account(settings_or_exit(), lambda account: delete(account.policy_repository, fragment_id))
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nNothing was deleted.") from None
    if version is None:
        _fail_unknown(fragment_id)
    click.echo(f"Deleted fragment {fragment_id} (config version {version}).")


def _fail_unknown(fragment_id: str) -> NoReturn:
    raise click.ClickException(f"No fragment {fragment_id[:100]!r} is stored. `policies fragments list` shows the stored ones.")
