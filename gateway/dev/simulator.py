"""A simulated Azure OpenAI backend: deterministic answers, Azure-shaped errors, fault injection.

It lets newcomers run the gateway with no Azure endpoint, gives end-to-end tests a backend
they can inspect and break on purpose, and is the cheap "direct" baseline in benchmarks.
It is not a model: answers echo the question and embeddings are hashed bags of words; a request whose
`tool_choice` forces a function gets a call to it, with the question as its arguments.

Faults, chosen per request by header (the gateway forwards them) or armed with POST /sim/faults:
`x-sim-fault: <status>|hang` fails a request before it is answered; `x-sim-stream-fault: <kind>:<n>`
breaks a stream after n tokens: `drop` closes the connection without ending the chunked body (a reset
stream), `end` ends the body cleanly but without the closing chunks and `[DONE]`, `stall` goes silent
for `x-sim-hang-s` seconds (an idle backend) and then drops. Strict mode (`strict=True`, or the header
`x-sim-strict: true`) answers 400 to request fields the operation does not have, as Azure OpenAI does;
`x-sim-ignore-stream-options: true` streams without the usage chunk a request asked for, as some backends do.

It also plays Azure AI Content Safety (`/contentsafety/text:analyze` and `text:shieldPrompt`,
gateway/dev/content_safety.py), with a fixed word list, so `llm-content-safety` runs locally.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import re
import struct
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from functools import lru_cache, partial
from http.client import responses as http_reasons
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.dev import content_safety

DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")

_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)
_RATE_LIMITED = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded "
    "token rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go "
    "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
)
_FAULT_BODIES = {
    401: ("401", _ACCESS_DENIED),
    404: ("404", "Resource not found"),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
}
# A 1x1 transparent PNG: the smallest answer an image client can decode.
_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_FINGERPRINT = "fp_simulated"
_NO_FILTER: dict[str, Any] = {"logprobs": None, "content_filter_results": {}}
_MODELS_CREATED = 1_700_000_000
_RECORD_LIMIT = 200
_SPEECH_BYTES = 64 * 1024
_COMPONENTS_PER_WORD = 8
_SENTINEL = "\x00token\x00"
_SENTINEL_JSON = orjson.dumps(_SENTINEL)
_DONE = b"data: [DONE]\n\n"
_WORD_RE = re.compile(r"\w+")
_STOP_WORDS = frozenset(
    """
    a an the this that these those there here some any each every all
    i me my mine myself we us our ours you your yours he him his she her hers it its they them their
    what which who whom whose why how when where whether
    is are was were be been being am do does did done doing have has had having
    can could would should will shall may might must
    of to in on at by for from with about into onto over under as than then so if or and but not no
    please tell give show explain describe say let kindly just really also very quite know want like need
    hi hello hey thanks thank ok okay s t d ll re ve m
    """.split()
)


@dataclass(frozen=True)
class SimulatorSettings:
    """How one simulated backend behaves; frozen so an app's behaviour cannot drift under a test."""

    api_key: str | None = None  # when set: `api-key` must match, or a bearer token from /msi/token
    token_ms: float = 0.0  # pause before each streamed token; header x-sim-token-ms overrides it
    deployments: tuple[str, ...] = ()  # empty serves any deployment name
    region: str = "simulated"  # echoed in x-ms-region
    embedding_dims: int = 1536
    identity_header: str | None = None  # when set, /msi/token requires a matching X-IDENTITY-HEADER
    token_lifetime_s: int = 3600
    strict: bool = False  # 400 for unknown request fields; header x-sim-strict overrides it


class _ApiError(Exception):
    """An Azure-shaped error; raised deep in a handler so validation stays one line."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> Response:
        return _json({"error": {"code": self.code, "message": self.message}}, self.status, self.headers)


@dataclass(frozen=True)
class _Fault:
    """A failure to inject: optionally hang, then optionally answer with an error status."""

    status: int | None
    retry_after: float | None = None
    hang_s: float = 0.0


@dataclass(frozen=True)
class _StreamFault:
    """A stream that goes wrong after `after` tokens: `drop`, `end` or `stall` (see the module docstring)."""

    kind: str
    after: int
    stall_s: float = 0.0


class _DroppedStream(Exception):
    """Raised out of a response body so uvicorn closes the connection without the final chunk."""


class _QuietDrops(logging.Filter):
    """A deliberate drop is not an error of the simulator: keep uvicorn's traceback for it out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedStream))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass(frozen=True)
class _Call:
    """What a data-route handler needs once auth, parsing and faults are behind it."""

    request: Request
    deployment: str
    payload: dict[str, Any]
    body: bytes


@dataclass(frozen=True)
class _Answer:
    """The words the simulated model says, and the token counts they imply."""

    words: list[str]
    finish_reason: str
    prompt_tokens: int
    n: int

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def usage(self) -> dict[str, int]:
        completion = len(self.words) * self.n
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def _json(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, "BadRequest", message)


def _ident(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _words(text: str) -> int:
    return len(text.split())


def _content_text(content: object) -> str:
    """Message content is a string or a list of parts; only the parts' text counts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _messages(value: object, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad_request(f"'{field}' is a required property and must be a non-empty array")
    return [m for m in value if isinstance(m, dict)]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _texts(value: object, field: str) -> list[str]:
    """Accept the OpenAI input shapes: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise _bad_request(f"'{field}' must be a string, an array of strings or an array of token arrays")


def _int_field(payload: Mapping[str, Any], name: str) -> int | None:
    """Read an optional positive integer; None when absent so callers can chain defaults with `or`."""
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise _bad_request(f"Invalid value for '{name}': expected a positive integer.")
    return value


def _answer(prefix: str, question: str, prompt_tokens: int, limit: int | None, n: int) -> _Answer:
    """Echo the question so tests can tell answers apart; truncate like a max-token limit would."""
    words = [*prefix.split(), *question.split()]
    truncated = limit is not None and len(words) > limit
    return _Answer(words[:limit] if truncated else words, "length" if truncated else "stop", prompt_tokens, n)


def _float_header(headers: Headers, name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad_request(f"Invalid {name} header: {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _bad_request(f"Invalid {name} header: {raw!r}")
    return value


def _fault_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise _bad_request(f"Fault status must be an HTTP error code (400-599), got {value!r}.")
    return value


def _header_fault(headers: Headers) -> _Fault | None:
    kind = headers.get("x-sim-fault")
    if kind is None:
        return None
    if kind.strip().lower() == "hang":
        return _Fault(None, hang_s=_float_header(headers, "x-sim-hang-s", 30.0))
    try:
        status = int(kind)
    except ValueError:
        raise _bad_request(f"Invalid x-sim-fault header: {kind!r}") from None
    retry = _float_header(headers, "x-sim-retry-after", 0.0) if "x-sim-retry-after" in headers else None
    return _Fault(_fault_status(status), retry)


def _stream_fault(headers: Headers) -> _StreamFault | None:
    raw = headers.get("x-sim-stream-fault")
    if raw is None:
        return None
    kind, _, after = raw.strip().lower().partition(":")
    if kind not in ("drop", "end", "stall") or not after.isdigit():
        raise _bad_request(f"Invalid x-sim-stream-fault header: {raw!r} (expected drop:N, end:N or stall:N).")
    return _StreamFault(kind, int(after), _float_header(headers, "x-sim-hang-s", 30.0) if kind == "stall" else 0.0)


def _flag(headers: Headers, name: str, default: bool) -> bool:
    raw = headers.get(name)
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes")


def _check_fields(payload: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = [name for name in payload if name not in known]
    if unknown:
        raise _bad_request(f"Unrecognized request argument supplied: {', '.join(unknown)}")


def _forced_tool(payload: Mapping[str, Any]) -> str | None:
    """The function a chat request forces (`tool_choice` naming one, or "required" with tools), else None."""
    tools = payload.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = payload.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return name if isinstance(name, str) else None
    first = tools[0].get("function") if isinstance(tools[0], dict) else None
    if choice == "required" and isinstance(first, dict) and isinstance(first.get("name"), str):
        return first["name"]
    return None


def _fault_from_spec(spec: object) -> tuple[_Fault, int]:
    """Validate a POST /sim/faults body so a typo fails loudly instead of injecting nothing."""
    if not isinstance(spec, dict):
        raise _bad_request("Fault spec must be a JSON object.")
    status = None if spec.get("status") is None else _fault_status(spec["status"])
    retry, hang_s = (spec.get(k) for k in ("retry_after", "hang_s"))
    for value in (retry, hang_s):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise _bad_request("retry_after and hang_s must be non-negative numbers.")
    if status is None and not hang_s:
        raise _bad_request("A fault needs a 'status' or a positive 'hang_s'.")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not (count == -1 or count >= 1):
        raise _bad_request("count must be a positive integer, or -1 for until cleared.")
    return _Fault(status, None if retry is None else float(retry), float(hang_s or 0.0)), count


def _fault_error(status: int, retry_after: float | None) -> _ApiError:
    """Shape the injected failure the way Azure would, with retry hints clients honour."""
    retry = 1.0 if retry_after is None and status == 429 else retry_after
    headers = None
    if retry is not None:
        headers = {"Retry-After": str(math.ceil(retry)), "retry-after-ms": str(round(retry * 1000))}
    if status == 429:
        return _ApiError(429, "429", _RATE_LIMITED.format(seconds=math.ceil(retry or 0)), headers)
    code, message = _FAULT_BODIES.get(status, (str(status), http_reasons.get(status, "Simulated fault")))
    return _ApiError(status, code, message, headers)


@lru_cache(maxsize=65536)
def _word_components(word: str, dims: int) -> tuple[tuple[int, float], ...]:
    """Hash a word to a few signed axes; hashlib keeps vectors stable across processes."""
    digest = hashlib.blake2b(word.encode(), digest_size=4 * _COMPONENTS_PER_WORD).digest()
    chunks = (digest[i : i + 4] for i in range(0, len(digest), 4))
    return tuple((int.from_bytes(c[:3], "little") % dims, 1.0 if c[3] & 1 else -1.0) for c in chunks)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _content_words(text: str) -> tuple[str, ...]:
    """Reduce a text to its meaning-bearing words, so paraphrases collapse to the same sorted bag."""
    stems = (_stem(w) for w in _WORD_RE.findall(text.lower()))
    return tuple(sorted(w for w in stems if w not in _STOP_WORDS))


def _vector(words: tuple[str, ...], dims: int, size: int) -> list[float]:
    values = [0.0] * dims
    for word in words:
        for axis, sign in _word_components(word, dims):
            values[axis] += sign
    values = values[:size]
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0:
        return [1.0 / math.sqrt(size)] * size
    return [v / norm for v in values]


@lru_cache(maxsize=4096)
def _embedding(words: tuple[str, ...], dims: int, size: int, encoding: str) -> tuple[float, ...] | str:
    """Cache whole encoded vectors (immutable, as they are shared): benchmarks repeat the same inputs."""
    vector = _vector(words, dims, size)
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{size}f", *vector)).decode("ascii")
    return tuple(vector)


def _multipart(body: bytes, content_type: str) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Parse form data with the stdlib, so the simulator needs no python-multipart."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise _bad_request("Expected a multipart/form-data body.")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            upload = (part.get_filename() or "file", data)
        elif isinstance(name, str):
            fields[name] = data.decode("utf-8", "replace")
    return fields, upload


def _event_line(payload: dict[str, Any]) -> bytes:
    """Responses API events name their type on an `event:` line as well."""
    kind = payload.get("type")
    return b"event: " + kind.encode() + b"\n" if isinstance(kind, str) else b""


def _frame(payload: dict[str, Any]) -> tuple[bytes, bytes]:
    """Split a chunk around its sentinel once, so each streamed token costs one tiny dumps."""
    head, tail = orjson.dumps(payload).split(_SENTINEL_JSON)
    return _event_line(payload) + b"data: " + head, tail + b"\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return _event_line(payload) + b"data: " + orjson.dumps(payload) + b"\n\n"


async def _sse(
    opening: list[bytes],
    frames: list[tuple[bytes, bytes]],
    words: list[str],
    closing: list[bytes],
    delay_s: float,
    fault: _StreamFault | None = None,
) -> AsyncIterator[bytes]:
    """Yield every event on its own so proxies see real token-by-token streaming; `closing` ends the stream."""
    for event in opening:
        yield event
    for position, word in enumerate(words):
        if fault is not None and position == fault.after:
            if fault.kind == "end":
                return
            if fault.kind == "stall":
                await asyncio.sleep(fault.stall_s)
            raise _DroppedStream()
        if delay_s:
            await asyncio.sleep(delay_s)
        piece = orjson.dumps(word if position == 0 else " " + word)
        for head, tail in frames:
            yield head + piece + tail
    for event in closing:
        yield event


async def _chunks(data: bytes, count: int) -> AsyncIterator[bytes]:
    size = -(-len(data) // count)
    for start in range(0, len(data), size):
        yield data[start : start + size]


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


Handler = Callable[[_Call], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


class _Simulator:
    """One app's state: faults, records and issued tokens never leak between apps."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.deployments = frozenset(settings.deployments)
        self.fault: _Fault | None = None
        self.fault_remaining = 0
        self.records: deque[dict[str, Any]] = deque(maxlen=_RECORD_LIMIT)
        self.request_count = 0
        self.tokens: dict[str, int] = {}
        #: Streams being sent now, and streams the client (the gateway) closed before the end.
        self.streams_open = 0
        self.streams_abandoned = 0
        #: Responses created with `store` (the default), by id, oldest first; at most `_RECORD_LIMIT`.
        self.stored_responses: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        deployment = "/openai/deployments/{deployment}"
        data: list[tuple[str, Handler, bool, str, frozenset[str] | None]] = [
            (f"{deployment}/chat/completions", self.chat, True, "json", _CHAT_FIELDS),
            (f"{deployment}/completions", self.completions, True, "json", _COMPLETIONS_FIELDS),
            (f"{deployment}/embeddings", self.embeddings, True, "json", _EMBEDDINGS_FIELDS),
            (f"{deployment}/audio/transcriptions", partial(self.audio, "transcription"), True, "multipart", None),
            (f"{deployment}/audio/translations", partial(self.audio, "translation"), True, "multipart", None),
            (f"{deployment}/audio/speech", self.speech, True, "json", None),
            (f"{deployment}/images/generations", self.images, True, "json", None),
            ("/openai/v1/chat/completions", self.chat, False, "json", _CHAT_FIELDS),
            ("/openai/v1/completions", self.completions, False, "json", _COMPLETIONS_FIELDS),
            ("/openai/v1/embeddings", self.embeddings, False, "json", _EMBEDDINGS_FIELDS),
            ("/openai/v1/responses", self.responses, False, "json", _RESPONSES_FIELDS),
            ("/openai/v1/models", self.models, False, "none", None),
        ]
        return [
            *(Route(p, self.data_endpoint(h, v, b, f), methods=["GET" if b == "none" else "POST"]) for p, h, v, b, f in data),
            Route("/contentsafety/text:analyze", self.content_safety_endpoint(content_safety.analyze), methods=["POST"]),
            Route("/contentsafety/text:shieldPrompt", self.content_safety_endpoint(content_safety.shield_prompt), methods=["POST"]),
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
                    raise _ApiError(404, "404", "Resource not found")
                self.authorize(request.headers)
                payload = self.parse_json(body) if body_kind == "json" else {}
                if fields is not None and _flag(request.headers, "x-sim-strict", self.settings.strict):
                    _check_fields(payload, fields)
                deployment = request.path_params["deployment"] if versioned else self.v1_model(payload, body_kind)
                if self.deployments and deployment and deployment not in self.deployments:
                    raise _ApiError(404, "DeploymentNotFound", _DEPLOYMENT_NOT_FOUND)
                await self.inject_fault(request.headers)
                return handler(_Call(request, deployment, payload, body))
            except _ApiError as error:
                return error.response()

        return endpoint

    def content_safety_endpoint(self, check: Callable[[dict[str, Any]], dict[str, Any]]) -> Endpoint:
        """A Content Safety route: its key comes in `Ocp-Apim-Subscription-Key` (or a bearer token, as for OpenAI)."""

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.record(request, body)
            try:
                if "api-version" not in request.query_params:
                    raise _ApiError(404, "404", "Resource not found")
                key = request.headers.get("ocp-apim-subscription-key")
                headers = request.headers if key is None else Headers({**request.headers, "api-key": key})
                self.authorize(headers)
                return _json(check(self.parse_json(body)))
            except content_safety.ContentSafetyError as error:
                return _ApiError(error.status, error.code, error.message).response()
            except _ApiError as error:
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
        raise _ApiError(401, "401", _ACCESS_DENIED)

    @staticmethod
    def parse_json(body: bytes) -> dict[str, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise _bad_request(f"Could not parse the JSON body of your request: {error}") from None
        if not isinstance(payload, dict):
            raise _bad_request("The request body must be a JSON object.")
        return payload

    @staticmethod
    def v1_model(payload: Mapping[str, Any], body_kind: str) -> str:
        model = payload.get("model")
        if body_kind == "json" and not (isinstance(model, str) and model):
            raise _bad_request("'model' is a required property.")
        return model or ""

    async def inject_fault(self, headers: Headers) -> None:
        fault = _header_fault(headers) or self.take_fault()
        if fault is None:
            return
        if fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault.status is not None:
            raise _fault_error(fault.status, fault.retry_after)

    def take_fault(self) -> _Fault | None:
        fault = self.fault
        if fault is not None and self.fault_remaining > 0:
            self.fault_remaining -= 1
            if self.fault_remaining == 0:
                self.fault = None
        return fault

    def token_delay_s(self, headers: Headers) -> float:
        return _float_header(headers, "x-sim-token-ms", self.settings.token_ms) / 1000.0

    def chat(self, call: _Call) -> Response:
        payload = call.payload
        messages = _messages(payload.get("messages"), "messages")
        prompt_tokens = sum(_words(_content_text(m.get("content"))) for m in messages)
        limit = _int_field(payload, "max_completion_tokens") or _int_field(payload, "max_tokens")
        n = _int_field(payload, "n") or 1
        tool = _forced_tool(payload)
        if tool is not None:
            arguments = orjson.dumps({"question": _last_user_text(messages)}).decode()
            answer = _Answer(arguments.split(" "), "tool_calls", prompt_tokens, n)
        else:
            answer = _answer("Simulated answer to:", _last_user_text(messages), prompt_tokens, limit, n)
        base: dict[str, Any] = {
            "id": _ident("chatcmpl-"),
            "created": int(time.time()),
            "model": call.deployment,
            "system_fingerprint": _FINGERPRINT,
        }
        call_id = _ident("call_")
        if not payload.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer.text}
            if tool is not None:
                function = {"name": tool, "arguments": answer.text}
                message = {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function", "function": function}]}
            choice = {"message": message, "finish_reason": answer.finish_reason}
            return _json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": i, **choice, **_NO_FILTER} for i in range(n)],
                    "usage": answer.usage(),
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                }
            )

        base["object"] = "chat.completion.chunk"

        def chunk(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish, **_NO_FILTER}]}

        opening: dict[str, Any] = {"role": "assistant", "content": ""}
        token: dict[str, Any] = {"content": _SENTINEL}
        if tool is not None:
            call_opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
            opening = {"role": "assistant", "content": None, "tool_calls": [call_opening]}
            token = {"tool_calls": [{"index": 0, "function": {"arguments": _SENTINEL}}]}
        return self.stream(
            call,
            base,
            answer,
            opening=[chunk(i, opening, None) for i in range(n)],
            tokens=[chunk(i, token, None) for i in range(n)],
            closing=[chunk(i, {}, answer.finish_reason) for i in range(n)],
        )

    def completions(self, call: _Call) -> Response:
        payload = call.payload
        prompts = _texts(payload.get("prompt"), "prompt")
        n = _int_field(payload, "n") or 1
        limit = _int_field(payload, "max_tokens")
        answer = _answer("Simulated completion of:", prompts[-1], sum(map(_words, prompts)), limit, n)
        base = {"id": _ident("cmpl-"), "object": "text_completion", "created": int(time.time())}
        base["model"] = call.deployment
        if not payload.get("stream"):
            choice = {"text": answer.text, "finish_reason": answer.finish_reason, **_NO_FILTER}
            return _json({**base, "choices": [{"index": i, **choice} for i in range(n)], "usage": answer.usage()})

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {**base, "choices": [{"index": index, "text": text, "finish_reason": finish, **_NO_FILTER}]}

        return self.stream(
            call,
            base,
            answer,
            opening=[],
            tokens=[chunk(i, _SENTINEL, None) for i in range(n)],
            closing=[chunk(i, "", answer.finish_reason) for i in range(n)],
        )

    def stream(
        self,
        call: _Call,
        base: dict[str, Any],
        answer: _Answer,
        opening: list[dict[str, Any]],
        tokens: list[dict[str, Any]],
        closing: list[dict[str, Any]],
    ) -> StreamingResponse:
        """Assemble the SSE stream; with include_usage every chunk says usage null until the last."""
        options = call.payload.get("stream_options")
        ignored = _flag(call.request.headers, "x-sim-ignore-stream-options", False)  # as some backends do
        include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and not ignored

        def events(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**c, "usage": None} for c in chunks] if include_usage else chunks

        tail = [_event(c) for c in events(closing)]
        if include_usage:
            tail.append(_event({**base, "choices": [], "usage": answer.usage()}))
        tail.append(_DONE)
        return self.sse_response(call, [_event(c) for c in events(opening)], [_frame(c) for c in events(tokens)], answer.words, tail)

    def sse_response(
        self, call: _Call, opening: list[bytes], frames: list[tuple[bytes, bytes]], words: list[str], closing: list[bytes]
    ) -> StreamingResponse:
        headers = call.request.headers
        body = _sse(opening, frames, words, closing, self.token_delay_s(headers), _stream_fault(headers))
        return StreamingResponse(self._tracked(body), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def _tracked(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Count open and abandoned streams, so tests can see that a client hang-up reaches the backend."""
        self.streams_open += 1
        finished = False
        try:
            async for event in events:
                yield event
            finished = True
        finally:
            self.streams_open -= 1
            self.streams_abandoned += not finished

    def embeddings(self, call: _Call) -> Response:
        payload = call.payload
        texts = _texts(payload.get("input"), "input")
        dims = self.settings.embedding_dims
        size = _int_field(payload, "dimensions") or dims
        if size > dims:
            raise _bad_request(f"'dimensions' must be at most {dims}.")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _bad_request("'encoding_format' must be 'float' or 'base64'.")
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(_content_words(t), dims, size, encoding)}
            for i, t in enumerate(texts)
        ]
        usage = dict.fromkeys(("prompt_tokens", "total_tokens"), sum(map(_words, texts)))
        return _json({"object": "list", "data": data, "model": call.deployment, "usage": usage})

    def audio(self, verb: str, call: _Call) -> Response:
        fields, upload = _multipart(call.body, call.request.headers.get("content-type", ""))
        if upload is None:
            raise _bad_request("'file' is a required property.")
        filename, data = upload
        text = f"simulated {verb} of {filename}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"
        if fields.get("response_format") == "text":
            return PlainTextResponse(text)
        return _json({"text": text})

    def speech(self, call: _Call) -> Response:
        text = call.payload.get("input")
        if not isinstance(text, str) or not text:
            raise _bad_request("'input' is a required property.")
        digest = hashlib.sha256(text.encode()).digest()
        return StreamingResponse(_chunks(digest * (_SPEECH_BYTES // len(digest)), 8), media_type="audio/mpeg")

    def images(self, call: _Call) -> Response:
        prompt = call.payload.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad_request("'prompt' is a required property.")
        n = _int_field(call.payload, "n") or 1
        if call.payload.get("response_format") == "b64_json":
            image = {"b64_json": _PNG_B64}
        else:
            image = {"url": f"https://simulator.invalid/images/{hashlib.sha256(prompt.encode()).hexdigest()[:32]}.png"}
        return _json({"created": int(time.time()), "data": [{**image, "revised_prompt": prompt} for _ in range(n)]})

    def responses(self, call: _Call) -> Response:
        payload = call.payload
        previous = payload.get("previous_response_id")
        if previous is not None and previous not in self.stored_responses:
            raise _ApiError(404, "404", f"Previous response with id '{previous}' not found.")
        raw = payload.get("input")
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else _messages(raw, "input")
        instructions = payload.get("instructions") if isinstance(payload.get("instructions"), str) else None
        prompt_tokens = sum(_words(_content_text(i.get("content"))) for i in items) + _words(instructions or "")
        limit = _int_field(payload, "max_output_tokens")
        answer = _answer("Simulated answer to:", _last_user_text(items), prompt_tokens, limit, 1)
        complete = answer.finish_reason == "stop"
        text = {"type": "output_text", "text": answer.text, "annotations": []}
        message = {"type": "message", "id": _ident("msg_"), "role": "assistant", "status": "completed"}
        usage = answer.usage()
        response = {
            "id": _ident("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "model": call.deployment,
            "status": "completed" if complete else "incomplete",
            "incomplete_details": None if complete else {"reason": "max_output_tokens"},
            "error": None,
            "instructions": instructions,
            "previous_response_id": previous,
            "output": [{**message, "content": [text]}],
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if payload.get("store", True):
            self.stored_responses[response["id"]] = response
            while len(self.stored_responses) > _RECORD_LIMIT:
                del self.stored_responses[next(iter(self.stored_responses))]
        if not payload.get("stream"):
            return _json(response)
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        place = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        opening = [_event({"type": "response.created", "response": started})]
        delta = {"type": "response.output_text.delta", **place, "delta": _SENTINEL}
        closing = [
            _event({"type": "response.output_text.done", **place, "text": answer.text}),
            _event({"type": "response.completed" if complete else "response.incomplete", "response": response}),
        ]
        return self.sse_response(call, opening, [_frame(delta)], answer.words, closing)

    async def stored_response(self, request: Request) -> Response:
        """GET and DELETE `/openai/v1/responses/{id}`: a response stored by this simulator, or 404."""
        self.record(request, b"")
        try:
            self.authorize(request.headers)
            response_id = request.path_params["response_id"]
            if response_id not in self.stored_responses:
                raise _ApiError(404, "404", f"Response with id '{response_id}' not found.")
        except _ApiError as error:
            return error.response()
        if request.method == "DELETE":
            del self.stored_responses[response_id]
            return _json({"id": response_id, "object": "response.deleted", "deleted": True})
        return _json(self.stored_responses[response_id])

    def models(self, call: _Call) -> Response:
        names = self.settings.deployments or DEFAULT_MODELS
        data = [{"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "simulator"} for name in names]
        return _json({"object": "list", "data": data})

    async def msi_token(self, request: Request) -> Response:
        """Emulate App Service's identity endpoint, which azure-identity calls with X-IDENTITY-HEADER."""
        expected = self.settings.identity_header
        supplied = request.headers.get("x-identity-header", "")
        if expected is not None and not hmac.compare_digest(supplied.encode(), expected.encode()):
            return _json({"statusCode": 401, "message": "Invalid or missing X-IDENTITY-HEADER."}, 401)
        resource = request.query_params.get("resource")
        if not resource:
            return _json({"statusCode": 400, "message": "The 'resource' query parameter is required."}, 400)
        token = f"sim-mi-{len(self.tokens) + 1}"
        expires_on = int(time.time()) + self.settings.token_lifetime_s
        self.tokens[token] = expires_on
        issued = {"access_token": token, "expires_on": str(expires_on), "token_type": "Bearer"}
        return _json({**issued, "resource": resource})

    async def faults(self, request: Request) -> Response:
        """POST arms a fault for the next `count` data requests; DELETE disarms it."""
        if request.method == "DELETE":
            self.fault, self.fault_remaining = None, 0
            return Response(status_code=204)
        try:
            fault, count = _fault_from_spec(self.parse_json(await request.body()))
        except _ApiError as error:
            return error.response()
        self.fault, self.fault_remaining = fault, count
        armed = {"status": fault.status, "retry_after": fault.retry_after, "hang_s": fault.hang_s}
        return _json({**armed, "count": count})

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.records.clear()
            return Response(status_code=204)
        return _json(list(self.records))

    async def stats(self, request: Request) -> Response:
        return _json(
            {
                "requests": self.request_count,
                "msi_tokens_issued": len(self.tokens),
                "streams_open": self.streams_open,
                "streams_abandoned": self.streams_abandoned,
            }
        )

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok", "simulator": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in Azure's error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    message = "Resource not found" if exc.status_code == 404 else exc.detail
    return _json({"error": {"code": str(exc.status_code), "message": message}}, exc.status_code, exc.headers)


#: The request fields each operation has (strict mode answers 400 to any other).
_COMMON_FIELDS = frozenset({"model", "user", "stream", "temperature", "top_p", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})
_CHAT_FIELDS = _COMMON_FIELDS | frozenset(
    {
        "messages", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "response_format", "seed", "stop", "stream_options", "tools", "tool_choice",
        "parallel_tool_calls", "functions", "function_call", "data_sources", "prediction", "modalities", "audio",
        "reasoning_effort", "verbosity", "web_search_options", "user_security_context",
    }
)  # fmt: skip
_COMPLETIONS_FIELDS = _COMMON_FIELDS | frozenset(
    {"prompt", "best_of", "echo", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "max_tokens", "n", "seed", "stop", "stream_options", "suffix"}
)
_EMBEDDINGS_FIELDS = frozenset({"model", "input", "user", "encoding_format", "dimensions", "input_type"})
_RESPONSES_FIELDS = _COMMON_FIELDS | frozenset(
    {
        "input", "instructions", "max_output_tokens", "max_tool_calls", "tools", "tool_choice", "parallel_tool_calls",
        "previous_response_id", "conversation", "reasoning", "text", "truncation", "include", "background", "prompt",
        "top_logprobs",
    }
)  # fmt: skip


def build_app(settings: SimulatorSettings) -> Starlette:
    """Build an independent simulator app; each has its own faults, records and tokens."""
    simulator = _Simulator(settings)
    return Starlette(
        routes=simulator.routes(),
        middleware=[Middleware(_AzureHeaders, region=settings.region)],
        exception_handlers={HTTPException: _http_error},
    )


def serve(settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Run the simulator, saying loudly that it is not a real model so nobody mistakes its answers."""
    print(
        f"SIMULATED Azure OpenAI backend (not a real model) listening on http://{host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    app = build_app(settings)
    uvicorn.run(app, host=host, port=port, loop="auto", http="auto", access_log=False, log_level="warning")
