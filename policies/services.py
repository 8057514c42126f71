"""What policy statements need from the gateway at run time, as one protocol the gateway implements.

Statements depend on this interface, never on the gateway's modules, so the policy language can be tested
with a fake and the gateway can change how it forwards or authenticates without touching statements.
"""

from __future__ import annotations

from typing import Protocol

from policies.context import Context
from policies.counters import Counters
from policies.jwks import SigningKeys


class Services(Protocol):
    #: Where rate-limit statements count calls.
    counters: Counters
    #: Where validate-jwt and validate-azure-ad-token get identity providers' signing keys.
    signing_keys: SigningKeys

    async def forward(self, context: Context, timeout: float | None) -> None:
        """Send `context.Request` to the selected backend and set `context.Response` (status and headers).

        A previous live backend response on the context is closed first, so a retry never leaks it.
        Transport failures raise `PolicyError` (reason `BackendConnectionFailure` or `Timeout`).
        """

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        """An Entra ID access token for `resource`, cached and refreshed by the gateway."""
