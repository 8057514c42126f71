"""The semantic cache's in-memory index of one partition: the nearest live entry by cosine distance, in under a
quarter of the memory of float32 vectors; and eviction across partitions under one memory cap.

**Codes.** A vector is normalised, scaled so that its largest component is ±63, and rounded: 7 bits per
component (the top 7 bits of an int8), plus the inverse norm of the rounded vector. Nothing else of it is
kept. The bits are stored as planes: the sign bits as one array per 64-component word over all entries (what
the coarse pass scans), the other six planes entry by entry (what the rerank gathers). At 1536 dimensions that
is 1,344 bytes instead of 6,144; with expiry, last use, size, key and container slots an entry takes 1.46 KiB,
so 14.3 MiB per 10k entries at exact fit and at most 10 % more while the arrays grow (15.3 MiB measured at
100k), plus the payloads (the answers). Arrays grow in place (realloc moves pages instead of copying them, so
a large index is never held twice) and removal moves the last entries into the holes, so both cost in
proportion to what is added or removed.

**Search** has two passes. The coarse pass counts the sign bits that differ from the query's (Hamming
distance, which grows with the angle between two vectors): over the first half of the words for all live
entries, keeping a `SHORTLIST` of the closest, then over all words for those, keeping the `RERANK` closest
(more when several tie at a cut, up to twice as many). The rerank rebuilds their codes from the planes and
scores each by its cosine with the float32 query: the distance returned is that score's, which differs from
the float32 distance only by the rounding of the stored vector (measured at 1536 dimensions: at most 0.0025,
on average 0.0002). So a lookup's decision can differ from an exact float32 scan's in two ways: more than
`SHORTLIST` (first step) or `RERANK` (second) entries share more sign bits with the query than its true
nearest entry does, or that entry's distance lies within the rounding of the threshold.

`bench/semantic_cache.py` measures the decision (a hit on the same entry, or a miss) against an exact float32
scan at 10k and 100k entries, over the simulator's embeddings, random unit vectors and a narrow cone (as older
embedding models produce), each with near-duplicate queries: at thresholds 0.02-0.2, at least 99.7 % agree,
and every disagreement seen was a distance within 0.002 of the threshold. A threshold above the distance of
unrelated entries (~0.26 in the cone) makes nearly every lookup a hit on one of many almost equidistant
entries, and which one the index returns is then arbitrary (76-80 % the exact scan's at 0.3 in the cone).
Sign bits say little about vectors whose components are mostly zero or of one sign, which no embedding model
produces: the coarse pass keeps an arbitrary share of the ties. Lookups take ~0.5 ms at 10k entries and
~2-2.5 ms at 100k on one thread, where the exact float32 scan took ~3.5 ms and ~35-55 ms. The products are
small and run on the event loop, so the entry points limit OpenBLAS to one thread (`OPENBLAS_NUM_THREADS=1`
unless set).

**Memory cap.** `nbytes` is what an index holds: its arrays (capacity included), its keys and, through
`payload_bytes`, its payloads (within 1 % of what tracemalloc sees). `evict` keeps a set of indexes under a
byte cap: past it, it drops the entries least recently hit (never hit: since stored) across all of them
until they hold `LOW_WATER` of the cap, so that a round (~15 ms for 15k entries of a 100k index) comes once
per tenth of the cap.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Bits per stored component: a code in -63..63, as the top 7 bits of an int8.
BITS = 7
_SHIFT = 8 - BITS
_LEVELS = 2 ** (BITS - 1) - 1
#: Entries the coarse pass keeps after its first step (half the sign bits), and after its second (all of them).
SHORTLIST = 1024
RERANK = 64
#: Arrays grow by this factor; eviction and expiry compact them to their entries.
GROWTH = 1.1
#: What `evict` brings a set of indexes down to, as a share of the cap.
LOW_WATER = 0.9
#: Per entry, besides its key and payload: a slot in the key set (amortised) and in the key and payload lists.
_CONTAINER_BYTES = 64
_MAX_SECONDS = 2**32 - 1
#: For plane p, each byte value spread to 8 bytes (a uint64) holding its bits in bit `_SHIFT + p`.
_SPREAD = (
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").view(np.uint64)[:, 0]
    << np.arange(_SHIFT, 8, dtype=np.uint64)[:, None]
)
#: Rows quantised at a time: bounds the temporary arrays of a large `extend`.
_CHUNK = 256
#: Hamming distances are uint16.
MAX_DIMS = 2**16 - 1


@dataclass(frozen=True)
class Match:
    key: str
    distance: float
    payload: Any


class VectorIndex:
    """Vectors with a key, an expiry (epoch seconds) and a payload each; dimensions fixed by the first vector.

    `payload_bytes` says what a payload holds in memory (for the cap); by default its shallow size."""

    def __init__(self, payload_bytes: Callable[[Any], int] = sys.getsizeof) -> None:
        self._payload_bytes = payload_bytes
        self.dims = 0
        self._words = 0
        self._count = 0
        #: Per 64-component word, (capacity,): each entry's sign bits of those components (what a scan reads).
        self._signs: list[np.ndarray] = []
        #: (capacity, BITS - 1, words): bit `_SHIFT + p` of each code in plane p, an entry's planes together.
        self._magnitudes = np.empty((0, BITS - 1, 0), np.uint64)
        self._inverse_norms = np.empty(0, np.float32)
        self._expires = np.empty(0, np.uint32)
        #: When each entry was last hit or, never hit, stored (epoch seconds).
        self._used = np.empty(0, np.float64)
        #: What each entry holds outside the arrays: key, payload, container slots.
        self._outside = np.empty(0, np.uint32)
        self._outside_total = 0
        self._keys: list[str] = []
        self._payloads: list[Any] = []
        self._key_set: set[str] = set()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    @property
    def nbytes(self) -> int:
        """Memory held: the arrays (capacity included), keys and payloads. O(1): the cap checks it often."""
        return self._expires.shape[0] * self.row_bytes + self._outside_total

    @property
    def row_bytes(self) -> int:
        """Array bytes per entry: the bit planes, inverse norm, expiry, last use and outside size."""
        return self._words * 8 * BITS + 4 + 4 + 8 + 4

    def add(self, key: str, vector: np.ndarray, expires: float, payload: Any) -> None:
        self.extend([key], vector.reshape(1, -1), np.array([expires]), [payload])

    def extend(
        self, keys: Sequence[str], vectors: np.ndarray, expires: np.ndarray, payloads: Sequence[Any], stored: np.ndarray | None = None
    ) -> None:
        """Add entries (rows of `vectors`), stored at `stored` (epoch seconds; default now); keys already present
        are skipped. Raises ValueError for vectors of other dimensions than the index's, or of length zero."""
        fresh = _unseen(keys, self._key_set)
        if len(fresh) != len(keys):
            vectors, expires = vectors[fresh], expires[fresh]
            stored = None if stored is None else stored[fresh]
            keys, payloads = [keys[i] for i in fresh], [payloads[i] for i in fresh]
        if not keys:
            return
        dims = vectors.shape[-1]
        if vectors.ndim != 2 or not 0 < dims <= MAX_DIMS or dims != (self.dims or dims):
            raise ValueError(f"Vectors of {dims} dimensions cannot join an index of {self.dims or f'at most {MAX_DIMS}'}.")
        if not self.dims:
            self.dims, self._words = dims, -(-dims // 64)
            self._signs = [np.empty(0, np.uint64) for _ in range(self._words)]
            self._magnitudes = np.empty((0, BITS - 1, self._words), np.uint64)
        start, end = self._count, self._count + len(keys)
        self._reserve(end)
        for offset in range(0, len(keys), _CHUNK):
            self._encode(start + offset, vectors[offset : offset + _CHUNK])
        self._expires[start:end] = _seconds(expires)
        self._used[start:end] = time.time() if stored is None else stored
        outside = [sys.getsizeof(key) + self._payload_bytes(payload) + _CONTAINER_BYTES for key, payload in zip(keys, payloads)]
        self._outside[start:end] = outside
        self._outside_total += sum(outside)
        self._keys.extend(keys)
        self._payloads.extend(payloads)
        self._key_set.update(keys)
        self._count = end

    def search(self, query: np.ndarray, now: float, threshold: float | None = None) -> Match | None:
        """The live entry nearest to `query`, or None when there is none (or `query` has other dimensions).
        A match within `threshold` counts as a hit for eviction."""
        count = self._count
        if count == 0 or query.shape != (self.dims,):
            return None
        q = _normalised(query.reshape(1, -1))[0]
        live = self._expires[:count] > now
        if count <= RERANK:
            candidates = np.flatnonzero(live)
        else:
            candidates = self._closest(q, count, live)
        if candidates.size == 0:
            return None
        scores = (self._decode(candidates).astype(np.float32) @ q) * self._inverse_norms[candidates]
        best = int(np.argmax(scores))
        slot, distance = int(candidates[best]), max(0.0, 1.0 - float(scores[best]))
        if threshold is not None and distance <= threshold:
            self._used[slot] = now
        return Match(self._keys[slot], distance, self._payloads[slot])

    def remove_expired(self, now: float) -> int:
        """Drop expired entries, compacting the arrays; returns how many."""
        return self._drop(np.flatnonzero(self._expires[: self._count] <= now))

    def expired_count(self, now: float) -> int:
        return int(np.count_nonzero(self._expires[: self._count] <= now))

    def _drop(self, slots: np.ndarray) -> int:
        """Remove the entries at `slots` (ascending): the last entries move into their places and the arrays
        shrink in place, so the work is in proportion to what is removed. Returns how many were removed."""
        if slots.size == 0:
            return 0
        count = self._count - slots.size
        holes = slots[slots < count]
        movers = np.setdiff1d(np.arange(count, self._count), slots, assume_unique=True)
        self._outside_total -= int(self._outside[slots].sum(dtype=np.int64))
        self._key_set.difference_update(self._keys[slot] for slot in slots.tolist())
        for hole, mover in zip(holes.tolist(), movers.tolist()):
            self._keys[hole], self._payloads[hole] = self._keys[mover], self._payloads[mover]
        del self._keys[count:], self._payloads[count:]
        for array in self._arrays():
            array[holes] = array[movers]
            array.resize((count, *array.shape[1:]), refcheck=False)
        self._count = count
        return int(slots.size)

    def _encode(self, start: int, vectors: np.ndarray) -> None:
        """Quantise `vectors` into the rows from `start` (capacity reserved; keys and count are the caller's)."""
        codes = _codes(_normalised(vectors))
        end = start + len(codes)
        planes = _bit_planes(codes, self._words)
        for word, signs in enumerate(self._signs):
            signs[start:end] = planes[:, -1, word]
        self._magnitudes[start:end] = planes[:, :-1]
        self._inverse_norms[start:end] = 1.0 / np.linalg.norm(codes.astype(np.float32), axis=1)

    def _closest(self, q: np.ndarray, count: int, live: np.ndarray) -> np.ndarray:
        """About `RERANK` live entries whose sign bits differ least from `q`'s, in two steps: the first half of
        the words over all entries keeps a `SHORTLIST`, all words over that keep `RERANK`."""
        words = _packed(q.reshape(1, -1) < 0, self._words)[0]
        first = max(1, self._words // 2)
        distances = np.zeros(count, np.uint16)
        for signs, word in zip(self._signs[:first], words[:first]):
            distances += np.bitwise_count(signs[:count] ^ word)
        distances[~live] = first * 64 + 1
        shortlist = _fewest(distances, SHORTLIST)
        shortlist = shortlist[live[shortlist]]
        distances = distances[shortlist]
        for signs, word in zip(self._signs[first:], words[first:]):
            distances += np.bitwise_count(signs[shortlist] ^ word)
        return shortlist[_fewest(distances, RERANK)]

    def _decode(self, slots: np.ndarray) -> np.ndarray:
        """The int8 codes of the entries at `slots`, rebuilt from their bit planes: each plane's bytes (8
        components' bit each) spread through a table to 8 bytes with that bit in place."""
        signs = np.stack([word[slots] for word in self._signs], axis=1)
        planes = np.concatenate((self._magnitudes[slots], signs[:, None, :]), axis=1)
        plane_bytes = planes.view(np.uint8)
        codes = _SPREAD[0][plane_bytes[:, 0]]
        for plane in range(1, BITS):
            codes |= _SPREAD[plane][plane_bytes[:, plane]]
        return codes.view(np.int8)[:, : self.dims]

    def _reserve(self, needed: int) -> None:
        """Capacity for `needed` entries. Arrays grow in place (realloc, which moves pages rather than copying
        them), so growing a large index does not hold it twice; no view of them outlives a method."""
        capacity = self._expires.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, int(capacity * GROWTH))
        for array in self._arrays():
            array.resize((capacity, *array.shape[1:]), refcheck=False)

    def _arrays(self) -> list[np.ndarray]:
        return [*self._signs, self._magnitudes, self._inverse_norms, self._expires, self._used, self._outside]


def evict(indexes: Sequence[VectorIndex], max_bytes: int) -> int:
    """Keep `indexes` within `max_bytes` together: when they hold more, drop their least recently used entries
    (ties in no particular order) until they hold at most `LOW_WATER` of it; returns how many."""
    total = sum(index.nbytes for index in indexes)
    if total <= max_bytes:
        return 0
    used = np.concatenate([index._used[: len(index)] for index in indexes])
    entry_bytes = np.concatenate([index._outside[: len(index)].astype(np.int64) + index.row_bytes for index in indexes])
    order = np.argsort(used, kind="stable")
    victims = np.zeros(used.size, bool)
    victims[order[: int(np.searchsorted(np.cumsum(entry_bytes[order]), total - max_bytes * LOW_WATER)) + 1]] = True
    dropped, start = 0, 0
    for index in indexes:
        count = len(index)
        dropped += index._drop(np.flatnonzero(victims[start : start + count]))
        start += count
    return dropped


def _fewest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the `count` smallest `values` (small non-negative integers); all those tied at the last
    value when that makes at most twice as many. A histogram finds the cut in one pass, unlike a partition."""
    if values.size <= count:
        return np.arange(values.size)
    cut = int(np.searchsorted(np.cumsum(np.bincount(values)), count))
    chosen = np.flatnonzero(values <= cut)
    if chosen.size > 2 * count:
        chosen = chosen[np.argpartition(values[chosen], count)[:count]]
    return chosen


def _unseen(keys: Sequence[str], present: set[str]) -> list[int]:
    """Positions of the keys neither in `present` nor earlier in `keys`."""
    seen: set[str] = set()
    fresh = []
    for position, key in enumerate(keys):
        if key not in present and key not in seen:
            seen.add(key)
            fresh.append(position)
    return fresh


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
        raise ValueError("An embedding of length zero (or with NaN values) cannot be compared.")
    return vectors / norms


def _codes(normalised: np.ndarray) -> np.ndarray:
    """Each row scaled to ±`_LEVELS` at its largest component and rounded, in the top `BITS` bits of an int8."""
    peaks = np.abs(normalised).max(axis=1, keepdims=True)
    levels = np.rint(normalised * (_LEVELS / peaks)).astype(np.int8)
    return levels << _SHIFT


def _bit_planes(codes: np.ndarray, words: int) -> np.ndarray:
    """(rows, BITS, words): plane p holds bit `_SHIFT + p` of each code (the last plane its sign)."""
    unsigned = codes.view(np.uint8)
    return np.stack([_packed((unsigned >> (_SHIFT + plane)) & 1, words) for plane in range(BITS)], axis=1)


def _packed(bits: np.ndarray, words: int) -> np.ndarray:
    """(rows, words) uint64: each row's bits (0/1 or bool per component), 64 a word, zero-padded."""
    padded = np.zeros((bits.shape[0], words * 64), np.uint8)
    padded[:, : bits.shape[1]] = bits
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def _seconds(values: np.ndarray) -> np.ndarray:
    """Epoch seconds as uint32, rounded down (so an entry expires up to a second early, never late)."""
    return np.clip(np.floor(values), 0, _MAX_SECONDS).astype(np.uint32)
