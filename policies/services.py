"""What policy statements need from the gateway at run time, as one protocol the gateway implements.

Statements depend on this interface, never on the gateway's modules, so the policy language can be tested
with a fake and the gateway can change how it forwards or authenticates without touching statements. Every
network call a statement causes (backends, `send-request`, loggers, Content Safety) happens behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from policies.context import Context, Response
from policies.counters import Counters
from policies.semantic_cache import SemanticCache
from policies.url_allow_list import UrlAllowList
from policies.usage import Usage

if TYPE_CHECKING:  # PyJWT loads only for gateways that validate tokens
    from policies.jwks import SigningKeys


class MetricsSink(Protocol):
    def record(self, namespace: str, dimensions: Iterable[tuple[str, str]], usage: Usage, subscription: str, deployment: str) -> None: ...

    def record_custom(self, namespace: str, name: str, value: float, dimensions: Iterable[tuple[str, str]]) -> None:
        """One `emit-metric` value, aggregated per minute beside the token metrics."""


class ValueCache(Protocol):
    """`cache-lookup-value` / `-store-value` / `-remove-value`: values by key, shared by the gateway's instances.

    Storage failures never reach statements: a lookup misses, a store or removal is dropped.
    """

    async def lookup(self, key: str) -> tuple[bool, Any]:
        """(True, value) on a hit; (False, None) on a miss or an expired entry."""

    async def store(self, key: str, value: Any, ttl_seconds: float) -> None: ...

    async def remove(self, key: str) -> None: ...


class EventLog(Protocol):
    def log(self, logger_id: str, message: str, partition_key: str | None, partition_id: str | None) -> None:
        """Queue `message` for the logger; sent in the background (dropped, and logged, when the queue is full)."""


@dataclass(frozen=True)
class OutgoingRequest:
    """A request a policy sends itself (`send-request`), with its headers as the policy set them."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Services(Protocol):
    @property
    def counters(self) -> Counters:
        """Where rate limits and token limits count (shared across instances by the gateway)."""

    @property
    def metrics(self) -> MetricsSink:
        """Where emit-token-metric and emit-metric record."""

    @property
    def token_rate_window_seconds(self) -> float:
        """The window of tokens-per-minute limits (60 s; shorter only in tests)."""

    @property
    def signing_keys(self) -> SigningKeys:
        """Where validate-jwt and validate-azure-ad-token get identity providers' signing keys."""

    @property
    def semantic_cache(self) -> SemanticCache:
        """Embeddings, entries and the vector index of semantic-cache lookups and stores."""

    @property
    def allowed_urls(self) -> UrlAllowList:
        """Where `base-url` and `send-request` may send (policies/url_allow_list.py)."""

    @property
    def value_cache(self) -> ValueCache:
        """The values of `cache-*-value`."""

    @property
    def event_log(self) -> EventLog:
        """The loggers of `log-to-eventhub`."""

    async def forward(self, context: Context, timeout: float | None) -> None:
        """Send `context.Request` to the selected backend and set `context.Response` (status and headers).

        A previous live backend response on the context is closed first, so a retry never leaks it.
        Transport failures raise `PolicyError` (reason `BackendConnectionFailure` or `Timeout`).
        """

    async def send(self, request: OutgoingRequest, timeout: float) -> Response:
        """Send a policy's own request and return the whole (bounded) response; no redirects are followed.

        The URL must be allowed (the caller checked; the gateway checks again: `PolicyError` `UrlNotAllowed`).
        Credential headers the client sent are not sent on unless a policy set them. Transport failures,
        timeouts, oversized answers and unsendable headers raise a `ServiceError` (codes
        `BackendConnectionFailure`, `BackendTimeout`, `ResponseTooLarge`, `InvalidOutboundRequest`).
        """

    def send_one_way(self, request: OutgoingRequest, timeout: float) -> None:
        """Send a request in the background without waiting; dropped (and logged) when too many are in flight."""

    async def call_backend(self, backend_id: str, path: str, body: bytes, timeout: float) -> Response:
        """POST a JSON body to `path` (with its query) on a configured backend, with that backend's credential.

        For Azure AI services such as Content Safety: a key is sent as `Ocp-Apim-Subscription-Key`. An unknown
        backend, a transport failure or a timeout raise a `ServiceError`, as for `send`.
        """

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        """An Entra ID access token for `resource`, cached and refreshed by the gateway."""

    async def estimate_prompt_tokens(self, context: Context, ceiling: int | None = None) -> int:
        """The request's prompt tokens, counted with the deployment's tokenizer (off the event loop when large).

        With a `ceiling` (the most prompt tokens the caller could admit), a prompt provably larger may be
        estimated from its length instead, at a number that is still above the ceiling.
        """

    def completion_allowance(self, context: Context) -> int:
        """The most completion tokens the request may produce (its max_tokens, or the configured default)."""
