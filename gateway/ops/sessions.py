"""Dashboard sign-in sessions: signed, timestamped tokens that any instance can check, revoked on sign-out.

A session token is `v1.<issued>.<nonce>.<mac>`: the issue time (Unix seconds), 16 random bytes, and an
HMAC-SHA-256 over both with a key derived from the admin key *and* the key pepper (`GATEWAY_KEY_PEPPER`). So:

* every sign-in gets a new token (nothing constant to steal once and replay forever);
* the server checks the age itself (`SESSION_SECONDS`), whatever the cookie's Max-Age says;
* a token is no oracle for the admin key: testing a guess offline needs the pepper too;
* no storage is needed to sign in or to check a token, so every instance accepts every other's sessions;
* rotating `GATEWAY_ADMIN_KEY` or the pepper ends every session at once.

Signing out revokes the one session: its nonce goes to a denylist table (`<prefix>adminsessions`, one small row
per sign-out, kept until the token would have expired anyway), which every instance reads when it checks a
token. When that table cannot be read, sessions are refused (fail closed); `x-admin-key` still works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gateway.stores.tables import Table

SESSION_SECONDS = 8 * 3600
#: A token issued this far in the future (another instance's clock) is still accepted.
CLOCK_SKEW_SECONDS = 60
DENYLIST_TABLE = "adminsessions"
_PARTITION = "revoked"
_VERSION = "v1"


@dataclass(frozen=True)
class Session:
    nonce: str
    issued: int


class SessionTokens:
    """Issues and checks session tokens for one admin key and server secret."""

    def __init__(self, admin_key: str, server_secret: str, lifetime: int = SESSION_SECONDS) -> None:
        self._key = hmac.new(server_secret.encode(), b"gateway-admin-session\x00" + admin_key.encode(), hashlib.sha256).digest()
        self.lifetime = lifetime

    def _mac(self, issued: int, nonce: str) -> str:
        digest = hmac.new(self._key, f"{_VERSION}.{issued}.{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, now: float) -> str:
        issued, nonce = int(now), secrets.token_urlsafe(16)
        return f"{_VERSION}.{issued}.{nonce}.{self._mac(issued, nonce)}"

    def check(self, token: str, now: float) -> Session | None:
        """The session `token` stands for, if it is authentic and neither expired nor from the future."""
        parts = token.split(".")
        if len(token) > 200 or len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
            return None
        issued, nonce, mac = int(parts[1]), parts[2], parts[3]
        if not hmac.compare_digest(mac.encode(), self._mac(issued, nonce).encode()):
            return None
        if not now - self.lifetime < issued <= now + CLOCK_SKEW_SECONDS:
            return None
        return Session(nonce, issued)


class Denylist:
    """Revoked sessions in Table Storage, shared by every instance."""

    def __init__(self, table: Table, lifetime: int = SESSION_SECONDS) -> None:
        self._table = table
        self._lifetime = lifetime

    async def revoke(self, session: Session) -> None:
        entity = {"PartitionKey": _PARTITION, "RowKey": session.nonce, "expires": session.issued + self._lifetime}
        await self._table.upsert(entity)

    async def revoked(self, session: Session) -> bool:
        return await self._table.get(_PARTITION, session.nonce) is not None
