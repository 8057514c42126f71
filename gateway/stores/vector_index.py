"""The semantic cache's in-memory index of one partition: nearest entry by cosine distance (1 - dot product of
normalised float32 vectors), skipping expired entries.

Up to `EXACT_LIMIT` entries the search is one matrix-vector product. Beyond, that product is memory-bound: a
1536-dimension entry is 6 KiB, so 100k entries are 600 MiB to stream per lookup (about 40 ms on a 2-core
VM). The index therefore also keeps each entry's sign bits (192 bytes at 1536 dimensions), stored as bit
planes (one uint64 word of every entry per row, so each XOR runs over all entries at once). A lookup counts
differing sign bits (Hamming distance, which grows with the angle between two vectors), keeps the `RERANK`
closest live entries, and computes their exact cosine distances from the float32 rows. The answer is always
an exact distance: the coarse pass can only make a lookup miss the true nearest entry when more than `RERANK`
others differ from the query in fewer sign bits — `bench/semantic_cache.py` measures how often (recall).

The products are small and run on the event loop, so the entry points limit OpenBLAS to one thread
(`OPENBLAS_NUM_THREADS=1` unless set): its thread pool only adds millisecond stalls on a busy 2-core instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_LIMIT = 2048
RERANK = 64
_GROWTH = 1.5


@dataclass(frozen=True)
class Match:
    key: str
    distance: float
    payload: Any


class VectorIndex:
    """Vectors with a key, an expiry (epoch seconds) and a payload each; dimensions fixed by the first vector."""

    def __init__(self) -> None:
        self.dims = 0
        self._count = 0
        self._vectors = np.empty((0, 0), np.float32)
        self._planes = np.empty((0, 0), np.uint64)
        self._expires = np.empty(0, np.float64)
        self._keys: list[str] = []
        self._payloads: list[Any] = []
        self._slots: dict[str, int] = {}

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: str) -> bool:
        return key in self._slots

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (capacity included), payloads not counted."""
        return self._vectors.nbytes + self._planes.nbytes + self._expires.nbytes

    def add(self, key: str, vector: np.ndarray, expires: float, payload: Any) -> None:
        self.extend([key], vector.reshape(1, -1), np.array([expires]), [payload])

    def extend(self, keys: Sequence[str], vectors: np.ndarray, expires: np.ndarray, payloads: Sequence[Any]) -> None:
        """Add entries (rows of `vectors`); keys already present are skipped. Raises ValueError for vectors of
        other dimensions than the index's, or of length zero."""
        fresh = [i for i, key in enumerate(keys) if key not in self._slots]
        if len(fresh) != len(keys):
            vectors, expires = vectors[fresh], expires[fresh]
            keys, payloads = [keys[i] for i in fresh], [payloads[i] for i in fresh]
        if not keys:
            return
        if self.dims == 0:
            self.dims = vectors.shape[1]
        if vectors.ndim != 2 or vectors.shape[1] != self.dims:
            raise ValueError(f"Vectors of {vectors.shape[-1]} dimensions cannot join an index of {self.dims}.")
        normalised = _normalised(vectors)
        start, end = self._count, self._count + len(keys)
        self._reserve(end)
        self._vectors[start:end] = normalised
        self._planes[:, start:end] = _sign_words(normalised).T
        self._expires[start:end] = expires
        for offset, key in enumerate(keys):
            self._slots[key] = start + offset
        self._keys.extend(keys)
        self._payloads.extend(payloads)
        self._count = end

    def search(self, query: np.ndarray, now: float) -> Match | None:
        """The live entry nearest to `query`, or None when there is none (or `query` has other dimensions)."""
        count = self._count
        if count == 0 or query.shape != (self.dims,):
            return None
        q = _normalised(query.reshape(1, -1))[0]
        live = self._expires[:count] > now
        if count <= EXACT_LIMIT:
            scores = self._vectors[:count] @ q
            scores[~live] = -np.inf
            slot = int(np.argmax(scores))
            score = float(scores[slot])
            if score == -np.inf:
                return None
        else:
            hamming = self._hamming(q, count)
            hamming[~live] = np.iinfo(np.uint16).max
            closest = np.argpartition(hamming, RERANK)[:RERANK]
            candidates = closest[live[closest]]
            if candidates.size == 0:
                return None
            scores = self._vectors[candidates] @ q
            best = int(np.argmax(scores))
            slot, score = int(candidates[best]), float(scores[best])
        return Match(self._keys[slot], max(0.0, 1.0 - score), self._payloads[slot])

    def remove_expired(self, now: float) -> int:
        """Drop expired entries, compacting the arrays; returns how many."""
        count = self._count
        keep = np.flatnonzero(self._expires[:count] > now)
        removed = count - keep.size
        if removed:
            self._vectors, self._planes, self._expires = self._vectors[keep], self._planes[:, keep], self._expires[keep]
            self._keys = [self._keys[i] for i in keep]
            self._payloads = [self._payloads[i] for i in keep]
            self._slots = {key: slot for slot, key in enumerate(self._keys)}
            self._count = keep.size
        return removed

    def expired_count(self, now: float) -> int:
        return int(np.count_nonzero(self._expires[: self._count] <= now))

    def _hamming(self, q: np.ndarray, count: int) -> np.ndarray:
        words = _sign_words(q.reshape(1, -1))[0]
        distances = np.zeros(count, np.uint16)
        for plane, word in zip(self._planes, words):
            distances += np.bitwise_count(plane[:count] ^ word)
        return distances

    def _reserve(self, needed: int) -> None:
        capacity = self._vectors.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, int(capacity * _GROWTH), 64)
        vectors = np.empty((capacity, self.dims), np.float32)
        planes = np.empty((-(-self.dims // 64), capacity), np.uint64)
        expires = np.empty(capacity, np.float64)
        count = self._count
        if count:
            vectors[:count] = self._vectors[:count]
            planes[:, :count] = self._planes[:, :count]
            expires[:count] = self._expires[:count]
        self._vectors, self._planes, self._expires = vectors, planes, expires


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
        raise ValueError("An embedding of length zero (or with NaN values) cannot be compared.")
    return vectors / norms


def _sign_words(vectors: np.ndarray) -> np.ndarray:
    """Each row's sign bits, packed into uint64 words (rows padded with zero bits to a multiple of 64)."""
    rows, dims = vectors.shape
    words = -(-dims // 64)
    bits = np.zeros((rows, words * 64), dtype=bool)
    bits[:, :dims] = vectors > 0
    return np.packbits(bits, axis=1).view(np.uint64)
