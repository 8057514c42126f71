"""Subscription scopes and the authenticator's cache, with an in-memory repository."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import InvalidSubscriptionKey, MissingSubscriptionKey, StorageUnavailable
from gateway.handling import auth as auth_module
from gateway.handling.auth import SubscriptionAuthenticator
from gateway.stores.subscriptions import KeyHasher, Subscription, validate_scope

PRODUCTS = {"gold": ("openai",)}
hasher = KeyHasher("pepper-for-unit-tests")


def subscription(scope: str = "all", state: str = "active", key: str = "k1") -> Subscription:
    return Subscription("s1", "team", state, scope, hasher.hash(key), hasher.hash("k2"), "2026-01-01")


class FakeRepository:
    def __init__(self, sub: Subscription | None) -> None:
        self.sub = sub
        self.reads = 0

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        if self.sub and key_hash in (self.sub.primary_key_hash, self.sub.secondary_key_hash):
            return self.sub
        return None


def authenticator(repo: FakeRepository, clock: list[float]) -> SubscriptionAuthenticator:
    return SubscriptionAuthenticator(repo, hasher, PRODUCTS, cache_seconds=5, clock=lambda: clock[0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scope", "state", "api", "granted"),
    [
        ("all", "active", "openai", True),
        ("all", "suspended", "openai", False),
        ("all", "cancelled", "openai-v1", False),
        ("api:openai", "active", "openai", True),
        ("api:openai", "active", "openai-v1", False),
        ("product:gold", "active", "openai", True),
        ("product:gold", "active", "openai-v1", False),
        ("product:missing", "active", "openai", False),
    ],
)
def test_subscription_grants_by_scope_and_state(scope: str, state: str, api: str, granted: bool) -> None:
    assert subscription(scope, state).grants(api, PRODUCTS) is granted


def test_key_hash_depends_on_pepper() -> None:
    assert KeyHasher("a" * 16).hash("key") != KeyHasher("b" * 16).hash("key")
    assert len(hasher.hash("key")) == 64


def test_validate_scope_lists_allowed_values() -> None:
    assert validate_scope("product:gold", PRODUCTS, ("openai",)) == "product:gold"
    with pytest.raises(ValueError, match="api:openai, product:gold"):
        validate_scope("api:other", PRODUCTS, ("openai",))


async def test_cached_key_skips_storage_until_it_expires() -> None:
    repo, clock = FakeRepository(subscription()), [0.0]
    auth = authenticator(repo, clock)
    await auth.authenticate("k1", "openai")
    await auth.authenticate("k1", "openai")
    assert repo.reads == 1
    clock[0] = 5.1
    repo.sub = subscription(state="suspended")
    with pytest.raises(InvalidSubscriptionKey):
        await auth.authenticate("k1", "openai")
    assert repo.reads == 2


async def test_unknown_key_is_cached_too() -> None:
    repo, clock = FakeRepository(subscription()), [0.0]
    auth = authenticator(repo, clock)
    for _ in range(3):
        with pytest.raises(InvalidSubscriptionKey):
            await auth.authenticate("nope", "openai")
    assert repo.reads == 1


async def test_concurrent_lookups_of_one_key_share_a_read() -> None:
    repo, clock = FakeRepository(subscription()), [0.0]
    auth = authenticator(repo, clock)
    subs = await asyncio.gather(*(auth.authenticate("k2", "openai") for _ in range(20)))
    assert {s.id for s in subs} == {"s1"}
    assert repo.reads == 1


async def test_missing_key_never_reaches_storage() -> None:
    repo = FakeRepository(subscription())
    with pytest.raises(MissingSubscriptionKey):
        await authenticator(repo, [0.0]).authenticate("", "openai")
    assert repo.reads == 0


class FailingRepository(FakeRepository):
    """A repository whose storage can be switched off, as during an outage."""

    def __init__(self, sub: Subscription | None) -> None:
        super().__init__(sub)
        self.down = False

    async def find_by_key_hash(self, key_hash: str) -> Subscription | None:
        if self.down:
            raise StorageUnavailable()
        return await super().find_by_key_hash(key_hash)


async def test_storage_outage_serves_recently_verified_keys_until_the_stale_bound() -> None:
    repo, clock = FailingRepository(subscription()), [0.0]
    auth = SubscriptionAuthenticator(repo, hasher, PRODUCTS, cache_seconds=5, stale_seconds=60, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert (await auth.authenticate("k1", "openai")).id == "s1"
    repo.down = True
    clock[0] = 59.0  # cache expired, storage down: the key verified 59 s ago still works
    assert (await auth.authenticate("k1", "openai")).id == "s1"
    with pytest.raises(StorageUnavailable):  # a key never verified cannot be trusted
        await auth.authenticate("k2", "openai")
    clock[0] = 61.0  # beyond the stale bound: 503, not a stale answer
    with pytest.raises(StorageUnavailable):
        await auth.authenticate("k1", "openai")


async def test_a_suspension_stops_the_key_once_storage_answers_again() -> None:
    repo, clock = FailingRepository(subscription()), [0.0]
    auth = SubscriptionAuthenticator(repo, hasher, PRODUCTS, cache_seconds=5, stale_seconds=60, clock=lambda: clock[0])  # type: ignore[arg-type]
    await auth.authenticate("k1", "openai")
    repo.down, clock[0] = True, 10.0
    await auth.authenticate("k1", "openai")  # stale, allowed
    repo.down, repo.sub = False, subscription(state="suspended")
    clock[0] = 11.0
    with pytest.raises(InvalidSubscriptionKey):
        await auth.authenticate("k1", "openai")


async def test_a_flood_of_unknown_keys_never_evicts_verified_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_REJECTED", 10)
    repo, clock = FakeRepository(subscription()), [0.0]
    auth = authenticator(repo, clock)
    await auth.authenticate("k1", "openai")
    for n in range(50):
        with pytest.raises(InvalidSubscriptionKey):
            await auth.authenticate(f"random-{n}", "openai")
    reads = repo.reads
    assert (await auth.authenticate("k1", "openai")).id == "s1"
    assert repo.reads == reads  # still cached: the rejections went to their own bounded cache
    assert len(auth._rejected) == 10
