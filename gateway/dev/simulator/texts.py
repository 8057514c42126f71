"""What the simulated model says: answers that echo the question, and embeddings that are hashed bags of words.

Embeddings drop stop words and a plural `s` and sort what is left, so paraphrases of one question land on the
same vector (what the semantic cache needs to be tested), and hash with hashlib, so vectors are stable across
processes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_COMPONENTS_PER_WORD = 8
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
class Answer:
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


def echo(prefix: str, question: str, prompt_tokens: int, limit: int | None, n: int) -> Answer:
    """Echo the question so tests can tell answers apart; truncate like a max-token limit would."""
    words = [*prefix.split(), *question.split()]
    truncated = limit is not None and len(words) > limit
    return Answer(words[:limit] if truncated else words, "length" if truncated else "stop", prompt_tokens, n)


def word_count(text: str) -> int:
    return len(text.split())


def content_text(content: object) -> str:
    """Message content is a string or a list of parts; only the parts' text counts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


@lru_cache(maxsize=65536)
def _word_components(word: str, dims: int) -> tuple[tuple[int, float], ...]:
    """Hash a word to a few signed axes; hashlib keeps vectors stable across processes."""
    digest = hashlib.blake2b(word.encode(), digest_size=4 * _COMPONENTS_PER_WORD).digest()
    chunks = (digest[i : i + 4] for i in range(0, len(digest), 4))
    return tuple((int.from_bytes(c[:3], "little") % dims, 1.0 if c[3] & 1 else -1.0) for c in chunks)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> tuple[str, ...]:
    """Reduce a text to its meaning-bearing words, so paraphrases collapse to the same sorted bag."""
    stems = (_stem(w) for w in _WORD_RE.findall(text.lower()))
    return tuple(sorted(w for w in stems if w not in _STOP_WORDS))


def vector(words: tuple[str, ...], dims: int, size: int) -> list[float]:
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
def embedding(words: tuple[str, ...], dims: int, size: int, encoding: str) -> tuple[float, ...] | str:
    """Cache whole encoded vectors (immutable, as they are shared): benchmarks repeat the same inputs."""
    values = vector(words, dims, size)
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{size}f", *values)).decode("ascii")
    return tuple(values)
