"""The request handler both hosts share: route, authenticate, run the policy pipeline, relay the answer.

`Gateway.handle` takes a Starlette `Request` and returns a Starlette `Response`; the Azure Functions HTTP
streaming extension and the local uvicorn host both speak exactly that, so there is one code path.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.handling import operations as routes
from gateway.backends.registry import BackendRegistry
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, ResourceNotFound
from gateway.backends.health_sync import HealthSync
from gateway.stores.policies import PolicyManager, PolicyRepository
from gateway.stores.metrics import ROLLUP_TABLE, AppInsightsExporter, MetricsRecorder
from gateway.stores.rollups import RollupCompactor
from gateway.backends.proxy import CLIENT_CREDENTIAL_HEADERS, RelayResponse, UpstreamClient, raw_headers
from gateway.stores.semantic_cache import SemanticCacheService
from gateway.handling.services import GatewayServices, RequestState
from gateway.stores.counters import SharedCounters
from gateway.handling import json_body
from gateway.handling.tokens import RequestTokens, TokenCounter
from gateway.handling.usage import StreamTap, UsageReporter, asks_for_usage, has_usage_option, usage_from_body
from gateway.config.settings import Settings
from gateway.stores.tables import TableStore
from gateway.stores.subscriptions import KeyHasher, Subscription, SubscriptionAuthenticator, SubscriptionRepository
from gateway.handling.timing import ServerTiming
from policies import context as ctx
from policies.counters import LocalCounters
from policies.errors import PolicyResponse
from policies.jwks import SigningKeys
from policies.statement import Loader
from policies.statements.cors import Cors
from policies.usage import Usage

logger = logging.getLogger(__name__)

#: Query parameters that carry a subscription key: consumed here, never visible to policies or the backend.
_KEY_QUERY_PARAMETERS = frozenset({"subscription-key", "api-key"})
#: Audio uploads may be 25 MB; leave room for the multipart framing.
MAX_BODY_BYTES = 26 * 1024 * 1024
_API_NAMES = {routes.VERSIONED_API: "Azure OpenAI", routes.V1_API: "Azure OpenAI v1"}


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = TableStore(settings.storage_connection.reveal(), settings.table_prefix)
        self.backends = BackendRegistry(settings.backends, settings.upstream_timeouts, settings.predictive_routing)
        self.health = HealthSync(self.store, self.backends.backends, settings.health_sync_seconds, settings.gateway_id)
        self.hasher = KeyHasher(settings.key_pepper.reveal())
        self.upstream = UpstreamClient(settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self.tokens = TokenCounter(settings.deployment_models, settings.default_encoding)
        self.services = GatewayServices(
            self.backends,
            self.upstream,
            LocalCounters(),  # replaced by the shared, lease-based counters on start
            SigningKeys(settings.openid_keys),
            settings.default_completion_reservation,
            settings.token_rate_window_seconds,
        )
        self.loader = Loader(
            named_values=settings.named_values, backend_ids=self.backends.ids, embeddings_backend_ids=self.backends.embeddings_ids
        )
        self.counters: SharedCounters | None = None
        self.metrics: MetricsRecorder | None = None
        self.semantic_cache: SemanticCacheService | None = None
        self._authenticator: SubscriptionAuthenticator | None = None
        self._policies: PolicyManager | None = None
        self._start_lock = asyncio.Lock()

    async def subscriptions(self) -> SubscriptionRepository:
        return SubscriptionRepository(await self.store.table("subscriptions"), self.hasher)

    async def policy_repository(self) -> PolicyRepository:
        return PolicyRepository(await self.store.table("policies"))

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
        if request.method == "OPTIONS":
            return await self._preflight(request, path, timing)
        route = routes.match(request.method, path)
        if route is None:
            raise ResourceNotFound()
        operation = route.operation
        if operation.versioned and not request.query_params.get("api-version"):
            raise ResourceNotFound()
        authenticator, policies = self._authenticator, self._policies
        if authenticator is None or policies is None:
            authenticator, policies = await self._start()

        key = _subscription_key(request)
        subscription = await authenticator.authenticate(key, operation.api)
        timing.add("auth", timing.elapsed())

        body = await _read_body(request)
        payload = await self._parse_body(request, body)
        deployment = _model_from(payload) if operation.model_in_body else route.params.get("deployment-id")
        if operation.id == "listModels" and not self.backends.serves_any_deployment:
            return self._list_models_locally()

        context = self._context(request, route, subscription, key or "", body, payload, deployment, timing)
        pipeline = policies.current.pipeline(subscription.product, operation.api, operation.id)
        result = await pipeline.execute(context)
        return await self._respond(context, result)

    async def _parse_body(self, request: Request, body: bytes) -> object:
        """The body's JSON, depth-checked once for every later reader (400 if invalid); None if empty or multipart."""
        if not body or request.headers.get("content-type", "").lower().startswith("multipart/"):
            return None
        return await json_body.load(body, self.tokens.offload)

    async def _preflight(self, request: Request, path: str, timing: ServerTiming) -> Response:
        """A CORS preflight, answered by the operation's `<cors>` policy before any key check (browsers send none).

        The subscription is unknown here, so `<cors>` must sit at global, API or operation scope.
        """
        route = routes.match(request.headers.get("access-control-request-method", "").upper(), path)
        if route is None:
            raise ResourceNotFound()
        _, policies = await self._start()
        pipeline = policies.current.pipeline(None, route.operation.api, route.operation.id)
        cors = next((s for s in pipeline.inbound if isinstance(s, Cors)), None)
        if cors is None:
            return PolicyResponse.error(403, "CORS is not enabled for this API (add a <cors> policy).").to_starlette()
        context = self._context(request, route, None, "", b"", None, None, timing)
        return cors.preflight(context).to_starlette()

    def _context(
        self,
        request: Request,
        route: routes.RouteMatch,
        subscription: Subscription | None,
        key: str,
        body: bytes,
        payload: object,
        deployment: str | None,
        timing: ServerTiming,
    ) -> ctx.Context:
        operation = route.operation
        header_items = request.headers.items()
        credentials = {name: value for name, value in header_items if name in CLIENT_CREDENTIAL_HEADERS}
        query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k not in _KEY_QUERY_PARAMETERS]
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        matched = dict(route.params)
        if deployment is not None:
            matched["deployment-id"] = deployment
        policy_request = ctx.Request(
            request.method,
            self._client_ip(request),
            ctx.Headers(header_items),
            ctx.Url(url.scheme, url.hostname or "", port, url.path, ctx.QueryParameters(query)),
            ctx.Url(url.scheme, url.hostname or "", port, url.path, ctx.QueryParameters(query)),
            ctx.ReadOnlyMap(matched),
            ctx.Body(body),
        )
        context = ctx.Context(
            policy_request,
            api=ctx.Named(operation.api, _API_NAMES[operation.api]),
            operation=ctx.Operation(operation.id, operation.method, "/" + operation.template),
            deployment=ctx.Deployment(self.settings.region, self.settings.gateway_id, self.settings.gateway_id),
            request_id=str(uuid.uuid4()),
            subscription=ctx.Subscription(subscription.id, subscription.name, key, subscription.created) if subscription else None,
            product=ctx.Named(subscription.product, subscription.product) if subscription and subscription.product else None,
            services=self.services,
        )
        parsed = json_body.ParsedBody(body, payload)
        usage = UsageReporter(context.usage_listeners)
        context.gateway_state = RequestState(
            deployment, operation, credentials, timing, usage, parsed, RequestTokens(self.tokens, deployment, parsed)
        )
        context.after_backend.append(lambda: _report_buffered_usage(context))
        return context

    def _client_ip(self, request: Request) -> str:
        """The caller's IP; behind the Functions front end, the first X-Forwarded-For entry (port removed)."""
        forwarded = request.headers.get("x-forwarded-for") if self.settings.trust_forwarded_for else None
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()
            return first.rsplit(":", 1)[0] if first.count(":") == 1 else first
        return request.client.host if request.client else ""

    async def _respond(self, context: ctx.Context, result: PolicyResponse | None) -> Response:
        state: RequestState = context.gateway_state
        if result is not None:
            state.close_upstream()
            # Refused, failed or answered by policy: nothing used upstream (a cache hit reports what it saved).
            await state.usage.report(context.cache_hit_usage or Usage())
            if self.metrics is not None:  # 429/403 refusals, for the dashboard
                self.metrics.record_refusal(result.status, context.Subscription.Id if context.Subscription else "", state.deployment or "")
            response = result.to_starlette()
            response.raw_headers.extend(raw_headers(context.response_headers))
            return response
        answer = context.Response
        assert answer is not None
        headers = raw_headers([*answer.Headers.items(), *context.response_headers])
        if state.upstream is not None:
            upstream, state.upstream = state.upstream, None
            tap = None
            # The client asked for a usage chunk the gateway did not request for itself: make sure one arrives.
            add_usage = not state.strip_usage and has_usage_option(state.operation.id) and asks_for_usage(state.json.latest)
            if state.usage.wanted or state.strip_usage or context.body_listeners or add_usage:
                tap = StreamTap(state.strip_usage, state.usage.wanted or add_usage, bool(context.body_listeners), add_usage)

            async def estimate() -> Usage:
                assert tap is not None
                tap.usage = await self._stream_usage(context, tap, False)
                return tap.usage

            async def on_end(aborted: bool) -> None:
                assert tap is not None
                await state.usage.report(await self._stream_usage(context, tap, aborted))
                assembled = tap.assembled() if not aborted else None
                if assembled is not None:
                    await _tell_body_listeners(context, answer.StatusCode, assembled)

            on_break = state.backend.health.record_failure if state.backend is not None else None
            return RelayResponse(
                upstream,
                answer.StatusCode,
                headers,
                self.settings.sse_keepalive_seconds,
                tap,
                on_end if tap is not None else None,
                on_break,
                estimate if tap is not None else None,
            )
        await _tell_body_listeners(context, answer.StatusCode, answer.Body.content)
        response = Response(answer.Body.content, status_code=answer.StatusCode)
        response.raw_headers.extend(headers)
        return response

    async def _stream_usage(self, context: ctx.Context, tap: StreamTap, aborted: bool) -> Usage:
        """The stream's own usage chunk when it sent one; otherwise a count of the prompt and of what was relayed."""
        if tap.usage is not None:
            return tap.usage
        usage = await context.gateway_state.tokens.usage(context.Request.Body.content, tap.text)
        if aborted:
            logger.info("Stream aborted after %d completion tokens; charging what was relayed.", usage.completion)
        return usage

    def _list_models_locally(self) -> Response:
        models = [{"id": name, "object": "model", "owned_by": "gateway"} for name in self.backends.known_deployments()]
        return Response(orjson.dumps({"object": "list", "data": models}), media_type="application/json")

    async def start(self) -> None:
        """Connect, load policies and tokenizers now rather than on the first request."""
        await self._start()
        await asyncio.get_running_loop().run_in_executor(None, self.tokens.warm_up)

    async def _start(self) -> tuple[SubscriptionAuthenticator, PolicyManager]:
        """Connect to storage and load policies once per process, before the first request is served."""
        async with self._start_lock:
            if self._authenticator is None or self._policies is None:
                self.services.counters = self.counters = SharedCounters(await self.store.table("counters"), self.settings.lease_fraction)
                exporter = AppInsightsExporter(self.settings.appinsights_connection.reveal()) if self.settings.appinsights_connection else None
                rollups = await self.store.table(ROLLUP_TABLE)
                self.metrics = MetricsRecorder(
                    await self.store.table("metrics"), self.settings.metrics_flush_seconds, exporter, rollups=rollups, compactor=RollupCompactor(rollups)
                )
                self.metrics.start()
                self.services.metrics = self.metrics
                cache = self.settings.semantic_cache
                cache_store = TableStore(cache.connection.reveal(), self.settings.table_prefix) if cache.connection else self.store
                self.services.semantic_cache = self.semantic_cache = SemanticCacheService(
                    cache_store, self.backends, self.upstream, cache, close_store=cache_store is not self.store
                )
                policies = PolicyManager(await self.policy_repository(), self.loader, self.settings.policy_poll_seconds)
                await policies.start()
                await self.health.start()
                self._policies = policies
                self._authenticator = SubscriptionAuthenticator(
                    await self.subscriptions(), self.hasher, self.settings.products, self.settings.subscription_cache_seconds
                )
        return self._authenticator, self._policies

    async def clean_semantic_cache(self) -> int:
        """Delete expired semantic-cache entries; returns how many (the Functions timer trigger calls this)."""
        await self._start()
        assert self.semantic_cache is not None
        return await self.semantic_cache.cleanup()

    async def close(self) -> None:
        if self._policies is not None:
            await self._policies.close()
        if self.counters is not None:
            await self.counters.release()
        if self.metrics is not None:
            await self.metrics.close()
        if self.semantic_cache is not None:
            await self.semantic_cache.close()
        await self.health.close()
        await self.upstream.close()
        await self.services.close()
        await self.backends.close()
        await self.store.close()
        self.tokens.close()


async def _report_buffered_usage(context: ctx.Context) -> None:
    """After the backend section: a buffered answer's usage is known, so settle before outbound runs."""
    state: RequestState = context.gateway_state
    if state.usage.wanted and state.upstream is None and context.Response is not None:
        await state.usage.report(usage_from_body(context.Response.Body.content) or Usage())


async def _tell_body_listeners(context: ctx.Context, status: int, body: bytes) -> None:
    for listener in context.body_listeners:
        try:
            await listener(status, body)
        except Exception:
            logger.exception("A response body listener failed; the response itself was not affected.")


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


def _model_from(payload: object) -> str:
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.")
    return model
