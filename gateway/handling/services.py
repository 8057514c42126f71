"""The gateway's side of `policies.services.Services`: forwarding, managed identity tokens, counters, keys."""

from __future__ import annotations

import time

import aiohttp
import orjson

from gateway.backends.registry import Backend, BackendRegistry
from gateway.backends.credentials import TokenProvider, managed_identity_credential
from gateway.errors import BackendError, BackendTimeout, DeploymentNotFound, GatewayError
from gateway.backends.health import CONNECTION_FAILURE, TIMEOUT
from gateway.handling.operations import Operation
from gateway.handling.timing import ServerTiming
from gateway.handling.json_body import ParsedBody
from gateway.handling.tokens import RequestTokens, completion_limit
from gateway.handling.usage import UsageReporter, request_usage_upstream, stream_usage_available
from gateway.backends.proxy import CLIENT_CREDENTIAL_HEADERS, UpstreamClient, forwardable, is_streaming, read_body, upstream_headers
from policies.context import Body, Context, Headers, Response
from policies.counters import Counters
from policies.errors import PolicyError, PolicyResponse
from policies.jwks import SigningKeys
from policies.semantic_cache import SemanticCache
from policies.services import MetricsSink


class RequestState:
    """What the gateway knows about a request beyond the policy context: originals to protect, the live body."""

    __slots__ = (
        "deployment", "operation", "client_credentials", "timing", "upstream", "usage", "usage_requested", "strip_usage", "tried",
        "backend", "json", "tokens",
    )  # fmt: skip

    def __init__(
        self,
        deployment: str | None,
        operation: Operation,
        client_credentials: dict[str, str],
        timing: ServerTiming,
        usage: UsageReporter,
        json: ParsedBody,
        tokens: RequestTokens,
    ) -> None:
        self.deployment = deployment
        self.operation = operation
        self.timing = timing
        #: The request body's JSON, parsed (and depth-checked) once per distinct body.
        self.json = json
        #: The prompt estimate (made once) and the estimated usage of streams that report none.
        self.tokens = tokens
        #: Reports the request's usage to the statements that listen (token limits, metrics), once.
        self.usage = usage
        #: The request was rewritten to ask for a usage chunk; `strip_usage` if the client had not asked.
        self.usage_requested = False
        self.strip_usage = False
        #: The credential headers exactly as the client sent them; forwarded only if a policy replaced them.
        self.client_credentials = client_credentials
        #: The live backend response while it is being streamed; None once buffered or closed.
        self.upstream: aiohttp.ClientResponse | None = None
        #: Backends this request was sent to, so a pool fails over to the others on retry.
        self.tried: set[str] = set()
        #: The backend of the last attempt, so a stream that breaks off later still counts against it.
        self.backend: Backend | None = None

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


class GatewayServices:
    def __init__(
        self,
        backends: BackendRegistry,
        upstream: UpstreamClient,
        counters: Counters,
        signing_keys: SigningKeys,
        default_completion_reservation: int,
        token_rate_window_seconds: float = 60.0,
    ) -> None:
        self._backends = backends
        self._upstream = upstream
        self.counters = counters
        #: Set on start, once the metrics table is reachable.
        self.metrics: MetricsSink | None = None
        #: Set on start too (semantic-cache lookups and stores).
        self.semantic_cache: SemanticCache | None = None
        self.signing_keys = signing_keys
        self._default_completion_reservation = default_completion_reservation
        self.token_rate_window_seconds = token_rate_window_seconds
        self._token_providers: dict[tuple[str, str | None], TokenProvider] = {}

    async def estimate_prompt_tokens(self, context: Context, ceiling: int | None = None) -> int:
        state: RequestState = context.gateway_state
        return await state.tokens.prompt(context.Request.Body.content, ceiling)

    def completion_allowance(self, context: Context) -> int:
        """The most completion tokens the request may use: its max_tokens, or the configured reservation."""
        state: RequestState = context.gateway_state
        if state.operation.id in ("embeddings_create", "createEmbedding"):
            return 0
        allowed = completion_limit(state.json.value(context.Request.Body.content))
        return self._default_completion_reservation if allowed is None else allowed

    async def forward(self, context: Context, timeout: float | None) -> None:
        state: RequestState = context.gateway_state
        state.close_upstream()
        if context.usage_listeners and not state.usage_requested:
            _ask_for_stream_usage(context, state)
        base_url, backend = self._destination(context, state)
        request = context.Request
        headers = _outbound_headers(request.Headers, state.client_credentials)
        if backend is not None and not any(name.lower() in ("api-key", "authorization") for name, _ in headers):
            headers.extend(await backend.auth_headers())
        url = base_url + request.Url.Path + request.Url.QueryString
        started = time.perf_counter()
        try:
            timeouts = backend.timeouts if backend is not None else None
            upstream = await self._upstream.send(request.Method, url, headers, request.Body.content, timeout, timeouts)
            body = b"" if is_streaming(upstream) else await read_body(upstream)
        except BackendError as exc:
            timed_out = isinstance(exc, BackendTimeout)
            if backend is not None:
                backend.health.record_failure(TIMEOUT if timed_out else CONNECTION_FAILURE)
            reason = "Timeout" if timed_out else "BackendConnectionFailure"
            raise PolicyError("forward-request", reason, exc.message, _error_response(exc)) from exc
        finally:
            elapsed = time.perf_counter() - started
            state.timing.add("upstream", elapsed)
        if backend is not None:
            backend.health.record_response(upstream.status, upstream.headers, elapsed)
        if is_streaming(upstream):
            state.upstream = upstream
        state.backend = backend
        context.backend_used = backend.id if backend is not None else "custom-url"
        context.Response = Response(upstream.status, upstream.reason or "", Headers(upstream_headers(upstream)), Body(body))

    def _destination(self, context: Context, state: RequestState) -> tuple[str, Backend | None]:
        if context.base_url is not None:
            return context.base_url, self._backends.by_url(context.base_url)
        if context.backend_id is not None:
            target = self._backends.by_id(context.backend_id)
            if target is None:
                message = f"Backend {context.backend_id!r} is not configured."
                raise PolicyError("forward-request", "BackendNotFound", message, PolicyResponse.error(500, message))
        else:
            target = self._backends.for_deployment(state.deployment) if state.deployment else self._backends.default
            if target is None:
                raise PolicyError("forward-request", "DeploymentNotFound", DeploymentNotFound.message, _error_response(DeploymentNotFound()))
        try:
            backend = target.select(state.deployment, state.tried)
        except GatewayError as exc:  # breaker open, every pool member out (503), or no member serves the deployment
            raise PolicyError("forward-request", exc.code, exc.message, _error_response(exc)) from exc
        state.tried.add(backend.id)
        return backend.base_url, backend

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        key = (resource, client_id)
        provider = self._token_providers.get(key)
        if provider is None:
            scope = resource.rstrip("/") + "/.default"
            provider = self._token_providers[key] = TokenProvider(managed_identity_credential(client_id), scope)
        return await provider.token()

    async def close(self) -> None:
        for provider in self._token_providers.values():
            await provider.close()


def _ask_for_stream_usage(context: Context, state: RequestState) -> None:
    """A policy needs this request's usage: make a streaming request report it (once, even across retries)."""
    state.usage_requested = True
    if not stream_usage_available(state.operation.id, context.Request.Url.Query.GetValueOrDefault("api-version")):
        return
    payload = state.json.value(context.Request.Body.content)
    if request_usage_upstream(payload):
        body = orjson.dumps(payload)
        context.Request.Body.replace(body)
        state.json.remember(body, payload)
        state.strip_usage = True


def _outbound_headers(headers: Headers, client_credentials: dict[str, str]) -> list[tuple[str, str]]:
    """Request headers for the backend: hop-by-hop ones dropped, client credentials dropped unless a policy set them."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if not forwardable(name):
            continue
        lower = name.lower()
        if lower in CLIENT_CREDENTIAL_HEADERS and client_credentials.get(lower) == value:
            continue
        out.append((name, value))
    return out


def _error_response(error: GatewayError) -> PolicyResponse:
    return PolicyResponse.error(error.status, error.message, error.headers, code=error.code)

