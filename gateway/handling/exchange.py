"""One request on its way through the gateway: what policies cannot see, and the request's accounting.

An `Exchange` is made per request and is that request's `policies.services.Services`: statements forward,
fetch tokens and count through it. It keeps what must not leak into the policy context (the client's own
credential headers, the live backend response while it streams, the backends already tried), the request's
Server-Timing, and its usage accounting: the usage listeners (token limits, metrics, cache stores) hear the
request's usage exactly once, whether it was answered by the backend, by a policy, from the cache, or broke off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
import orjson

from gateway.backends.backend import Backend
from gateway.backends.health import CONNECTION_FAILURE, TIMEOUT
from gateway.backends.proxy import is_streaming, read_body, upstream_headers
from gateway.errors import BackendError, BackendTimeout, DeploymentNotFound, GatewayError
from gateway.handling.client_credentials import ClientCredentials
from gateway.handling.json_body import ParsedBody
from gateway.handling.operations import Operation
from gateway.handling.services import GatewayServices
from gateway.handling.timing import ServerTiming
from gateway.handling.tokens import RequestTokens, completion_limit
from gateway.handling.usage import StreamTap, UsageReporter, request_usage_upstream, stream_usage_available, usage_from_body
from policies.context import Body, Context, Headers, Response
from policies.counters import Counters
from policies.errors import PolicyError, PolicyResponse
from policies.jwks import SigningKeys
from policies.semantic_cache import CachedAnswer, CacheLookup, CacheQuery, SemanticCache
from policies.services import EventLog, MetricsSink, OutgoingRequest, ValueCache
from policies.url_allow_list import UrlAllowList, require_allowed
from policies.usage import Usage

if TYPE_CHECKING:
    from gateway.stores.semantic_cache import SemanticCacheService

logger = logging.getLogger(__name__)


class Exchange:
    __slots__ = (
        "services", "deployment", "operation", "client_credentials", "timing", "usage", "usage_requested", "strip_usage",
        "upstream", "tried", "backend", "json", "tokens",
    )  # fmt: skip

    def __init__(
        self,
        services: GatewayServices,
        deployment: str | None,
        operation: Operation,
        client_credentials: ClientCredentials,
        timing: ServerTiming,
        usage: UsageReporter,
        json: ParsedBody,
    ) -> None:
        self.services = services
        #: The request body's JSON, parsed (and depth-checked) once per distinct body.
        self.json = json
        #: The prompt estimate (made once) and the estimated usage of streams that report none.
        self.tokens = RequestTokens(services.tokens, deployment, json)
        self.deployment = deployment
        self.operation = operation
        self.timing = timing
        #: Reports the request's usage to the statements that listen (token limits, metrics), once.
        self.usage = usage
        #: The request was rewritten to ask for a usage chunk; `strip_usage` if the client had not asked.
        self.usage_requested = False
        self.strip_usage = False
        #: The credential headers exactly as the client sent them; never forwarded (gateway/handling/client_credentials.py).
        self.client_credentials = client_credentials
        #: The live backend response while it is being streamed; None once buffered or closed.
        self.upstream: aiohttp.ClientResponse | None = None
        #: Backends this request was sent to, so a pool fails over to the others on retry.
        self.tried: set[str] = set()
        #: The backend of the last attempt, so a stream that breaks off later still counts against it.
        self.backend: Backend | None = None

    # --- policies.services.Services -------------------------------------------------------------------------

    @property
    def counters(self) -> Counters:
        return self.services.counters

    @property
    def metrics(self) -> MetricsSink:
        return self.services.metrics

    @property
    def semantic_cache(self) -> SemanticCache:
        return _RequestCache(self.services.semantic_cache, self.timing)

    @property
    def signing_keys(self) -> SigningKeys:
        return self.services.signing_keys

    @property
    def token_rate_window_seconds(self) -> float:
        return self.services.token_rate_window_seconds

    @property
    def allowed_urls(self) -> UrlAllowList:
        return self.services.allowed_urls

    @property
    def value_cache(self) -> ValueCache:
        return self.services.value_cache

    @property
    def event_log(self) -> EventLog:
        return self.services.event_log

    async def send(self, request: OutgoingRequest, timeout: float) -> Response:
        """A policy's own request: allowed URL only, without the client's credentials; its time in Server-Timing."""
        started = self.timing.start()
        try:
            return await self.services.outbound.send(self._outgoing(request), timeout)
        finally:
            self.timing.stop("send", started)

    def send_one_way(self, request: OutgoingRequest, timeout: float) -> None:
        self.services.outbound.send_one_way(self._outgoing(request), timeout)

    async def call_backend(self, backend_id: str, path: str, body: bytes, timeout: float) -> Response:
        started = self.timing.start()
        try:
            return await self.services.call_backend(backend_id, path, body, timeout)
        finally:
            self.timing.stop("send", started)

    def _outgoing(self, request: OutgoingRequest) -> OutgoingRequest:
        require_allowed(self.services.allowed_urls, request.url, "send-request")
        return OutgoingRequest(request.method, request.url, tuple(self.client_credentials.outbound(request.headers)), request.body)

    async def estimate_prompt_tokens(self, context: Context, ceiling: int | None = None) -> int:
        return await self.tokens.prompt(context.Request.Body.content, ceiling)

    def completion_allowance(self, context: Context) -> int:
        """The most completion tokens the request may use: its max_tokens, or the configured reservation."""
        if self.operation.id in ("embeddings_create", "createEmbedding"):
            return 0
        allowed = completion_limit(self.json.value(context.Request.Body.content))
        return self.services.default_completion_reservation if allowed is None else allowed

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        return await self.services.managed_identity_token(resource, client_id)

    async def forward(self, context: Context, timeout: float | None) -> None:
        """Send the request to the selected backend. Every failure toward the backend — its credential included —
        is a backend failure: recorded in its health, a `PolicyError` that `<retry>` retries and pools fail over."""
        self.close_upstream()
        if context.usage_listeners and not self.usage_requested:
            self._ask_for_stream_usage(context)
        base_url, backend = self._destination(context)
        request = context.Request
        headers = self.client_credentials.outbound(request.Headers)
        url = base_url + request.Url.Path + request.Url.QueryString
        if backend is None:  # a policy's base-url: checked when set, and here as the URL actually sent to
            require_allowed(self.services.allowed_urls, url, "forward-request")
        started = self.timing.start()
        try:
            if backend is not None and not any(name.lower() in ("api-key", "authorization") for name, _ in headers):
                headers.extend(await backend.auth_headers())
            timeouts = backend.timeouts if backend is not None else None
            upstream = await self.services.upstream.send(request.Method, url, headers, request.Body.content, timeout, timeouts)
            body = b"" if is_streaming(upstream) else await read_body(upstream)
        except BackendError as exc:
            timed_out = isinstance(exc, BackendTimeout)
            if backend is not None:
                backend.health.record_failure(TIMEOUT if timed_out else CONNECTION_FAILURE)
            reason = "Timeout" if timed_out else exc.code
            raise PolicyError("forward-request", reason, exc.message, exc.response()) from exc
        finally:
            elapsed = self.timing.stop("upstream", started)
        if backend is not None:
            backend.health.record_response(upstream.status, upstream.headers, elapsed)
        if is_streaming(upstream):
            self.upstream = upstream
        self.backend = backend
        context.backend_used = backend.id if backend is not None else "custom-url"
        context.Response = Response(upstream.status, upstream.reason or "", Headers(upstream_headers(upstream)), Body(body))

    # --- accounting -------------------------------------------------------------------------------------------

    async def settle_buffered(self, context: Context) -> None:
        """After the backend section: a buffered answer's usage is known, so settle before outbound runs."""
        if self.usage.wanted and self.upstream is None and context.Response is not None:
            await self.usage.report(usage_from_body(context.Response.Body.content) or Usage())

    async def stream_usage(self, context: Context, tap: StreamTap, aborted: bool) -> Usage:
        """The stream's own usage chunk when it sent one; otherwise a count of the prompt and of what was relayed."""
        if tap.usage is not None:
            return tap.usage
        usage = await self.tokens.usage(context.Request.Body.content, tap.text)
        if aborted:
            logger.info("Stream aborted after %d completion tokens; charging what was relayed.", usage.completion)
        return usage

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    # --- helpers ----------------------------------------------------------------------------------------------

    def _destination(self, context: Context) -> tuple[str, Backend | None]:
        backends = self.services.backends
        if context.base_url is not None:
            return context.base_url, backends.by_url(context.base_url)
        if context.backend_id is not None:
            target = backends.by_id(context.backend_id)
            if target is None:
                message = f"Backend {context.backend_id!r} is not configured."
                raise PolicyError("forward-request", "BackendNotFound", message, PolicyResponse.error(500, message))
        else:
            target = backends.for_deployment(self.deployment) if self.deployment else backends.default
            if target is None:
                raise PolicyError("forward-request", "DeploymentNotFound", DeploymentNotFound.message, DeploymentNotFound().response())
        try:
            backend = target.select(self.deployment, self.tried)
        except GatewayError as exc:  # breaker open, every pool member out (503), or no member serves the deployment
            raise PolicyError("forward-request", exc.code, exc.message, exc.response()) from exc
        self.tried.add(backend.id)
        return backend.base_url, backend

    def _ask_for_stream_usage(self, context: Context) -> None:
        """A policy needs this request's usage: make a streaming request report it (once, even across retries)."""
        self.usage_requested = True
        if not stream_usage_available(self.operation.id, context.Request.Url.Query.GetValueOrDefault("api-version")):
            return
        payload = self.json.value(context.Request.Body.content)
        if request_usage_upstream(payload):
            body = orjson.dumps(payload)
            context.Request.Body.replace(body)
            self.json.remember(body, payload)
            self.strip_usage = True


class _RequestCache:
    """The semantic cache as one request's policies see it: lookups book their time in its Server-Timing."""

    __slots__ = ("_service", "_timing")

    def __init__(self, service: SemanticCacheService, timing: ServerTiming) -> None:
        self._service = service
        self._timing = timing

    @property
    def scope(self) -> str:
        return self._service.scope

    async def lookup(self, context: Context, query: CacheQuery) -> CacheLookup:
        return await self._service.lookup(query, self._timing.add)

    def store(self, ticket: object, answer: CachedAnswer, ttl_seconds: float) -> None:
        self._service.store(ticket, answer, ttl_seconds)
