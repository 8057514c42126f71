"""The request handler both hosts share: route, authenticate, run the policy pipeline, relay the answer.

`Gateway.handle` takes a Starlette `Request` and returns a Starlette `Response`; the Azure Functions HTTP
streaming extension and the local uvicorn host both speak exactly that, so there is one code path.

Everything the gateway needs is built in the constructor, before any request, and never waits for storage:
tables are created on first use, and background work (policy polling, metrics flushes, lease renewals, health
sync) starts with `start()`, which the first request calls if the host did not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.backends.health_sync import HealthSync
from gateway.backends.outbound import OutboundClient
from gateway.backends.proxy import RelayResponse, UpstreamClient, raw_headers
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import Settings
from gateway.errors import GatewayError, ResourceNotFound, answer_for
from gateway.handling import client_credentials, collector, forwarded, json_body, operations, response_ids
from gateway.handling.auth import SubscriptionAuthenticator
from gateway.handling.context_parts import api_contexts, authority, release, tell_body_listeners, user_of
from gateway.handling.exchange import Exchange
from gateway.handling.policy_loader import policy_loader
from gateway.handling.services import GatewayServices
from gateway.handling.timing import ServerTiming
from gateway.handling.tokens import TokenCounter
from gateway.handling.usage import StreamTap, UsageReporter, asks_for_usage, has_usage_option
from gateway.stores.appinsights import AppInsightsExporter
from gateway.stores.azure_tables import AzureTables
from gateway.stores.counters import SharedCounters
from gateway.stores.custom_metrics import TABLE as CUSTOM_METRICS_TABLE
from gateway.stores.event_log import EventLogger
from gateway.stores.metric_rows import ROLLUP_TABLE
from gateway.stores.metrics import MetricsRecorder
from gateway.stores.policies import PolicyManager, PolicyRepository
from gateway.stores.response_owners import TABLE as RESPONSE_OWNERS_TABLE
from gateway.stores.response_owners import ResponseOwners
from gateway.stores.rollups import RollupCompactor
from gateway.stores.subscriptions import KeyHasher, Subscription, SubscriptionRepository
from gateway.stores.tables import Tables
from gateway.stores.value_cache import ValueCacheStore
from policies import context as ctx
from policies.errors import PolicyResponse
from policies.statements.cors import Cors
from policies.usage import Usage, UsageListener

if TYPE_CHECKING:
    from gateway.stores.semantic_cache import SemanticCacheService

logger = logging.getLogger(__name__)

#: Audio uploads may be 25 MB; leave room for the multipart framing.
MAX_BODY_BYTES = 26 * 1024 * 1024
#: After start-up, the tokenizer's encodings load and the heap is frozen this much later (see `_settle`).
SETTLE_AFTER_SECONDS = 1.0


class Gateway:
    def __init__(self, settings: Settings, tables: Tables | None = None) -> None:
        self.settings = settings
        self.store: Tables = tables or AzureTables(settings.storage_connection.reveal(), settings.table_prefix)
        self.backends = BackendRegistry(settings.backends, settings.upstream_timeouts, settings.predictive_routing)
        self.apis = api_contexts(self.backends)
        self.health = HealthSync(self.store, self.backends.backends, settings.health_sync_seconds, settings.gateway_id)
        self.hasher = KeyHasher(settings.key_pepper.reveal())
        self.upstream = UpstreamClient(settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self.tokens = TokenCounter(settings.deployment_models, settings.default_encoding)
        self.counters = SharedCounters(
            self.store.table("counters"), settings.lease_fraction, settings.limits_on_storage_outage == "refuse", settings.lease_seconds
        )
        rollups = self.store.table(ROLLUP_TABLE)
        exporter = AppInsightsExporter(settings.appinsights_connection.reveal()) if settings.appinsights_connection else None
        self.metrics = MetricsRecorder(
            self.store.table("metrics"), settings.metrics_flush_seconds, exporter, rollups=rollups, compactor=RollupCompactor(rollups),
            custom=self.store.table(CUSTOM_METRICS_TABLE),
        )  # fmt: skip
        self.value_cache = ValueCacheStore(self.store)
        self.event_log = EventLogger(settings.loggers)
        self.services = GatewayServices(
            self.backends, self.upstream, self.counters, self.metrics, self._semantic_cache, settings.openid_keys,
            self.tokens, settings.default_completion_reservation, settings.url_allow_list(), self.value_cache, self.event_log,
            OutboundClient(self.upstream), settings.token_rate_window_seconds,
        )  # fmt: skip
        if settings.openid_keys:
            _ = self.services.signing_keys  # parse the overrides now: a bad GATEWAY_OPENID_KEYS fails at start-up
        self.loader = policy_loader(settings, self.backends)
        self.subscriptions = SubscriptionRepository(self.store.table("subscriptions"), self.hasher)
        self.response_owners = ResponseOwners(self.store.table(RESPONSE_OWNERS_TABLE))
        self.policy_repository = PolicyRepository(self.store.table("policies"))
        self.policies = PolicyManager(self.policy_repository, self.loader, settings.policy_poll_seconds)
        self.authenticator = SubscriptionAuthenticator(
            self.subscriptions, self.hasher, settings.products, settings.subscription_cache_seconds, settings.subscription_stale_seconds
        )
        self._started = False
        self._start_lock = asyncio.Lock()
        self._settling: asyncio.Task[None] | None = None
        collector.count_pauses()

    @property
    def semantic_cache(self) -> SemanticCacheService:
        return self.services.semantic_cache

    def _semantic_cache(self) -> SemanticCacheService:
        """Built the first time a policy uses the semantic cache: numpy and the index load then."""
        from gateway.stores.semantic_cache import SemanticCacheService

        cache = self.settings.semantic_cache
        store = AzureTables(cache.connection.reveal(), self.settings.table_prefix) if cache.connection else self.store
        return SemanticCacheService(store, self.backends, self.upstream, cache, close_store=store is not self.store)

    async def handle(self, request: Request) -> Response:
        timing = ServerTiming()
        try:
            response = await self._handle(request, timing)
        except Exception as exc:
            response = answer_for(exc, f"{request.method} {request.url.path}")
        response.raw_headers.append(timing.header())
        return response

    async def _handle(self, request: Request, timing: ServerTiming) -> Response:
        path = request.path_params.get("path", "")
        if request.method == "OPTIONS":
            return await self._preflight(request, path, timing)
        route = operations.match(request.method, path)
        if route is None:
            raise ResourceNotFound()
        operation = route.operation
        if operation.versioned and not request.query_params.get("api-version"):
            raise ResourceNotFound()
        if not self._started:
            await self.start()

        key = client_credentials.subscription_key(request)
        subscription = await self.authenticator.authenticate(key, operation.api)
        timing.add("auth", timing.elapsed())

        body = await json_body.read(request, MAX_BODY_BYTES)
        payload = await self._parse_body(request, body)
        deployment = json_body.model_from(payload) if operation.model_in_body else route.params.get("deployment-id")
        if operation.id == "listModels" and not self.backends.serves_any_deployment:
            return self._list_models_locally()
        await response_ids.check_access(self.response_owners, operation.id, route.params, payload, subscription.id)

        pipeline = self.policies.current.pipeline(subscription.product, operation.api, operation.id)
        context, exchange = self._context(request, route, subscription, key or "", body, payload, deployment, timing)
        response: Response | None = None
        try:
            result = await pipeline.execute(context)
            response = await self._respond(context, exchange, result)
            return response
        except BaseException:  # an error, or the client left: a live backend response must not stay open
            exchange.close_upstream()
            raise
        finally:
            if not isinstance(response, RelayResponse):  # a stream is done only when its relay ends (`on_end`)
                release(context)

    async def _parse_body(self, request: Request, body: bytes) -> object:
        """The body's JSON, depth-checked once for every later reader (400 if invalid); None if empty or multipart."""
        if not body or request.headers.get("content-type", "").lower().startswith("multipart/"):
            return None
        return await json_body.load(body, self.tokens.offload)

    async def _preflight(self, request: Request, path: str, timing: ServerTiming) -> Response:
        """A CORS preflight, answered by the operation's `<cors>` policy before any key check (browsers send none).

        The subscription is unknown here, so `<cors>` must sit at global, API or operation scope.
        """
        route = operations.match(request.headers.get("access-control-request-method", "").upper(), path)
        if route is None:
            raise ResourceNotFound()
        if not self._started:
            await self.start()
        pipeline = self.policies.current.pipeline(None, route.operation.api, route.operation.id)
        cors = next((s for s in pipeline.inbound if isinstance(s, Cors)), None)
        if cors is None:
            return _http_response(PolicyResponse.error(403, "CORS is not enabled for this API (add a <cors> policy)."))
        context, _ = self._context(request, route, None, "", b"", None, None, timing)
        try:
            return _http_response(cors.preflight(context))
        finally:
            release(context)

    def _context(
        self,
        request: Request,
        route: operations.RouteMatch,
        subscription: Subscription | None,
        key: str,
        body: bytes,
        payload: object,
        deployment: str | None,
        timing: ServerTiming,
    ) -> tuple[ctx.Context, Exchange]:
        operation = route.operation
        header_items = request.headers.items()
        credentials = client_credentials.ClientCredentials.of(header_items)
        keys = client_credentials.KEY_QUERY_PARAMETERS
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in keys]
        scheme = request.scope.get("scheme", "http")
        host, port = authority(request.headers.get("host"), request.scope.get("server"), scheme)
        matched = dict(route.params)
        if deployment is not None:
            matched["deployment-id"] = deployment
        policy_request = ctx.Request(
            request.method,
            self._client_ip(request),
            ctx.Headers(header_items),
            ctx.Url(scheme, host, port, route.path, ctx.QueryParameters(query)),
            ctx.Url(scheme, host, port, route.path, ctx.QueryParameters(query)),
            ctx.ReadOnlyMap(matched),
            ctx.Body(body),
        )
        usage_listeners: list[UsageListener] = []
        parsed = json_body.ParsedBody(body, payload)
        exchange = Exchange(self.services, deployment, operation, credentials, timing, UsageReporter(usage_listeners), parsed)
        context = ctx.Context(
            policy_request,
            api=self.apis[operation.api],
            operation=ctx.Operation(operation.id, operation.method, "/" + operation.template),
            deployment=ctx.Deployment(self.settings.region, self.settings.gateway_id, self.settings.gateway_id),
            subscription=ctx.Subscription(subscription.id, subscription.name, key, subscription.created) if subscription else None,
            product=ctx.Named(subscription.product, subscription.product) if subscription and subscription.product else None,
            user=user_of(subscription),
            services=exchange,
        )
        context.usage_listeners = usage_listeners
        context.after_backend.append(lambda: exchange.settle_buffered(context))
        return context, exchange

    def _client_ip(self, request: Request) -> str:
        """The caller's normalised IP, through the trusted proxies only (gateway/handling/forwarded.py)."""
        return forwarded.client_address(request.headers, request.client.host if request.client else None, self.settings.trusted_proxy_hops)

    async def _respond(self, context: ctx.Context, exchange: Exchange, result: PolicyResponse | None) -> Response:
        if result is not None:
            exchange.close_upstream()
            # Refused, failed or answered by policy: nothing used upstream (a cache hit reports what it saved).
            await exchange.usage.report(context.cache_hit_usage or Usage())
            # 429/403 refusals, for the dashboard
            self.metrics.record_refusal(result.status, context.Subscription.Id if context.Subscription else "", exchange.deployment or "")
            response = _http_response(result)
            response.raw_headers.extend(raw_headers(context.response_headers))
            return response
        answer = context.Response
        if answer is None:  # the pipeline guarantees a response when it returns None
            raise GatewayError()
        headers = raw_headers([*answer.Headers.items(), *context.response_headers])
        upstream = exchange.upstream
        if upstream is not None:
            tap = self._stream_tap(context, exchange, answer.StatusCode)

            async def estimate() -> Usage:
                if tap is None:
                    return Usage()
                tap.usage = await exchange.stream_usage(context, tap, False)
                return tap.usage

            async def on_end(aborted: bool) -> None:
                try:
                    if tap is None:
                        return
                    if exchange.usage.wanted:
                        await exchange.usage.report(await exchange.stream_usage(context, tap, aborted))
                    assembled = tap.assembled() if not aborted else None
                    if assembled is not None:
                        await tell_body_listeners(context, answer.StatusCode, assembled)
                finally:
                    release(context)

            on_break = exchange.backend.health.record_failure if exchange.backend is not None else None
            keepalive = self.settings.sse_keepalive_seconds
            relay = RelayResponse(upstream, answer.StatusCode, headers, keepalive, tap, on_end, on_break, estimate if tap is not None else None)
            exchange.upstream = None  # the relay owns it now, and closes it when the stream ends
            return relay
        if _created_response(exchange, answer.StatusCode) and context.Subscription is not None:
            await response_ids.record_answer(self.response_owners, answer.Body.content, context.Subscription.Id)
        await tell_body_listeners(context, answer.StatusCode, answer.Body.content)
        response = Response(answer.Body.content, status_code=answer.StatusCode)
        response.raw_headers.extend(headers)
        return response

    def _stream_tap(self, context: ctx.Context, exchange: Exchange, status: int) -> StreamTap | None:
        """What reads a relayed stream: usage and text when a listener needs them, the answer when a cache stores
        it, a usage chunk the client asked for that the backend may not send, a created response's id."""
        # The client asked for a usage chunk the gateway did not request for itself: make sure one arrives.
        add_usage = not exchange.strip_usage and has_usage_option(exchange.operation.id) and asks_for_usage(exchange.json.latest)
        wanted = exchange.usage.wanted
        options = {
            "strip_usage": exchange.strip_usage,
            "count_text": wanted or add_usage,
            "assemble": bool(context.body_listeners),
            "add_usage": add_usage,
        }
        if _created_response(exchange, status) and context.Subscription is not None:
            subscription = context.Subscription.Id
            return response_ids.ResponseIdTap(lambda found: self.response_owners.record_soon(found, subscription), **options)
        if wanted or exchange.strip_usage or context.body_listeners or add_usage:
            return StreamTap(**options)
        return None

    def _list_models_locally(self) -> Response:
        models = [{"id": name, "object": "model", "owned_by": "gateway"} for name in self.backends.known_deployments()]
        return Response(orjson.dumps({"object": "list", "data": models}), media_type="application/json")

    async def start(self) -> None:
        """Start the background work (once per process): policies, metrics, leases, health; warm the tokenizer.

        Never fails for storage: what cannot load yet keeps trying in the background.
        """
        async with self._start_lock:
            if self._started:
                return
            await self.policies.start()
            self.metrics.start()
            self.event_log.start()
            self.value_cache.start_cleanup()
            self.counters.start()
            await self.health.start()
            self._settling = asyncio.get_running_loop().create_task(self._settle())
            self._started = True

    async def _settle(self) -> None:
        """Shortly after start-up, once the first requests are served: load the tokenizer's encodings (a few
        hundred ms, off the loop, so the first request that counts tokens does not wait for them), then settle
        the heap so the garbage collector leaves what start-up made alone (gateway/handling/collector.py)."""
        await asyncio.sleep(SETTLE_AFTER_SECONDS)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.tokens.warm_up)
        except Exception:  # the first request that counts tokens loads them again, and says why if it fails
            logger.warning("Loading the tokenizer's encodings failed; they load on first use instead.", exc_info=True)
        collector.settle()

    async def hand_back(self) -> None:
        """What other instances and chargeback need from this one before it goes: its unused leases back in the
        shared counters, its buffered metrics written (gateway/hosts/lifecycle.py calls this alone at exit)."""
        await self.counters.release()
        try:
            await self.metrics.close()
        except GatewayError as exc:
            logger.warning("The final metrics flush failed (%s); what was not written is lost.", exc.message)

    async def clean_semantic_cache(self) -> int:
        """Delete expired semantic-cache entries; returns how many (the Functions timer trigger calls this)."""
        return await self.semantic_cache.cleanup()

    async def close(self) -> None:
        """Give leases back, flush metrics, stop background work and close connections (a graceful stop)."""
        await self.policies.close()
        if self._settling is not None:
            self._settling.cancel()
        await self.hand_back()
        await self.value_cache.close()
        await self.event_log.close()
        await self.response_owners.close()
        await self.health.close()
        await self.services.close()  # one-way requests in flight still need the upstream session
        await self.upstream.close()
        self.tokens.close()
        await self.backends.close()
        await self.store.close()


def _http_response(answer: PolicyResponse) -> Response:
    """A response a policy made (a refusal, return-response, a CORS preflight), as the hosts send it."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers.extend(raw_headers(answer.headers))
    return response


def _created_response(exchange: Exchange, status: int) -> bool:
    return exchange.operation.id == response_ids.CREATE and status == 200
