"""What the CLI's commands share: settings, the storage account's repositories, and the loader `apply` uses.

Commands run one coroutine against the account (`run_with_account`) and turn storage failures into one
message saying what to check; no gateway is built.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import click

from gateway.config.settings import Settings
from gateway.errors import StorageError
from gateway.stores.policies import PolicyRepository
from gateway.stores.subscriptions import KeyHasher, SubscriptionRepository
from gateway.stores.tables import Tables
from policies.statement import Loader

T = TypeVar("T")


@dataclass
class Account:
    """The tables of the gateway's storage account, as the commands need them."""

    store: Tables
    subscriptions: SubscriptionRepository
    policy_repository: PolicyRepository
    loader: Loader


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(f"{exc}\nLocally, `python -m gateway run` sets up Azurite and a pepper for you.") from None


def loader_for(settings: Settings) -> Loader:
    """The loader a gateway with `settings` loads documents with (gateway.handling.policy_loader.py)."""
    from gateway.backends.registry import BackendRegistry
    from gateway.handling.policy_loader import policy_loader

    return policy_loader(settings, BackendRegistry(settings.backends))


def run_with_account(settings: Settings, action: Callable[[Account], Awaitable[T]]) -> T:
    from gateway.stores.azure_tables import AzureTables

    async def go() -> T:
        store = AzureTables(settings.storage_connection.reveal(), settings.table_prefix, deadline_seconds=30)
        account = Account(
            store, SubscriptionRepository(store.table("subscriptions"), KeyHasher(settings.key_pepper.reveal())),
            PolicyRepository(store.table("policies")), loader_for(settings),
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


def run_with_repository(settings: Settings, action: Callable[[SubscriptionRepository], Awaitable[T]]) -> T:
    return run_with_account(settings, lambda account: action(account.subscriptions))


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))
