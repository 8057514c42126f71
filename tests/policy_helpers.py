"""Building blocks for policy unit tests: a request context and a scripted fake of the gateway's services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from policies import context as ctx
from policies.counters import LocalCounters
from policies.errors import PolicyError, PolicyResponse, ServiceError
from policies.pipeline import Pipeline
from policies.services import OutgoingRequest
from policies.statement import Loader
from policies.url_allow_list import UrlAllowList
from policies.usage import Usage

#: Answers a fake `send` or `call_backend` gives: a response, or a ServiceError to raise.
Answer = Callable[[OutgoingRequest], ctx.Response | ServiceError]


def json_response(status: int, payload: object) -> ctx.Response:
    return ctx.Response(status, "", ctx.Headers([("content-type", "application/json")]), ctx.Body(orjson.dumps(payload)))


class FakeServices:
    """Answers `forward` with scripted statuses (or transport failures) and records what it was asked."""

    def __init__(self, statuses: list[int | str] | None = None, prompt_tokens: int = 10, allowance: int = 20) -> None:
        self.statuses = list(statuses or [200])
        self.forwarded: list[dict] = []
        self.counters = LocalCounters()
        self.tokens: list[tuple[str, str | None]] = []
        self.signing_keys = None
        self.prompt_tokens = prompt_tokens
        #: The `ceiling` of each prompt estimate asked for.
        self.ceilings: list[int | None] = []
        self.allowance = allowance
        self.metrics = RecordingMetrics()
        self.token_rate_window_seconds = 60.0
        self.allowed_urls = UrlAllowList.parse(["*.example.com", "*.openai.azure.com", "https://backend.example/"])
        self.value_cache = MemoryValueCache()
        self.event_log = RecordingEventLog()
        #: Requests `send`, `send_one_way` and `call_backend` were given (call_backend's as POSTs to backend-id:path).
        self.sent: list[OutgoingRequest] = []
        self.one_way: list[OutgoingRequest] = []
        self.answer: Answer = lambda request: json_response(200, {"ok": True})

    async def send(self, request: OutgoingRequest, timeout: float) -> ctx.Response:
        self.sent.append(request)
        answer = self.answer(request)
        if isinstance(answer, ServiceError):
            raise answer
        return answer

    def send_one_way(self, request: OutgoingRequest, timeout: float) -> None:
        self.one_way.append(request)

    async def call_backend(self, backend_id: str, path: str, body: bytes, timeout: float) -> ctx.Response:
        return await self.send(OutgoingRequest("POST", f"{backend_id}:{path}", (), body), timeout)

    async def estimate_prompt_tokens(self, context: ctx.Context, ceiling: int | None = None) -> int:
        self.ceilings.append(ceiling)
        return self.prompt_tokens

    def completion_allowance(self, context: ctx.Context) -> int:
        return self.allowance

    async def forward(self, context: ctx.Context, timeout: float | None) -> None:
        self.forwarded.append(
            {
                "backend_id": context.backend_id,
                "base_url": context.base_url,
                "headers": context.Request.Headers.items(),
                "query": context.Request.Url.Query.items(),
                "timeout": timeout,
                "method": context.Request.Method,
                "path": context.Request.Url.Path,
                "body": context.Request.Body.content,
            }
        )
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == "down":
            raise PolicyError("forward-request", "BackendConnectionFailure", "unreachable", PolicyResponse.error(502, "down"))
        body = orjson.dumps({"status": status})
        context.Response = ctx.Response(int(status), "", ctx.Headers([("content-type", "application/json")]), ctx.Body(body))

    async def managed_identity_token(self, resource: str, client_id: str | None) -> str:
        self.tokens.append((resource, client_id))
        return f"token-for-{resource}"


class RecordingMetrics:
    def __init__(self) -> None:
        self.records: list[tuple[str, list[tuple[str, str]], Usage, str, str]] = []
        self.custom: list[tuple[str, str, float, list[tuple[str, str]]]] = []

    def record(self, namespace: str, dimensions: list[tuple[str, str]], usage: Usage, subscription: str, deployment: str) -> None:
        self.records.append((namespace, list(dimensions), usage, subscription, deployment))

    def record_custom(self, namespace: str, name: str, value: float, dimensions: list[tuple[str, str]]) -> None:
        self.custom.append((namespace, name, value, list(dimensions)))


class MemoryValueCache:
    """The value cache's contract in a dict (expiry is the store's business, tested with the store)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[Any, float]] = {}

    async def lookup(self, key: str) -> tuple[bool, Any]:
        if key in self.values:
            return True, self.values[key][0]
        return False, None

    async def store(self, key: str, value: Any, ttl_seconds: float) -> None:
        self.values[key] = (value, ttl_seconds)

    async def remove(self, key: str) -> None:
        self.values.pop(key, None)


class RecordingEventLog:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str | None, str | None]] = []

    def log(self, logger_id: str, message: str, partition_key: str | None, partition_id: str | None) -> None:
        self.messages.append((logger_id, message, partition_key, partition_id))


async def report_usage(context: ctx.Context, usage: Usage) -> None:
    """What the gateway does once usage is known: tell every listener."""
    for listener in context.usage_listeners:
        await listener(usage)


def make_context(
    services: FakeServices | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: dict | None = None,
    deployment: str = "gpt-4o",
    product: str | None = "gold",
    ip: str = "10.1.2.3",
) -> ctx.Context:
    query = ctx.QueryParameters([("api-version", "2024-10-21")])
    url = ctx.Url("https", "gateway.example", 443, f"/openai/deployments/{deployment}/chat/completions", query)
    request = ctx.Request(
        "POST",
        ip,
        ctx.Headers(headers or [("content-type", "application/json"), ("x-user-id", "alice")]),
        url,
        url,
        ctx.ReadOnlyMap({"deployment-id": deployment}),
        ctx.Body(orjson.dumps(body if body is not None else {"messages": [{"role": "user", "content": "hi"}]})),
    )
    return ctx.Context(
        request,
        api=ctx.Named("openai", "Azure OpenAI"),
        operation=ctx.Operation("ChatCompletions_Create", "POST", "/deployments/{deployment-id}/chat/completions"),
        deployment=ctx.Deployment("westeurope", "gw", "gw-1"),
        request_id="req-1",
        subscription=ctx.Subscription("sub-1", "team-a", "key-1", "2026-01-01"),
        product=ctx.Named(product, product) if product else None,
        services=services or FakeServices(),  # type: ignore[arg-type]
    )


def pipeline_of(xml: str, loader: Loader | None = None) -> Pipeline:
    """The pipeline of a single document at API scope over the built-in default."""
    from policies.policy_set import compile_policy_set

    loader = loader or Loader(backend_ids=frozenset({"primary", "secondary"}))
    return compile_policy_set({"api:openai": xml}, 1, loader).pipeline("gold", "openai", "ChatCompletions_Create")


def doc(inbound: str = "<base />", backend: str = "<base />", outbound: str = "<base />", on_error: str = "<base />") -> str:
    """A whole document from its sections' contents."""
    return (
        f"<policies><inbound>{inbound}</inbound><backend>{backend}</backend><outbound>{outbound}</outbound><on-error>{on_error}</on-error></policies>"
    )


def inbound(statement: str) -> str:
    """A document of an inbound section only: `<base />`, then `statement`."""
    return f"<policies><inbound><base />{statement}</inbound></policies>"


async def run_document(
    xml: str, services: FakeServices | None = None, loader: Loader | None = None, **context_args: object
) -> tuple[PolicyResponse | None, ctx.Context, FakeServices]:
    """Run `xml` once through a pipeline; the pipeline's own response (or None), the context and the services."""
    services = services or FakeServices()
    context = make_context(services, **context_args)  # type: ignore[arg-type]
    result = await pipeline_of(xml, loader).execute(context)
    return result, context, services
