"""Semantic-cache entries as Table Storage rows: one entity per cached answer.

PartitionKey is the cache partition (tenant, vary-by and embeddings source), RowKey a random id; the embedding is
little-endian float32 bytes and the answer zlib-compressed, each split over binary properties of at most 64 KiB
(`Embedding`, `Embedding1`, …; `Answer`, `Answer1`, …); `ExpiresAt` drives cleanup; the answer's status and token
counts ride along, so a hit can report what it saved.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from policies.semantic_cache import CachedAnswer
from policies.usage import Usage

PROPERTY_BYTES = 64 * 1024
#: Binary data per entity: 1 MiB less room for keys, names and the other properties.
MAX_ENTITY_BINARY = 1024 * 1024 - 16 * 1024
#: What an `Entry` holds besides its answer's bytes (itself, its usage, the bytes object's header), as measured.
ENTRY_OBJECT_BYTES = 370


@dataclass(frozen=True)
class Entry:
    """What an index keeps per entry: the answer (compressed), its status, and what it used."""

    status: int
    answer: bytes
    usage: Usage

    def cached_answer(self) -> CachedAnswer:
        return CachedAnswer(self.status, zlib.decompress(self.answer), self.usage)

    def nbytes(self) -> int:
        return len(self.answer) + ENTRY_OBJECT_BYTES


def split_binary(name: str, data: bytes) -> dict[str, bytes]:
    """`data` as binary properties of at most 64 KiB: `name`, `name1`, `name2`, …"""
    pieces = [data[start : start + PROPERTY_BYTES] for start in range(0, len(data), PROPERTY_BYTES)] or [b""]
    return {name + (str(i) if i else ""): piece for i, piece in enumerate(pieces)}


def join_binary(entity: Mapping[str, Any], name: str) -> bytes:
    parts = [bytes(entity[name])]
    index = 1
    while (piece := entity.get(f"{name}{index}")) is not None:
        parts.append(bytes(piece))
        index += 1
    return b"".join(parts)


def encode_entity(partition: str, row_key: str, vector: np.ndarray, entry: Entry, expires: float) -> dict[str, Any] | None:
    """The table entity for an entry, or None when it exceeds what one entity may hold."""
    embedding = np.asarray(vector, dtype="<f4").tobytes()
    if len(embedding) + len(entry.answer) > MAX_ENTITY_BINARY:
        return None
    return {
        "PartitionKey": partition,
        "RowKey": row_key,
        "ExpiresAt": datetime.fromtimestamp(expires, UTC),
        "Status": entry.status,
        "PromptTokens": entry.usage.prompt,
        "CompletionTokens": entry.usage.completion,
        "TotalTokens": entry.usage.total,
        **split_binary("Embedding", embedding),
        **split_binary("Answer", entry.answer),
    }


def decode_entity(entity: Mapping[str, Any]) -> tuple[str, np.ndarray, float, Entry]:
    """(row key, embedding, expiry as epoch seconds, entry) of a stored entity."""
    usage = Usage(prompt=_int(entity.get("PromptTokens")), completion=_int(entity.get("CompletionTokens")), total=_int(entity.get("TotalTokens")))
    vector = np.frombuffer(join_binary(entity, "Embedding"), dtype="<f4")
    expires: datetime = entity["ExpiresAt"]
    return entity["RowKey"], vector, expires.timestamp(), Entry(_int(entity.get("Status")) or 200, join_binary(entity, "Answer"), usage)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
