"""`<azure-openai-semantic-cache-lookup>` / `<llm-semantic-cache-lookup>` (inbound) and
`<azure-openai-semantic-cache-store>` / `<llm-semantic-cache-store>` (outbound): answer a prompt from the
answers given to similar prompts.

    <azure-openai-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="embeddings"
        embeddings-backend-auth="system-assigned" ignore-system-messages="true" max-message-count="10">
        <vary-by>@(context.Request.Headers.GetValueOrDefault("x-user-id", ""))</vary-by>
    </azure-openai-semantic-cache-lookup>
    …
    <azure-openai-semantic-cache-store duration="3600" />

`score-threshold` is a cosine *distance*, as in APIM: a hit iff the nearest entry's distance is at most the
threshold, so lower is stricter (0.05 is a good start; above 0.2 unrelated prompts start to match).
`embeddings-backend-id` names a configured backend (or pool) that has an `embeddings_deployment`; the
embedding is requested with that backend's own credentials, its key or its managed identity, and its usage is
never charged to the caller. `embeddings-backend-auth` may be given as APIM requires (`system-assigned`, its only
value) and changes nothing. `max-message-count`: requests with more messages (counted after system messages
are dropped with `ignore-system-messages`) skip the cache. `vary-by` values narrow the partition further; the
tenant, deployment and answer-changing parameters are always part of it (see policies/semantic_cache.py).

Chat completions and completions, streamed or not (APIM does not cache streams): a hit on a streamed request
is replayed as SSE; a streamed answer is stored once it completed. Only answers with status 200 are stored
unless `cache-response="true"`, and never answers with tool calls, content-filter hits or a finish reason
other than `stop`. A hit answers at once (like `return-response`: the backend and outbound are skipped).

Response headers: `x-semantic-cache: HIT | MISS | BYPASS` (BYPASS: not cacheable — a prompt too long to embed
among them —, too many messages, or the lookup failed or timed out, in which case the request goes to the backend) and `x-semantic-cache-distance`
(the nearest entry's distance, 4 decimals).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.context import Context
from policies.errors import ReturnResponse
from policies.expressions import ExpressionRuntimeError, Value
from policies.semantic_cache import CachedAnswer, CacheQuery, cache_prompt, partition_key, replay, storable, tenant, with_usage
from policies.statement import Loader, Settings, Statement, as_bool, attr, register
from policies.usage import Usage
from policies.xml import PolicyElement

STATUS_HEADER = "x-semantic-cache"
DISTANCE_HEADER = "x-semantic-cache-distance"


class LookupSettings(Settings):
    score_threshold: Value = attr(kind=float, minimum=0.0, maximum=1.0)
    embeddings_backend_id: str = attr()
    embeddings_backend_auth: str | None = attr(choices=("system-assigned",))
    ignore_system_messages: Value = attr(kind=bool, default=False)
    max_message_count: Value | None = attr(kind=int, minimum=1)


class StoreSettings(Settings):
    duration: Value = attr(kind=int, minimum=1)
    cache_response: Value = attr(kind=bool, default=False)


@register
class SemanticCacheLookup(Statement):
    element = "azure-openai-semantic-cache-lookup"
    aliases = ("llm-semantic-cache-lookup",)
    sections = frozenset({"inbound"})

    def __init__(self, settings: LookupSettings, vary_by: list[Value]) -> None:
        self.threshold = settings.score_threshold
        self.ignore_system = settings.ignore_system_messages
        self.max_messages = settings.max_message_count
        self.backend_id = settings.embeddings_backend_id
        self.vary_by = vary_by

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SemanticCacheLookup:
        settings = loader.settings(element, LookupSettings)
        backend_id = settings.embeddings_backend_id
        if loader.backend_ids is not None and backend_id not in loader.backend_ids:
            known = ", ".join(sorted(loader.backend_ids)) or "none configured"
            raise loader.fail(element, f"Unknown embeddings-backend-id {backend_id!r}; configured backends: {known}.")
        if loader.embeddings_backend_ids is not None and backend_id not in loader.embeddings_backend_ids:
            raise loader.fail(
                element,
                f'Backend {backend_id!r} has no embeddings deployment: add "embeddings_deployment": "<deployment name>" '
                "to its entry in GATEWAY_BACKENDS (for a pool, to every member).",
            )
        vary_by = []
        for child in loader.children(element, ("vary-by",)):
            loader.no_attributes(child)
            vary_by.append(loader.text(child))
        return cls(settings, vary_by)

    async def run(self, context: Context) -> None:
        cache = context.services.semantic_cache
        ignore_system = as_bool(self.ignore_system.evaluate(context), "ignore-system-messages")
        prompt = cache_prompt(context.Operation.Id, context.Request.Body.content, ignore_system)
        owner = tenant(context, cache.scope)
        deployment = context.Request.MatchedParameters.GetValueOrDefault("deployment-id")
        limit = _number(self.max_messages, context, "max-message-count", int, 1) if self.max_messages is not None else None
        if prompt is None or owner is None or not deployment or (limit is not None and prompt.message_count > limit):
            context.response_headers.append((STATUS_HEADER, "BYPASS"))
            return
        threshold = _number(self.threshold, context, "score-threshold", float, 0.0, 1.0)
        vary_by = ("" if (value := v.evaluate(context)) is None else str(value) for v in self.vary_by)
        partition = partition_key(owner, deployment, prompt, vary_by)
        lookup = await cache.lookup(context, CacheQuery(partition, prompt.text, self.backend_id, threshold))
        context.response_headers.append((STATUS_HEADER, lookup.outcome))
        if lookup.distance is not None:
            context.response_headers.append((DISTANCE_HEADER, f"{lookup.distance:.4f}"))
        if lookup.answer is not None:
            context.cache_hit_usage = dataclasses.replace(lookup.answer.usage, from_cache=True)
            raise ReturnResponse(replay(lookup.answer, prompt.stream, prompt.include_usage))
        if lookup.ticket is not None:
            pending = PendingStore(lookup.ticket)
            context.cache_ticket = pending
            context.usage_listeners.append(pending.remember)


class PendingStore:
    """A missed lookup, waiting for the answer: the cache's ticket and, once known, what the answer used.

    Listening for usage also makes the gateway ask a stream for its usage chunk, so a streamed answer is
    stored with exact counts.
    """

    def __init__(self, ticket: object) -> None:
        self.ticket = ticket
        self.usage: Usage | None = None

    async def remember(self, usage: Usage) -> None:
        self.usage = usage


@register
class SemanticCacheStore(Statement):
    element = "azure-openai-semantic-cache-store"
    aliases = ("llm-semantic-cache-store",)
    sections = frozenset({"outbound"})

    def __init__(self, duration: Value, cache_response: Value) -> None:
        self.duration = duration
        self.cache_response = cache_response

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> SemanticCacheStore:
        loader.children(element, ())
        settings = loader.settings(element, StoreSettings)
        return cls(settings.duration, settings.cache_response)

    async def run(self, context: Context) -> None:
        pending = context.cache_ticket
        if not isinstance(pending, PendingStore):
            return  # no lookup, or it did not miss
        seconds = _number(self.duration, context, "duration", int, 1)
        any_status = as_bool(self.cache_response.evaluate(context), "cache-response")
        cache = context.services.semantic_cache

        async def store(status: int, body: bytes) -> None:
            if storable(status, body, any_status):
                usage = pending.usage or Usage()
                cache.store(pending.ticket, CachedAnswer(status, with_usage(body, pending.usage), usage), seconds)

        context.body_listeners.append(store)


def _number(value: Value, context: Context, name: str, kind: type, low: float, high: float | None = None) -> Any:
    """An attribute's per-request value as `kind`, within bounds; anything else is an expression error naming it."""
    raw = value.evaluate(context)
    try:
        number = kind(str(raw).strip()) if isinstance(raw, str) else kind(raw)
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        raise ExpressionRuntimeError(f"Attribute {name!r} must be a number {bounds}, not {raw!r}.")
    return number
