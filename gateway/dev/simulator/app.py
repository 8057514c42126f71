"""The simulator's Starlette app: routes, the gates every data route shares, and the test-facing endpoints.

Each app holds its own state (faults, records, issued tokens, stored responses, stream counters), so tests
that build several never see each other's. Besides the operations (operations.py) it answers the Content
Safety routes, App Service's identity endpoint (`/msi/token`) and `/sim/*`: faults, recorded requests, stats
and health.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.dev.simulator.content_safety import ContentSafetyError, analyze, shield_prompt
from gateway.dev.simulator.errors import ACCESS_DENIED, ApiError, bad_request, http_error, json_response
from gateway.dev.simulator.faults import Fault, fault_error, fault_from_spec, header_fault
from gateway.dev.simulator.operations import (
    CHAT_FIELDS,
    COMPLETIONS_FIELDS,
    EMBEDDINGS_FIELDS,
    RECORD_LIMIT,
    RESPONSES_FIELDS,
    Call,
    Handler,
    Operations,
)
from gateway.dev.simulator.parsing import check_fields, flag, parse_json
from gateway.dev.simulator.settings import SimulatorSettings

_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)

Endpoint = Callable[[Request], Awaitable[Response]]


class _AzureHeaders:
    """Stamp Azure's per-response headers on every answer; pure ASGI to stay cheap."""

    def __init__(self, app: ASGIApp, region: str) -> None:
        self.app = app
        self.static = [
            (b"x-ms-region", region.encode("latin-1")),
            (b"x-ratelimit-remaining-requests", b"999"),
            (b"x-ratelimit-remaining-tokens", b"999000"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                request_id = (b"apim-request-id", str(uuid.uuid4()).encode())
                message["headers"] = [*message.get("headers", ()), request_id, *self.static]
            await send(message)

        await self.app(scope, receive, stamped)


class _Simulator(Operations):
    """One app's state: faults, records and issued tokens never leak between apps."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.deployments = frozenset(settings.deployments)
        self.fault: Fault | None = None
        self.fault_remaining = 0
        self.records: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
        self.request_count = 0
        self.tokens: dict[str, int] = {}
        self.streams_open = 0
        self.streams_abandoned = 0
        self.stored_responses = {}

    def routes(self) -> list[Route]:
        deployment = "/openai/deployments/{deployment}"
        data: list[tuple[str, Handler, bool, str, frozenset[str] | None]] = [
            (f"{deployment}/chat/completions", self.chat, True, "json", CHAT_FIELDS),
            (f"{deployment}/completions", self.completions, True, "json", COMPLETIONS_FIELDS),
            (f"{deployment}/embeddings", self.embeddings, True, "json", EMBEDDINGS_FIELDS),
            (f"{deployment}/audio/transcriptions", partial(self.audio, "transcription"), True, "multipart", None),
            (f"{deployment}/audio/translations", partial(self.audio, "translation"), True, "multipart", None),
            (f"{deployment}/audio/speech", self.speech, True, "json", None),
            (f"{deployment}/images/generations", self.images, True, "json", None),
            ("/openai/v1/chat/completions", self.chat, False, "json", CHAT_FIELDS),
            ("/openai/v1/completions", self.completions, False, "json", COMPLETIONS_FIELDS),
            ("/openai/v1/embeddings", self.embeddings, False, "json", EMBEDDINGS_FIELDS),
            ("/openai/v1/responses", self.responses, False, "json", RESPONSES_FIELDS),
            ("/openai/v1/models", self.models, False, "none", None),
        ]
        return [
            *(Route(p, self.data_endpoint(h, v, b, f), methods=["GET" if b == "none" else "POST"]) for p, h, v, b, f in data),
            Route("/contentsafety/text:analyze", self.content_safety_endpoint(analyze), methods=["POST"]),
            Route("/contentsafety/text:shieldPrompt", self.content_safety_endpoint(shield_prompt), methods=["POST"]),
            Route("/openai/v1/responses/{response_id}", self.stored_response, methods=["GET", "DELETE"]),
            Route("/msi/token", self.msi_token, methods=["GET"]),
            Route("/sim/faults", self.faults, methods=["POST", "DELETE"]),
            Route("/sim/requests", self.requests, methods=["GET", "DELETE"]),
            Route("/sim/stats", self.stats, methods=["GET"]),
            Route("/sim/health", self.health, methods=["GET"]),
        ]

    def data_endpoint(self, handler: Handler, versioned: bool, body_kind: str, fields: frozenset[str] | None) -> Endpoint:
        """Run the gates every data route shares, in Azure's order, before the handler."""

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.record(request, body)
            try:
                if versioned and "api-version" not in request.query_params:
                    raise ApiError(404, "404", "Resource not found")
                self.authorize(request.headers)
                payload = parse_json(body) if body_kind == "json" else {}
                if fields is not None and flag(request.headers, "x-sim-strict", self.settings.strict):
                    check_fields(payload, fields)
                deployment = request.path_params["deployment"] if versioned else self.v1_model(payload, body_kind)
                if self.deployments and deployment and deployment not in self.deployments:
                    raise ApiError(404, "DeploymentNotFound", _DEPLOYMENT_NOT_FOUND)
                await self.inject_fault(request.headers)
                return handler(Call(request, deployment, payload, body))
            except ApiError as error:
                return error.response()

        return endpoint

    def content_safety_endpoint(self, check: Callable[[dict[str, Any]], dict[str, Any]]) -> Endpoint:
        """A Content Safety route: its key comes in `Ocp-Apim-Subscription-Key` (or a bearer token, as for OpenAI)."""

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.record(request, body)
            try:
                if "api-version" not in request.query_params:
                    raise ApiError(404, "404", "Resource not found")
                key = request.headers.get("ocp-apim-subscription-key")
                headers = request.headers if key is None else Headers({**request.headers, "api-key": key})
                self.authorize(headers)
                return json_response(check(parse_json(body)))
            except ContentSafetyError as error:
                return ApiError(error.status, error.code, error.message).response()
            except ApiError as error:
                return error.response()

        return endpoint

    def record(self, request: Request, body: bytes) -> None:
        self.request_count += 1
        self.records.append(
            {
                "method": request.method,
                "path": request.scope["path"],
                "query": request.scope["query_string"].decode("latin-1"),
                "headers": dict(request.headers.items()),
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    def authorize(self, headers: Headers) -> None:
        """Accept the key, or a bearer token this simulator's identity endpoint issued and that is unexpired."""
        key = self.settings.api_key
        if key is None:
            return
        supplied = headers.get("api-key")
        if supplied is not None and hmac.compare_digest(supplied.encode(), key.encode()):
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.tokens.get(token.strip(), 0) > time.time():
            return
        raise ApiError(401, "401", ACCESS_DENIED)

    @staticmethod
    def v1_model(payload: Mapping[str, Any], body_kind: str) -> str:
        model = payload.get("model")
        if body_kind == "json" and not (isinstance(model, str) and model):
            raise bad_request("'model' is a required property.")
        return model or ""

    async def inject_fault(self, headers: Headers) -> None:
        fault = header_fault(headers) or self.take_fault()
        if fault is None:
            return
        if fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault.status is not None:
            raise fault_error(fault.status, fault.retry_after)

    def take_fault(self) -> Fault | None:
        fault = self.fault
        if fault is not None and self.fault_remaining > 0:
            self.fault_remaining -= 1
            if self.fault_remaining == 0:
                self.fault = None
        return fault

    async def stored_response(self, request: Request) -> Response:
        """GET and DELETE `/openai/v1/responses/{id}`: a response stored by this simulator, or 404."""
        self.record(request, b"")
        try:
            self.authorize(request.headers)
            response_id = request.path_params["response_id"]
            if response_id not in self.stored_responses:
                raise ApiError(404, "404", f"Response with id '{response_id}' not found.")
        except ApiError as error:
            return error.response()
        if request.method == "DELETE":
            del self.stored_responses[response_id]
            return json_response({"id": response_id, "object": "response.deleted", "deleted": True})
        return json_response(self.stored_responses[response_id])

    async def msi_token(self, request: Request) -> Response:
        """Emulate App Service's identity endpoint, which azure-identity calls with X-IDENTITY-HEADER."""
        expected = self.settings.identity_header
        supplied = request.headers.get("x-identity-header", "")
        if expected is not None and not hmac.compare_digest(supplied.encode(), expected.encode()):
            return json_response({"statusCode": 401, "message": "Invalid or missing X-IDENTITY-HEADER."}, 401)
        resource = request.query_params.get("resource")
        if not resource:
            return json_response({"statusCode": 400, "message": "The 'resource' query parameter is required."}, 400)
        token = f"sim-mi-{len(self.tokens) + 1}"
        expires_on = int(time.time()) + self.settings.token_lifetime_s
        self.tokens[token] = expires_on
        issued = {"access_token": token, "expires_on": str(expires_on), "token_type": "Bearer"}
        return json_response({**issued, "resource": resource})

    async def faults(self, request: Request) -> Response:
        """POST arms a fault for the next `count` data requests; DELETE disarms it."""
        if request.method == "DELETE":
            self.fault, self.fault_remaining = None, 0
            return Response(status_code=204)
        try:
            fault, count = fault_from_spec(parse_json(await request.body()))
        except ApiError as error:
            return error.response()
        self.fault, self.fault_remaining = fault, count
        armed = {"status": fault.status, "retry_after": fault.retry_after, "hang_s": fault.hang_s}
        return json_response({**armed, "count": count})

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.records.clear()
            return Response(status_code=204)
        return json_response(list(self.records))

    async def stats(self, request: Request) -> Response:
        return json_response(
            {
                "requests": self.request_count,
                "msi_tokens_issued": len(self.tokens),
                "streams_open": self.streams_open,
                "streams_abandoned": self.streams_abandoned,
            }
        )

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "simulator": True})


def build_app(settings: SimulatorSettings) -> Starlette:
    """Build an independent simulator app; each has its own faults, records and tokens."""
    simulator = _Simulator(settings)
    return Starlette(
        routes=simulator.routes(),
        middleware=[Middleware(_AzureHeaders, region=settings.region)],
        exception_handlers={HTTPException: http_error},
    )
