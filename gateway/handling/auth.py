"""Inbound authentication: the subscription a key belongs to (which key a request carries: client_credentials.py).

Lookups are cached in memory so the hot path skips storage:

* a verified key is trusted for `cache_seconds` (default 5 s): how late a suspension, deletion or rotation
  reaches an instance that has just seen the key;
* a rejected key is remembered as rejected for as long, in its own bounded cache, so a flood of random keys
  costs one storage read per distinct key and can never push the valid keys out;
* **while storage is unavailable**, a key verified less than `stale_seconds` ago (default 300 s) keeps working
  (serve-stale); a key not verified that recently gets 503 `StorageUnavailable` with Retry-After. Once storage
  answers again, the normal `cache_seconds` bound applies from the next lookup on.

Concurrent first lookups of one key share a single storage read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway.errors import InvalidSubscriptionKey, MissingSubscriptionKey, StorageError
from gateway.stores.subscriptions import KeyHasher, Subscription, SubscriptionRepository

logger = logging.getLogger(__name__)
V = TypeVar("V")

#: Verified keys kept at most (oldest verification dropped first).
MAX_VERIFIED = 50_000
#: Rejected keys remembered at most; a separate cache, so rejections never evict verified keys.
MAX_REJECTED = 10_000


@dataclass(frozen=True)
class _Verified:
    subscription: Subscription
    #: `clock()` when storage last confirmed the key.
    at: float


class SubscriptionAuthenticator:
    def __init__(
        self,
        repository: SubscriptionRepository,
        hasher: KeyHasher,
        products: Mapping[str, tuple[str, ...]],
        cache_seconds: float,
        stale_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._hasher = hasher
        self._products = products
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Subscription | None]] = {}
        self._serving_stale = False

    async def authenticate(self, key: str | None, api: str) -> Subscription:
        if not key:
            raise MissingSubscriptionKey()
        sub = await self._lookup(self._hasher.hash(key))
        if sub is None or not sub.grants(api, self._products):
            raise InvalidSubscriptionKey()
        return sub

    async def _lookup(self, key_hash: str) -> Subscription | None:
        now = self._clock()
        verified = self._verified.get(key_hash)
        if verified is not None and now - verified.at < self._cache_seconds:
            return verified.subscription
        rejected_at = self._rejected.get(key_hash)
        if rejected_at is not None and now - rejected_at < self._cache_seconds:
            return None
        try:
            sub = await self._read_once(key_hash)
        except StorageError:
            if verified is not None and now - verified.at < self._stale_seconds:
                if not self._serving_stale:
                    logger.warning("Storage is unavailable: serving keys verified in the last %.0f s from memory.", self._stale_seconds)
                self._serving_stale = True
                return verified.subscription
            raise
        self._serving_stale = False
        self._remember(key_hash, sub, now)
        return sub

    async def _read_once(self, key_hash: str) -> Subscription | None:
        """One storage read per key at a time: concurrent lookups of the same key wait for the first."""
        pending = self._inflight.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Subscription | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_hash] = future
        try:
            sub = await self._repository.find_by_key_hash(key_hash)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._inflight[key_hash]
        future.set_result(sub)
        return sub

    def _remember(self, key_hash: str, sub: Subscription | None, now: float) -> None:
        if sub is None:
            self._verified.pop(key_hash, None)
            _put(self._rejected, key_hash, now, MAX_REJECTED)
        else:
            self._rejected.pop(key_hash, None)
            _put(self._verified, key_hash, _Verified(sub, now), MAX_VERIFIED)


def _put(cache: OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
