"""Semantic caching, the request side: what is embedded, which partition a request may see, which answers may
be stored, and how a cached answer is replayed. Pure functions over request and answer bodies; embeddings,
storage and the vector index are the gateway's, behind `SemanticCache`.

**What is embedded.** Chat completions: the messages in order, one line per message, `"<role>: <text>"`, where
`<text>` is the message's text (its text parts joined by newlines when the content is a list of parts). With
`ignore-system-messages`, `system` and `developer` messages are left out. Completions: the prompt (a string,
or a list holding one string; several prompts or token arrays are not cached). A text longer than
`MAX_PROMPT_CHARS` (32,768 characters, more than the 8,192 tokens an OpenAI embeddings model takes) is not
cached, nor is a request whose other fields nest deeper than a fingerprint can be written (254 levels): both
bypass the cache without calling the embeddings backend.

**The partition.** A request only ever sees entries of its own partition, a hash of:

* the tenant: the subscription id, or the product id when `GATEWAY_SEMANTIC_CACHE_SCOPE=product`;
* the deployment and the operation (chat or completions);
* the request's *fingerprint*: every body field except the prompt itself and those that cannot change the
  answer (`stream`, `stream_options`, `user`) — so temperature, top_p, seed, n, max_tokens, stop, penalties,
  response_format, tools, tool_choice, functions, data_sources … all partition — plus the system messages
  when they are ignored for similarity, plus whatever of the embedded messages is not their text (names,
  tool calls, tool call ids, image and audio parts);
* the `vary-by` values.

`vary-by` can only narrow a partition: the tenant is always part of it. A streamed and a buffered request
share a partition, since a cached answer is replayed either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from policies.context import Context
from policies.errors import PolicyResponse
from policies.usage import Usage

CHAT_OPERATIONS = frozenset({"ChatCompletions_Create", "createChatCompletion"})
COMPLETION_OPERATIONS = frozenset({"Completions_Create", "createCompletion"})
SYSTEM_ROLES = frozenset({"system", "developer"})
#: Body fields that never change the answer; everything else is in the fingerprint.
NEUTRAL_FIELDS = frozenset({"messages", "prompt", "stream", "stream_options", "user"})
#: The longest text that is embedded; longer prompts are not cached (see the module docstring).
MAX_PROMPT_CHARS = 32_768


@dataclass(frozen=True)
class CachePrompt:
    """What a cacheable request contributes to a lookup."""

    kind: str
    #: The text that is embedded.
    text: str
    #: What `max-message-count` counts: the embedded messages (1 for completions).
    message_count: int
    #: Hash of everything besides the embedded text that changes the answer.
    fingerprint: str
    stream: bool
    include_usage: bool


def cache_prompt(operation_id: str, body: bytes, ignore_system_messages: bool) -> CachePrompt | None:
    """The request as the cache sees it, or None when it cannot be cached (not JSON, an unsupported operation,
    several prompts, logprobs — which a replay cannot reproduce)."""
    if operation_id in CHAT_OPERATIONS:
        kind = "chat"
    elif operation_id in COMPLETION_OPERATIONS:
        kind = "completions"
    else:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("logprobs") or payload.get("top_logprobs"):
        return None
    shape: list[Any] = []
    ignored: list[Any] = []
    if kind == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return None
        lines = []
        for message in messages:
            if ignore_system_messages and message.get("role") in SYSTEM_ROLES:
                ignored.append(message)
                continue
            text, other_parts = _content(message.get("content"))
            lines.append(f"{message.get('role')}: {text}")
            shape.append({**{k: v for k, v in message.items() if k != "content"}, "content-parts": other_parts})
        if not lines:
            return None
        text, count = "\n".join(lines), len(lines)
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            return None
        text, count = prompt, 1
    if len(text) > MAX_PROMPT_CHARS:
        return None
    material = {"params": {k: v for k, v in payload.items() if k not in NEUTRAL_FIELDS}, "system": ignored, "shape": shape}
    try:
        fingerprint = _digest(material)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (parsing accepts more)
        return None
    options = payload.get("stream_options")
    return CachePrompt(
        kind=kind,
        text=text,
        message_count=count,
        fingerprint=fingerprint,
        stream=payload.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def tenant(context: Context, scope: str) -> str | None:
    """Whose entries a request may see: its subscription's, or its product's with scope "product" (falling back
    to the subscription when it has no product). None without a subscription: nothing is cached then."""
    if context.Subscription is None:
        return None
    if scope == "product" and context.Product is not None:
        return f"product:{context.Product.Id}"
    return f"subscription:{context.Subscription.Id}"


def partition_key(tenant: str, deployment: str, prompt: CachePrompt, vary_by: Iterable[str]) -> str:
    """The request's cache partition: 40 hex digits (a Table Storage PartitionKey as is)."""
    return _digest([tenant, deployment, prompt.kind, prompt.fingerprint, list(vary_by)])[:40]


def storable(status: int, body: bytes, any_status: bool) -> bool:
    """Whether an answer may be cached: status 200 (any status with `cache-response`), every choice finished
    with `stop`, no tool or function calls, no content-filter hit on the prompt or the completion."""
    if status != 200 and not any_status:
        return False
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(payload, dict):
        return False
    if status != 200:
        error = payload.get("error")
        return not (isinstance(error, dict) and (error.get("code") == "content_filter" or _filtered_error(error)))
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") != "stop":
            return False
        message = choice.get("message")
        if isinstance(message, dict) and (message.get("tool_calls") or message.get("function_call")):
            return False
        if _filter_hit(choice.get("content_filter_results")):
            return False
    prompt_results = payload.get("prompt_filter_results") or ()
    return not any(isinstance(r, dict) and _filter_hit(r.get("content_filter_results")) for r in prompt_results)


def with_usage(body: bytes, usage: Usage | None) -> bytes:
    """The answer with a `usage` object (a streamed answer has one only if the stream reported it)."""
    if usage is None:
        return body
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(payload, dict) or isinstance(payload.get("usage"), dict) or "choices" not in payload:
        return body
    payload["usage"] = {"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.total}
    return orjson.dumps(payload)


@dataclass(frozen=True)
class CachedAnswer:
    status: int
    #: The answer as JSON (a streamed answer is stored assembled into its non-streaming form).
    body: bytes
    usage: Usage


def replay(answer: CachedAnswer, stream: bool, include_usage: bool) -> PolicyResponse:
    """The cached answer as the client asked for it: JSON, or for `stream: true` the SSE events the backend sends —
    per choice a role chunk, a content chunk and a finish chunk, then a usage chunk with `include_usage`, then
    `data: [DONE]`."""
    if not stream or answer.status != 200:
        return PolicyResponse(answer.status, answer.body, [("content-type", "application/json")])
    events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in sse_chunks(orjson.loads(answer.body), include_usage)]
    events.append(b"data: [DONE]\n\n")
    return PolicyResponse(200, b"".join(events), [("content-type", "text/event-stream"), ("cache-control", "no-cache")])


def sse_chunks(payload: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    chat = payload.get("object") == "chat.completion"
    base: dict[str, Any] = {key: payload[key] for key in ("id", "created", "model", "system_fingerprint") if key in payload}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    if include_usage:
        base["usage"] = None  # as the backend does: every chunk says null until the usage chunk
    chunks: list[dict[str, Any]] = []
    for choice in payload.get("choices") or ():
        index, finish = choice.get("index", 0), choice.get("finish_reason")
        if chat:
            message = choice.get("message") or {}
            deltas = [{"role": message.get("role") or "assistant", "content": ""}]
            if message.get("content"):
                deltas.append({"content": message["content"]})
            pieces = [({"delta": delta}, None) for delta in deltas] + [({"delta": {}}, finish)]
        else:
            pieces = [({"text": choice["text"]}, None)] if choice.get("text") else []
            pieces.append(({"text": ""}, finish))
        for piece, finish_reason in pieces:
            chunks.append({**base, "choices": [{"index": index, **piece, "finish_reason": finish_reason, "logprobs": None}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": payload.get("usage")})
    return chunks


@dataclass(frozen=True)
class CacheQuery:
    partition: str
    #: What is embedded.
    text: str
    embeddings_backend_id: str
    #: Hit iff the cosine distance to the nearest entry is at most this.
    threshold: float


@dataclass(frozen=True)
class CacheLookup:
    #: "HIT", "MISS" or "BYPASS" (the lookup failed or timed out: the request goes to the backend).
    outcome: str
    #: Cosine distance to the nearest live entry, when there was one.
    distance: float | None = None
    answer: CachedAnswer | None = None
    #: On a miss: what storing this request's answer needs. Opaque to statements.
    ticket: object | None = None


class SemanticCache(Protocol):
    @property
    def scope(self) -> str:
        """ "subscription" or "product": whose entries a request may see (`GATEWAY_SEMANTIC_CACHE_SCOPE`)."""

    async def lookup(self, context: Context, query: CacheQuery) -> CacheLookup:
        """Embed `query.text` and search its partition; never raises and never takes much longer than the
        gateway's cache timeout (BYPASS instead)."""

    def store(self, ticket: object, answer: CachedAnswer, ttl_seconds: float) -> None:
        """Store an answer for a missed lookup's prompt, in the background (the client is not kept waiting)."""


def _content(content: object) -> tuple[str, list[Any]]:
    """A message's text, and its parts that are not text (images, audio, …)."""
    if isinstance(content, str):
        return content, []
    if content is None:
        return "", []
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)]
        others = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))]
        return "\n".join(texts), others
    return "", [content]


def _filter_hit(results: object) -> bool:
    """True when a content-filter result blocked or flagged something."""
    if not isinstance(results, dict):
        return False
    return any(isinstance(r, dict) and (r.get("filtered") is True or r.get("detected") is True) for r in results.values())


def _filtered_error(error: dict[str, Any]) -> bool:
    inner = error.get("innererror")
    return isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"


def _digest(material: object) -> str:
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
