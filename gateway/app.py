"""The request handler both hosts share: route, authenticate, pick a backend, forward, relay.

`Gateway.handle` takes a Starlette `Request` and returns a Starlette `Response`; the Azure Functions HTTP
streaming extension and the local uvicorn host both speak exactly that, so there is one code path.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import routes
from gateway.backends import Backend, BackendRegistry
from gateway.errors import BadRequest, DeploymentNotFound, GatewayError, PayloadTooLarge, ResourceNotFound
from gateway.proxy import RelayResponse, UpstreamClient, buffered_response, forwarded_headers, is_streaming
from gateway.settings import Settings
from gateway.storage import TableStore
from gateway.subscriptions import KeyHasher, SubscriptionAuthenticator, SubscriptionRepository
from gateway.timing import ServerTiming

logger = logging.getLogger(__name__)

#: Query parameters that carry a subscription key: consumed here, never forwarded.
_KEY_QUERY_PARAMETERS = frozenset({"subscription-key", "api-key"})
#: Audio uploads may be 25 MB; leave room for the multipart framing.
MAX_BODY_BYTES = 26 * 1024 * 1024


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = TableStore(settings.storage_connection.reveal(), settings.table_prefix)
        self.backends = BackendRegistry(settings.backends)
        self.hasher = KeyHasher(settings.key_pepper.reveal())
        self.upstream = UpstreamClient(settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self._authenticator: SubscriptionAuthenticator | None = None

    async def subscriptions(self) -> SubscriptionRepository:
        return SubscriptionRepository(await self.store.table("subscriptions"), self.hasher)

    async def handle(self, request: Request) -> Response:
        timing = ServerTiming()
        try:
            response = await self._handle(request, timing)
        except GatewayError as exc:
            response = exc.to_response()
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, request.url.path)
            response = GatewayError().to_response()
        response.raw_headers.append(timing.header())
        return response

    async def _handle(self, request: Request, timing: ServerTiming) -> Response:
        path = request.path_params.get("path", "")
        route = routes.match(request.method, path)
        if route is None:
            raise ResourceNotFound()
        operation = route.operation
        if operation.versioned and not request.query_params.get("api-version"):
            raise ResourceNotFound()

        authenticator = self._authenticator or await self._create_authenticator()
        await authenticator.authenticate(_subscription_key(request), operation.api)
        timing.mark("auth")

        body = await _read_body(request)
        backend = self._backend_for(route, body)
        if backend is None:
            return self._list_models_locally()

        url = f"{backend.base_url}/openai/{path}{_forwarded_query(request)}"
        headers = forwarded_headers(request.headers.items())
        headers.extend(await backend.auth_headers())
        upstream = await self.upstream.send(request.method, url, headers, body)
        if is_streaming(upstream):
            timing.mark("upstream")
            return RelayResponse(upstream, [], self.settings.sse_keepalive_seconds)
        response = await buffered_response(upstream, [])
        timing.mark("upstream")
        return response

    def _backend_for(self, route: routes.RouteMatch, body: bytes) -> Backend | None:
        """The backend for this request; None only for `listModels` when no backend serves every deployment."""
        operation = route.operation
        if operation.model_in_body:
            deployment = _model_from_body(body)
        else:
            deployment = route.params.get("deployment-id")
        if deployment is not None:
            backend = self.backends.for_deployment(deployment)
        else:
            backend = self.backends.fallback
            if backend is None and operation.id == "listModels":
                return None
            backend = backend or next(iter(self.backends.backends), None)
        if backend is None:
            raise DeploymentNotFound()
        return backend

    def _list_models_locally(self) -> Response:
        models = [{"id": name, "object": "model", "owned_by": "gateway"} for name in self.backends.known_deployments()]
        return Response(orjson.dumps({"object": "list", "data": models}), media_type="application/json")

    async def _create_authenticator(self) -> SubscriptionAuthenticator:
        self._authenticator = SubscriptionAuthenticator(
            await self.subscriptions(), self.hasher, self.settings.products, self.settings.subscription_cache_seconds
        )
        return self._authenticator

    async def close(self) -> None:
        await self.upstream.close()
        await self.backends.close()
        await self.store.close()


def _subscription_key(request: Request) -> str | None:
    """The key from `api-key`, `Ocp-Apim-Subscription-Key`, `Authorization: Bearer`, or the query, in that order."""
    headers = request.headers
    key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
    if key:
        return key
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    query = request.query_params
    return query.get("subscription-key") or query.get("api-key")


def _forwarded_query(request: Request) -> str:
    raw = request.url.query
    if not raw:
        return ""
    if "subscription-key" not in raw and "api-key" not in raw:
        return "?" + raw
    kept = [(k, v) for k, v in parse_qsl(raw, keep_blank_values=True) if k not in _KEY_QUERY_PARAMETERS]
    return "?" + urlencode(kept) if kept else ""


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _model_from_body(body: bytes) -> str:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body must be a JSON object.") from None
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.")
    return model
