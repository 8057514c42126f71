"""Subscriptions: named pairs of keys, stored hashed in Table Storage, checked on every request.

Table `<prefix>subscriptions` holds two partitions:

* `subscription` / `<id>`: name, state, scope, primary and secondary key hashes, creation time, and the
  optional owner (gateway/stores/owners.py);
* `key` / `<hash>`: an index from a key's hash to its subscription id.

A key is stored only as HMAC-SHA-256(pepper, key). Lookup goes through the index, then the subscription
row is the source of truth: the candidate hash must equal its current primary or secondary hash (compared
in constant time), so an index row left behind by a rotation never grants access.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.stores.owners import Owner, owner_from, owner_properties
from gateway.stores.tables import Query, Table

STATES = ("active", "suspended", "cancelled")
KeySlot = Literal["primary", "secondary"]
_SUBSCRIPTION = "subscription"
_KEY = "key"


@dataclass(frozen=True)
class Subscription:
    id: str
    name: str
    state: str
    #: "all", "product:<name>" or "api:<api id>".
    scope: str
    primary_key_hash: str
    secondary_key_hash: str
    created: str
    #: The user the subscription belongs to (`context.User`), if any.
    owner: Owner | None = None

    def grants(self, api: str, products: Mapping[str, tuple[str, ...]]) -> bool:
        if self.state != "active":
            return False
        kind, _, target = self.scope.partition(":")
        if kind == "all":
            return True
        if kind == "api":
            return target == api
        return kind == "product" and api in products.get(target, ())

    @property
    def product(self) -> str | None:
        kind, _, target = self.scope.partition(":")
        return target if kind == "product" else None

    def public_view(self) -> dict[str, Any]:
        """What the CLI and admin views may show: everything but the key hashes (the owner when there is one)."""
        view: dict[str, Any] = {"id": self.id, "name": self.name, "state": self.state, "scope": self.scope, "created": self.created}
        if self.owner is not None:
            view["owner"] = self.owner.view()
        return view


def validate_scope(scope: str, products: Mapping[str, tuple[str, ...]], apis: tuple[str, ...]) -> str:
    kind, _, target = scope.partition(":")
    if scope == "all":
        return scope
    if kind == "api" and target in apis:
        return scope
    if kind == "product" and target in products:
        return scope
    known = ["all"] + [f"api:{a}" for a in apis] + [f"product:{p}" for p in products]
    raise ValueError(f"Invalid scope {scope!r}: use one of {', '.join(known)} (products come from GATEWAY_PRODUCTS).")


class KeyHasher:
    def __init__(self, pepper: str) -> None:
        # Keyed once: each hash copies this state instead of deriving the pads from the pepper again (half the cost).
        self._keyed = hmac.new(pepper.encode(), digestmod="sha256")

    def hash(self, key: str) -> str:
        mac = self._keyed.copy()
        mac.update(key.encode())
        return mac.hexdigest()


def new_key() -> str:
    """32 hex characters, the shape of an APIM subscription key."""
    return secrets.token_hex(16)


class SubscriptionRepository:
    """Reads and writes subscriptions; the only code that knows the table layout."""

    def __init__(self, table: Table, hasher: KeyHasher) -> None:
        self._table = table
        self._hasher = hasher

    async def create(self, name: str, scope: str, subscription_id: str | None = None, owner: Owner | None = None) -> tuple[Subscription, str, str]:
        """Create a subscription; returns it with its two plain keys, which are never stored."""
        primary, secondary = new_key(), new_key()
        sub = Subscription(
            id=subscription_id or uuid.uuid4().hex,
            name=name,
            state="active",
            scope=scope,
            primary_key_hash=self._hasher.hash(primary),
            secondary_key_hash=self._hasher.hash(secondary),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            owner=owner,
        )
        await self._table.insert(_to_entity(sub))
        await self._index(sub.primary_key_hash, sub.id)
        await self._index(sub.secondary_key_hash, sub.id)
        return sub, primary, secondary

    async def get(self, subscription_id: str) -> Subscription | None:
        entity = await self._table.get(_SUBSCRIPTION, subscription_id)
        return _from_entity(entity) if entity is not None else None

    async def list(self) -> list[Subscription]:
        return [_from_entity(e) async for e in self._table.query(Query(partition=_SUBSCRIPTION))]

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        index = await self._table.get(_KEY, key_hash)
        if index is None:
            return None
        sub = await self.get(index["subscriptionId"])
        if sub is None:
            return None
        matches = hmac.compare_digest(key_hash, sub.primary_key_hash) | hmac.compare_digest(key_hash, sub.secondary_key_hash)
        return sub if matches else None

    async def rotate(self, subscription_id: str, slot: KeySlot) -> str:
        """Replace one key; the old one stops working at once here and within the cache time elsewhere."""
        entity = await self._table.get(_SUBSCRIPTION, subscription_id)
        if entity is None:
            raise KeyError(subscription_id)
        sub = _from_entity(entity)
        key = new_key()
        new_hash = self._hasher.hash(key)
        old_hash = sub.primary_key_hash if slot == "primary" else sub.secondary_key_hash
        await self._index(new_hash, sub.id)
        updated = replace(sub, primary_key_hash=new_hash) if slot == "primary" else replace(sub, secondary_key_hash=new_hash)
        await self._table.replace(_to_entity(updated), entity.etag)
        await self._unindex(old_hash)
        return key

    async def set_state(self, subscription_id: str, state: str) -> Subscription:
        if state not in STATES:
            raise ValueError(f"Invalid state {state!r}: use one of {', '.join(STATES)}.")
        if not await self._table.merge({"PartitionKey": _SUBSCRIPTION, "RowKey": subscription_id, "state": state}):
            raise KeyError(subscription_id)
        sub = await self.get(subscription_id)
        if sub is None:
            raise KeyError(subscription_id)
        return sub

    async def set_owner(self, subscription_id: str, owner: Owner | None) -> Subscription:
        """Give the subscription an owner (None: none); KeyError if there is no such subscription."""
        entity = await self._table.get(_SUBSCRIPTION, subscription_id)
        if entity is None:
            raise KeyError(subscription_id)
        updated = replace(_from_entity(entity), owner=owner)
        await self._table.replace(_to_entity(updated), entity.etag)
        return updated

    async def delete(self, subscription_id: str) -> bool:
        sub = await self.get(subscription_id)
        if sub is None:
            return False
        await self._table.delete(_SUBSCRIPTION, subscription_id)
        await self._unindex(sub.primary_key_hash)
        await self._unindex(sub.secondary_key_hash)
        return True

    async def _index(self, key_hash: str, subscription_id: str) -> None:
        await self._table.upsert({"PartitionKey": _KEY, "RowKey": key_hash, "subscriptionId": subscription_id})

    async def _unindex(self, key_hash: str) -> None:
        await self._table.delete(_KEY, key_hash)


def _to_entity(sub: Subscription) -> dict[str, Any]:
    return {
        "PartitionKey": _SUBSCRIPTION,
        "RowKey": sub.id,
        "name": sub.name,
        "state": sub.state,
        "scope": sub.scope,
        "primaryKeyHash": sub.primary_key_hash,
        "secondaryKeyHash": sub.secondary_key_hash,
        "created": sub.created,
        **owner_properties(sub.owner),
    }


def _from_entity(entity: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=entity["RowKey"],
        name=entity["name"],
        state=entity["state"],
        scope=entity["scope"],
        primary_key_hash=entity["primaryKeyHash"],
        secondary_key_hash=entity["secondaryKeyHash"],
        created=entity["created"],
        owner=owner_from(entity),
    )
