"""The gateway's side of `policies.services.Services`: forwarding, managed identity tokens, counters, keys."""

from __future__ import annotations

import time

import aiohttp

from gateway.backends import Backend, BackendRegistry
from gateway.credentials import TokenProvider, managed_identity_credential
from gateway.errors import BackendError, BackendTimeout, DeploymentNotFound, GatewayError
from gateway.timing import ServerTiming
from gateway.proxy import CLIENT_CREDENTIAL_HEADERS, UpstreamClient, forwardable, is_streaming, read_body, upstream_headers
from policies.context import Body, Context, Headers, Response
from policies.counters import Counters
from policies.errors import PolicyError, PolicyResponse
from policies.jwks import SigningKeys


class RequestState:
    """What the gateway knows about a request beyond the policy context: originals to protect, the live body."""

    __slots__ = ("deployment", "client_credentials", "timing", "upstream")

    def __init__(self, deployment: str | None, client_credentials: dict[str, str], timing: ServerTiming) -> None:
        self.deployment = deployment
        self.timing = timing
        #: The credential headers exactly as the client sent them; forwarded only if a policy replaced them.
        self.client_credentials = client_credentials
        #: The live backend response while it is being streamed; None once buffered or closed.
        self.upstream: aiohttp.ClientResponse | None = None

    def close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


class GatewayServices:
    def __init__(self, backends: BackendRegistry, upstream: UpstreamClient, counters: Counters, signing_keys: SigningKeys) -> None:
        self._backends = backends
        self._upstream = upstream
        self.counters = counters
        self.signing_keys = signing_keys
        self._token_providers: dict[tuple[str, str | None], TokenProvider] = {}

    async def forward(self, context: Context, timeout: float | None) -> None:
        state: RequestState = context.gateway_state
        state.close_upstream()
        base_url, backend = self._destination(context, state)
        request = context.Request
        headers = _outbound_headers(request.Headers, state.client_credentials)
        if backend is not None and not any(name.lower() in ("api-key", "authorization") for name, _ in headers):
            headers.extend(await backend.auth_headers())
        url = base_url + request.Url.Path + request.Url.QueryString
        started = time.perf_counter()
        try:
            upstream = await self._upstream.send(request.Method, url, headers, request.Body.content, timeout)
            body = b"" if is_streaming(upstream) else await read_body(upstream)
        except BackendError as exc:
            reason = "Timeout" if isinstance(exc, BackendTimeout) else "BackendConnectionFailure"
            raise PolicyError("forward-request", reason, exc.message, _error_response(exc)) from exc
        finally:
            state.timing.add("upstream", time.perf_counter() - started)
        if is_streaming(upstream):
            state.upstream = upstream
        context.Response = Response(upstream.status, upstream.reason or "", Headers(upstream_headers(upstream)), Body(body))

    def _destination(self, context: Context, state: RequestState) -> tuple[str, Backend | None]:
        if context.base_url is not None:
            return context.base_url, self._backends.by_url(context.base_url)
        if context.backend_id is not None:
            backend = self._backends.by_id(context.backend_id)
            if backend is None:
                message = f"Backend {context.backend_id!r} is not configured."
                raise PolicyError("forward-request", "BackendNotFound", message, PolicyResponse.error(500, message))
        else:
            backend = self._backends.for_deployment(state.deployment) if state.deployment else self._backends.default
            if backend is None:
                raise PolicyError("forward-request", "DeploymentNotFound", DeploymentNotFound.message, _error_response(DeploymentNotFound()))
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

