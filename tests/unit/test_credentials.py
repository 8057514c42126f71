"""Managed identity token caching and refresh, with a fake credential and a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from gateway.backends.credentials import COGNITIVE_SERVICES_SCOPE, TokenProvider
from gateway.errors import BackendCredentialError


@dataclass
class FakeToken:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, clock: list[float], lifetime: int = 3600, delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[tuple[str, ...]] = []
        self.fail = False

    async def get_token(self, *scopes: str) -> FakeToken:
        self.calls.append(scopes)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("identity endpoint down")
        return FakeToken(f"token-{len(self.calls)}", int(self.clock[0]) + self.lifetime)

    async def close(self) -> None:
        pass


def provider(lifetime: int = 3600, delay: float = 0.0) -> tuple[TokenProvider, FakeCredential, list[float]]:
    clock = [1_000_000.0]
    credential = FakeCredential(clock, lifetime, delay)
    return TokenProvider(credential, clock=lambda: clock[0]), credential, clock


async def test_token_is_fetched_once_and_cached() -> None:
    tokens, credential, clock = provider()
    assert await tokens.token() == "token-1"
    clock[0] += 3000  # 600 s before expiry: still fresh
    assert await tokens.token() == "token-1"
    assert credential.calls == [(COGNITIVE_SERVICES_SCOPE,)]


async def test_token_is_refreshed_five_minutes_before_expiry() -> None:
    tokens, credential, clock = provider()
    await tokens.token()
    clock[0] += 3600 - 299
    assert await tokens.token() == "token-2"
    assert len(credential.calls) == 2


async def test_short_lived_token_is_refreshed_at_half_its_lifetime() -> None:
    tokens, credential, clock = provider(lifetime=200)
    await tokens.token()
    clock[0] += 99
    assert await tokens.token() == "token-1"
    clock[0] += 2
    assert await tokens.token() == "token-2"


async def test_concurrent_first_calls_share_one_fetch() -> None:
    tokens, credential, _ = provider(delay=0.05)
    results = await asyncio.gather(*(tokens.token() for _ in range(10)))
    assert set(results) == {"token-1"}
    assert len(credential.calls) == 1


async def test_failed_refresh_keeps_serving_unexpired_token() -> None:
    tokens, credential, clock = provider()
    await tokens.token()
    clock[0] += 3400  # inside the refresh margin, not expired
    credential.fail = True
    assert await tokens.token() == "token-1"
    clock[0] += 300  # now expired: the failure surfaces as the gateway's backend credential error
    with pytest.raises(BackendCredentialError) as raised:
        await tokens.token()
    assert isinstance(raised.value.__cause__, RuntimeError) and raised.value.status == 502
    credential.fail = False
    assert await tokens.token() == "token-4"  # calls 2 and 3 failed
