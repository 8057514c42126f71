"""`policies check`: validate a document exactly as `apply` would, with whatever settings are present.

`apply` validates with the gateway's settings and the fragments in its store. `check` reads the same settings
the same way (so a bad setting fails it too), but runs where they may be incomplete — a CI job, a laptop
without the storage connection — and then says what it could not check instead of passing it silently:

* no backends configured (GATEWAY_BACKENDS, AZURE_OPENAI_ENDPOINT): backend ids are not checked;
* no GATEWAY_PRODUCTS: a `product:` scope's name is not checked;
* fragments the document includes, when the store cannot be read (no connection, or it does not answer):
  they are taken as empty, so the rest of the document is still checked.

Named values come from GATEWAY_NAMED_VALUES with or without a storage connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.cli.account import loader_for
from gateway.config.settings import Settings
from gateway.errors import StorageError
from gateway.handling.operations import check_policy_scope
from policies.document import PolicyDocument, Scope
from policies.policy_set import load_scoped
from policies.statements.include_fragment import included_ids

#: Stand-ins for the settings `check` does not need (the key pepper), so Settings.from_env reads the rest.
_STAND_INS = {"GATEWAY_KEY_PEPPER": "policy-check-stand-in"}
_NO_STORAGE = "UseDevelopmentStorage=true"
#: How long `check` waits for the store's fragments before reporting them unchecked.
STORE_SECONDS = 10.0


@dataclass(frozen=True)
class Checked:
    document: PolicyDocument
    #: What could not be checked, and why (empty: everything `apply` checks was checked).
    unchecked: tuple[str, ...]


def check_document(xml: str, scope: Scope, env: Mapping[str, str]) -> Checked:
    """Validate as `apply` does; ValueError (the same `apply` raises) when the document would be refused."""
    has_storage = bool(env.get("GATEWAY_STORAGE_CONNECTION") or env.get("AzureWebJobsStorage"))
    settings = Settings.from_env({**env, **_STAND_INS, **({} if has_storage else {"GATEWAY_STORAGE_CONNECTION": _NO_STORAGE})})
    unchecked: list[str] = []
    loader = loader_for(settings)
    if not settings.backends:
        loader = dataclasses.replace(loader, backend_ids=None, embeddings_backend_ids=None)
        unchecked.append("backend ids (backend-id, embeddings-backend-id): GATEWAY_BACKENDS and AZURE_OPENAI_ENDPOINT are unset")
    products = settings.products if env.get("GATEWAY_PRODUCTS") else None
    if products is None and scope.kind == "product":
        unchecked.append(f"the product in scope {scope}: GATEWAY_PRODUCTS is unset")
    check_policy_scope(scope, products)
    included = included_ids(xml)
    if included:
        fragments, reason = _stored_fragments(settings) if has_storage else (None, "GATEWAY_STORAGE_CONNECTION is unset")
        if fragments is None:
            fragments = {fragment_id: "<fragment />" for fragment_id in included}
            unchecked.append(f"fragments {', '.join(sorted(included))} (taken as empty): {reason}")
        loader = dataclasses.replace(loader, fragments=fragments)
    return Checked(load_scoped(xml, scope, loader), tuple(unchecked))


def _stored_fragments(settings: Settings) -> tuple[dict[str, str] | None, str]:
    """The store's fragments, or None and why they could not be read."""
    from gateway.stores.azure_tables import AzureTables
    from gateway.stores.policies import PolicyRepository

    async def read() -> dict[str, str]:
        store = AzureTables(settings.storage_connection.reveal(), settings.table_prefix, deadline_seconds=STORE_SECONDS)
        try:
            return await PolicyRepository(store.table("policies")).fragments()
        finally:
            await store.close()

    try:
        return asyncio.run(read()), ""
    except StorageError as exc:
        return None, f"the policy store did not answer ({exc.message})"
