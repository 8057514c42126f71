"""What policy statements need from the gateway at run time, as one protocol the gateway implements.

Statements depend on this interface, never on the gateway's modules, so the policy language can be tested
with a fake and the gateway can change how it forwards or authenticates without touching statements.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from policies.context import Context
from policies.counters import Counters
from policies.semantic_cache import SemanticCache
from policies.usage import Usage

if TYPE_CHECKING:  # PyJWT and httpx load only for gateways that validate tokens
    from policies.jwks import SigningKeys


class MetricsSink(Protocol):
    def record(self, namespace: str, dimensions: Iterable[tuple[str, str]], usage: Usage, subscription: str, deployment: str) -> None: ...


class Services(Protocol):
    #: Where rate limits and token limits count (shared across instances by the gateway).
    counters: Counters
    #: Where emit-token-metric records usage.
    metrics: MetricsSink
    #: The window of tokens-per-minute limits (60 s; shorter only in tests).
    token_rate_window_seconds: float
    #: Where validate-jwt and validate-azure-ad-token get identity providers' signing keys.
    signing_keys: SigningKeys
    #: Embeddings, entries and the vector index of semantic-cache lookups and stores.
    semantic_cache: SemanticCache

    async def forward(self, context: Context, timeout: float | None) -> None:
        """Send `context.Request` to the selected backend and set `context.Response` (status and headers).

        A previous live backend response on the context is closed first, so a retry never leaks it.
        Transport failures raise `PolicyError` (reason `BackendConnectionFailure` or `Timeout`).
        """

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        """An Entra ID access token for `resource`, cached and refreshed by the gateway."""

    def estimate_prompt_tokens(self, context: Context) -> int:
        """The request's prompt tokens, counted with the deployment's tokenizer."""

    def completion_allowance(self, context: Context) -> int:
        """The most completion tokens the request may produce (its max_tokens, or the configured default)."""
