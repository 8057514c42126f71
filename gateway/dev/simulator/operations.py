"""The Azure OpenAI operations the simulator answers: chat, completions, embeddings, audio, images, responses, models.

They run once the app's gates (auth, parsing, strict fields, deployment, faults) are behind them, as a mixin of
the app's state class (app.py), which owns the settings, stored responses and stream counters they use.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from gateway.dev.simulator.errors import ApiError, bad_request, json_response
from gateway.dev.simulator.faults import stream_fault
from gateway.dev.simulator.parsing import flag, float_header, input_texts, int_field, messages, multipart
from gateway.dev.simulator.settings import SimulatorSettings
from gateway.dev.simulator.streams import DONE, SENTINEL, event, frame, in_pieces, sse
from gateway.dev.simulator.texts import Answer, content_text, content_words, echo, embedding, last_user_text, word_count

DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")
#: How many requests the app records, and how many stored responses it keeps.
RECORD_LIMIT = 200
# A 1x1 transparent PNG: the smallest answer an image client can decode.
_PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_FINGERPRINT = "fp_simulated"
_NO_FILTER: dict[str, Any] = {"logprobs": None, "content_filter_results": {}}
_MODELS_CREATED = 1_700_000_000
_SPEECH_BYTES = 64 * 1024

#: The request fields each operation has (strict mode answers 400 to any other).
_COMMON_FIELDS = frozenset(
    {"model", "user", "stream", "temperature", "top_p", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)
CHAT_FIELDS = _COMMON_FIELDS | frozenset(
    {
        "messages", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "response_format", "seed", "stop", "stream_options", "tools", "tool_choice",
        "parallel_tool_calls", "functions", "function_call", "data_sources", "prediction", "modalities", "audio",
        "reasoning_effort", "verbosity", "web_search_options", "user_security_context",
    }
)  # fmt: skip
COMPLETIONS_FIELDS = _COMMON_FIELDS | frozenset(
    {
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "seed",
        "stop",
        "stream_options",
        "suffix",
    }
)
EMBEDDINGS_FIELDS = frozenset({"model", "input", "user", "encoding_format", "dimensions", "input_type"})
RESPONSES_FIELDS = _COMMON_FIELDS | frozenset(
    {
        "input", "instructions", "max_output_tokens", "max_tool_calls", "tools", "tool_choice", "parallel_tool_calls",
        "previous_response_id", "conversation", "reasoning", "text", "truncation", "include", "background", "prompt",
        "top_logprobs",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Call:
    """What a data-route handler needs once auth, parsing and faults are behind it."""

    request: Request
    deployment: str
    payload: dict[str, Any]
    body: bytes


Handler = Callable[[Call], Response]


def _ident(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


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


class Operations:
    """The data-route handlers; the state they read is declared here and set by the app's state class."""

    settings: SimulatorSettings
    #: Responses created with `store` (the default), by id, oldest first; at most `RECORD_LIMIT`.
    stored_responses: dict[str, dict[str, Any]]
    #: Streams being sent now, and streams the client (the gateway) closed before the end.
    streams_open: int
    streams_abandoned: int

    def token_delay_s(self, headers: Headers) -> float:
        return float_header(headers, "x-sim-token-ms", self.settings.token_ms) / 1000.0

    def chat(self, call: Call) -> Response:
        payload = call.payload
        history = messages(payload.get("messages"), "messages")
        prompt_tokens = sum(word_count(content_text(m.get("content"))) for m in history)
        limit = int_field(payload, "max_completion_tokens") or int_field(payload, "max_tokens")
        n = int_field(payload, "n") or 1
        tool = _forced_tool(payload)
        if tool is not None:
            arguments = orjson.dumps({"question": last_user_text(history)}).decode()
            answer = Answer(arguments.split(" "), "tool_calls", prompt_tokens, n)
        else:
            answer = echo("Simulated answer to:", last_user_text(history), prompt_tokens, limit, n)
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
            return json_response(
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
        token: dict[str, Any] = {"content": SENTINEL}
        if tool is not None:
            call_opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
            opening = {"role": "assistant", "content": None, "tool_calls": [call_opening]}
            token = {"tool_calls": [{"index": 0, "function": {"arguments": SENTINEL}}]}
        return self.stream(
            call,
            base,
            answer,
            opening=[chunk(i, opening, None) for i in range(n)],
            tokens=[chunk(i, token, None) for i in range(n)],
            closing=[chunk(i, {}, answer.finish_reason) for i in range(n)],
        )

    def completions(self, call: Call) -> Response:
        payload = call.payload
        prompts = input_texts(payload.get("prompt"), "prompt")
        n = int_field(payload, "n") or 1
        limit = int_field(payload, "max_tokens")
        answer = echo("Simulated completion of:", prompts[-1], sum(map(word_count, prompts)), limit, n)
        base = {"id": _ident("cmpl-"), "object": "text_completion", "created": int(time.time())}
        base["model"] = call.deployment
        if not payload.get("stream"):
            choice = {"text": answer.text, "finish_reason": answer.finish_reason, **_NO_FILTER}
            return json_response({**base, "choices": [{"index": i, **choice} for i in range(n)], "usage": answer.usage()})

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {**base, "choices": [{"index": index, "text": text, "finish_reason": finish, **_NO_FILTER}]}

        return self.stream(
            call,
            base,
            answer,
            opening=[],
            tokens=[chunk(i, SENTINEL, None) for i in range(n)],
            closing=[chunk(i, "", answer.finish_reason) for i in range(n)],
        )

    def stream(
        self,
        call: Call,
        base: dict[str, Any],
        answer: Answer,
        opening: list[dict[str, Any]],
        tokens: list[dict[str, Any]],
        closing: list[dict[str, Any]],
    ) -> StreamingResponse:
        """Assemble the SSE stream; with include_usage every chunk says usage null until the last."""
        options = call.payload.get("stream_options")
        ignored = flag(call.request.headers, "x-sim-ignore-stream-options", False)  # as some backends do
        include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and not ignored

        def events(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**c, "usage": None} for c in chunks] if include_usage else chunks

        tail = [event(c) for c in events(closing)]
        if include_usage:
            tail.append(event({**base, "choices": [], "usage": answer.usage()}))
        tail.append(DONE)
        return self.sse_response(call, [event(c) for c in events(opening)], [frame(c) for c in events(tokens)], answer.words, tail)

    def sse_response(
        self, call: Call, opening: list[bytes], frames: list[tuple[bytes, bytes]], words: list[str], closing: list[bytes]
    ) -> StreamingResponse:
        headers = call.request.headers
        body = sse(opening, frames, words, closing, self.token_delay_s(headers), stream_fault(headers))
        return StreamingResponse(self._tracked(body), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def _tracked(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Count open and abandoned streams, so tests can see that a client hang-up reaches the backend."""
        self.streams_open += 1
        finished = False
        try:
            async for sent in events:
                yield sent
            finished = True
        finally:
            self.streams_open -= 1
            self.streams_abandoned += not finished

    def embeddings(self, call: Call) -> Response:
        payload = call.payload
        texts = input_texts(payload.get("input"), "input")
        dims = self.settings.embedding_dims
        size = int_field(payload, "dimensions") or dims
        if size > dims:
            raise bad_request(f"'dimensions' must be at most {dims}.")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' must be 'float' or 'base64'.")
        data = [{"object": "embedding", "index": i, "embedding": embedding(content_words(t), dims, size, encoding)} for i, t in enumerate(texts)]
        usage = dict.fromkeys(("prompt_tokens", "total_tokens"), sum(map(word_count, texts)))
        return json_response({"object": "list", "data": data, "model": call.deployment, "usage": usage})

    def audio(self, verb: str, call: Call) -> Response:
        fields, upload = multipart(call.body, call.request.headers.get("content-type", ""))
        if upload is None:
            raise bad_request("'file' is a required property.")
        filename, data = upload
        text = f"simulated {verb} of {filename}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"
        if fields.get("response_format") == "text":
            return PlainTextResponse(text)
        return json_response({"text": text})

    def speech(self, call: Call) -> Response:
        text = call.payload.get("input")
        if not isinstance(text, str) or not text:
            raise bad_request("'input' is a required property.")
        digest = hashlib.sha256(text.encode()).digest()
        return StreamingResponse(in_pieces(digest * (_SPEECH_BYTES // len(digest)), 8), media_type="audio/mpeg")

    def images(self, call: Call) -> Response:
        prompt = call.payload.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise bad_request("'prompt' is a required property.")
        n = int_field(call.payload, "n") or 1
        if call.payload.get("response_format") == "b64_json":
            image = {"b64_json": _PNG_B64}
        else:
            image = {"url": f"https://simulator.invalid/images/{hashlib.sha256(prompt.encode()).hexdigest()[:32]}.png"}
        return json_response({"created": int(time.time()), "data": [{**image, "revised_prompt": prompt} for _ in range(n)]})

    def responses(self, call: Call) -> Response:
        payload = call.payload
        previous = payload.get("previous_response_id")
        if previous is not None and previous not in self.stored_responses:
            raise ApiError(404, "404", f"Previous response with id '{previous}' not found.")
        raw = payload.get("input")
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else messages(raw, "input")
        instructions = payload.get("instructions") if isinstance(payload.get("instructions"), str) else None
        prompt_tokens = sum(word_count(content_text(i.get("content"))) for i in items) + word_count(instructions or "")
        limit = int_field(payload, "max_output_tokens")
        answer = echo("Simulated answer to:", last_user_text(items), prompt_tokens, limit, 1)
        complete = answer.finish_reason == "stop"
        text = {"type": "output_text", "text": answer.text, "annotations": []}
        message = {"type": "message", "id": _ident("msg_"), "role": "assistant", "status": "completed"}
        usage = answer.usage()
        response_id = _ident("resp_")
        response: dict[str, Any] = {
            "id": response_id,
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
            self.stored_responses[response_id] = response
            while len(self.stored_responses) > RECORD_LIMIT:
                del self.stored_responses[next(iter(self.stored_responses))]
        if not payload.get("stream"):
            return json_response(response)
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        place = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        opening = [event({"type": "response.created", "response": started})]
        delta = {"type": "response.output_text.delta", **place, "delta": SENTINEL}
        closing = [
            event({"type": "response.output_text.done", **place, "text": answer.text}),
            event({"type": "response.completed" if complete else "response.incomplete", "response": response}),
        ]
        return self.sse_response(call, opening, [frame(delta)], answer.words, closing)

    def models(self, call: Call) -> Response:
        names = self.settings.deployments or DEFAULT_MODELS
        data = [{"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "simulator"} for name in names]
        return json_response({"object": "list", "data": data})
