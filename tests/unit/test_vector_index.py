"""The semantic cache's vector index: nearest live entry from quantised codes, how far its distances may be from
float32 ones, removal, the memory it reports, and eviction across indexes under a cap."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gateway.stores.vector_index import GROWTH, LOW_WATER, RERANK, VectorIndex, evict

#: The rounding bound the module docstring states for 1536 dimensions, with a margin.
DISTANCE_ERROR = 0.003


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def random_units(rng: np.random.Generator, count: int, dims: int = 1536) -> np.ndarray:
    vectors = rng.standard_normal((count, dims), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def filled(vectors: np.ndarray, expires: float = 1e9, prefix: str = "k") -> VectorIndex:
    index = VectorIndex()
    index.extend([f"{prefix}{i}" for i in range(len(vectors))], vectors, np.full(len(vectors), expires), list(range(len(vectors))))
    return index


def test_finds_the_nearest_live_entry_with_its_cosine_distance() -> None:
    index = VectorIndex()
    index.add("a", np.array([1, 0, 0], np.float32), 100.0, "A")
    index.add("b", np.array([0, 2, 0], np.float32), 100.0, "B")  # normalised on the way in
    index.add("a", np.array([0, 0, 1], np.float32), 100.0, "duplicate key: ignored")
    match = index.search(np.array([1, 1, 0], np.float32) * 3, now=50.0)
    assert match is not None and match.key in ("a", "b") and match.distance == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)
    match = index.search(unit(0.1, 1, 0), now=50.0)
    assert match is not None and (match.key, match.payload) == ("b", "B")
    assert match.distance == pytest.approx(1 - float(unit(0.1, 1, 0) @ unit(0, 1, 0)), abs=1e-6)
    assert index.search(unit(0.1, 1, 0), now=100.0) is None  # both expired
    assert index.search(unit(1, 0), now=0.0) is None  # other dimensions: nothing to compare
    assert len(index) == 2 and "a" in index and "c" not in index


def test_expiry_is_rounded_down_to_the_second_never_up() -> None:
    index = VectorIndex()
    index.add("a", unit(1, 0), 100.9, None)
    assert index.search(unit(1, 0), now=99.99) is not None
    assert index.search(unit(1, 0), now=100.0) is None
    assert index.expired_count(now=100.0) == 1


def test_refuses_other_dimensions_zero_vectors_and_keys_twice_in_one_batch() -> None:
    index = VectorIndex()
    index.add("a", unit(1, 0, 0), 1.0, None)
    with pytest.raises(ValueError, match="3"):
        index.add("b", unit(1, 0), 1.0, None)
    with pytest.raises(ValueError, match="length zero"):
        index.add("c", np.zeros(3, np.float32), 1.0, None)
    with pytest.raises(ValueError, match="at most 65535"):
        VectorIndex().add("d", np.ones(70_000, np.float32), 1.0, None)
    index.extend(["e", "e", "a"], np.stack([unit(0, 1, 0), unit(0, 0, 1), unit(0, 1, 1)]), np.full(3, 9.0), ["first", "second", "third"])
    assert len(index) == 2 and index.search(unit(0, 1, 0), now=0.0).payload == "first"  # type: ignore[union-attr]


def test_distances_stay_within_the_rounding_bound_of_float32_ones() -> None:
    rng = np.random.default_rng(3)
    entries = random_units(rng, 300)
    index = filled(entries)
    for i in range(0, 300, 10):  # a near-duplicate of each tenth entry, at distances up to 0.3
        noise = random_units(rng, 1)[0]
        query = entries[i] + noise * rng.uniform(0, 0.8)
        match = index.search(query, now=0.0)
        exact = 1 - float(entries[i] @ (query / np.linalg.norm(query)))
        assert match is not None and match.key == f"k{i}" and abs(match.distance - exact) < DISTANCE_ERROR


def test_rerank_is_exact_enough_to_order_close_candidates() -> None:
    """Two entries 0.004 apart in distance from the query: the rerank must not swap them."""
    rng = np.random.default_rng(5)
    base = random_units(rng, 1)[0]
    side = random_units(rng, 1)[0]
    side -= (side @ base) * base
    side /= np.linalg.norm(side)

    def at(distance: float) -> np.ndarray:
        return base * (1 - distance) + side * np.sqrt(1 - (1 - distance) ** 2)

    index = filled(np.stack([at(0.06), at(0.056), *random_units(rng, 200)]))
    match = index.search(base, now=0.0)
    assert match is not None and match.key == "k1"


def test_large_index_skips_expired_near_duplicates_that_outnumber_the_rerank() -> None:
    rng = np.random.default_rng(7)
    count, dims = 4000, 256
    vectors = rng.standard_normal((count, dims)).astype(np.float32)
    expires = np.full(count, 1000.0)
    target = vectors[123] / np.linalg.norm(vectors[123])
    # More expired near-copies of the target than the coarse pass keeps: they must not hide the live one.
    for i in range(RERANK * 2):
        vectors[i + 1000] = target + rng.standard_normal(dims).astype(np.float32) * 0.001
        expires[i + 1000] = 10.0
    index = VectorIndex()
    index.extend([f"k{i}" for i in range(count)], vectors, expires, list(range(count)))
    query = target + rng.standard_normal(dims).astype(np.float32) * 0.02
    match = index.search(query, now=20.0)
    exact = 1 - float(target @ (query / np.linalg.norm(query)))
    assert match is not None and match.key == "k123" and match.distance == pytest.approx(exact, abs=DISTANCE_ERROR)
    assert index.remove_expired(now=20.0) == RERANK * 2 and len(index) == count - RERANK * 2
    assert index.search(query, now=20.0).key == "k123"  # type: ignore[union-attr]
    index.add("new", -target, 1000.0, "new")  # still growable after removal
    assert index.search(-target, now=20.0).key == "new"  # type: ignore[union-attr]


def test_many_identical_entries_still_answer() -> None:
    """Every entry ties in the coarse pass: the rerank takes a bounded share of them and finds the match."""
    index = filled(np.tile(unit(*range(1, 65)), (1000, 1)))
    match = index.search(unit(*range(1, 65)), now=0.0)
    assert match is not None and match.distance < 1e-3


def test_every_entry_keeps_its_vector_and_payload_through_growth_and_removal() -> None:
    rng = np.random.default_rng(11)
    vectors = random_units(rng, 600, dims=96)
    index = VectorIndex()
    for start in range(0, 600, 7):  # many small additions: the arrays grow in place many times
        stop = min(start + 7, 600)
        index.extend([f"k{i}" for i in range(start, stop)], vectors[start:stop], np.arange(start, stop, dtype=float), list(range(start, stop)))
    assert index.remove_expired(now=299.0) == 300  # expiries 0..299 are gone; the last entries fill their slots
    assert len(index) == 300 and "k0" not in index and "k299" not in index and "k300" in index
    for i in range(300, 600, 13):
        match = index.search(vectors[i], now=299.0)
        assert match is not None and (match.key, match.payload) == (f"k{i}", i) and match.distance < 1e-3
    index.add("k0", vectors[0], 1e9, "back")  # a removed key can come back
    assert index.search(vectors[0], now=299.0).payload == "back"  # type: ignore[union-attr]


def test_nbytes_is_what_the_index_holds_and_a_quarter_of_float32() -> None:
    rng = np.random.default_rng(13)
    vectors = random_units(rng, 500)
    keys = [f"{1_760_000_000_000 + i:013d}-{i:08x}" for i in range(2000)]
    tracemalloc.start()
    index = VectorIndex(lambda payload: 0)
    for start in range(0, 2000, 500):
        index.extend(keys[start : start + 500], vectors, np.full(500, 1e9), [None] * 500)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert index.nbytes == pytest.approx(held, rel=0.05)
    assert index.nbytes < 2000 * 1536 * 4 / 4 * GROWTH  # float32 vectors alone take four times as much
    before = index.nbytes
    index.remove_expired(now=2e9)
    assert index.nbytes < before / 100  # removal gives the memory back


def test_eviction_drops_the_least_recently_used_across_indexes_down_to_the_low_water_mark() -> None:
    rng = np.random.default_rng(17)
    first, second = VectorIndex(), VectorIndex()
    for index, prefix, offset in ((first, "a", 0), (second, "b", 50)):
        # Stored at 1000 + offset + i: the second index's entries are all newer than the first's.
        count = 50
        index.extend(
            [f"{prefix}{i}" for i in range(count)],
            random_units(rng, count, 64),
            np.full(count, 1e9),
            [None] * count,
            1000.0 + offset + np.arange(count),
        )
    hit = first.search(first_vector := rng.standard_normal(64).astype(np.float32), now=5000.0, threshold=2.0)
    missed = first.search(-first_vector, now=5000.0, threshold=0.0)  # not within the threshold: not a hit
    assert hit is not None and missed is not None and hit.key != missed.key
    total = first.nbytes + second.nbytes
    assert evict([first, second], total) == 0  # within the cap: nothing happens
    cap = int(total * 0.7)
    dropped = evict([first, second], cap)
    assert dropped > 0 and first.nbytes + second.nbytes <= cap * LOW_WATER
    assert hit.key in first  # hit recently: kept although stored first
    assert missed.key not in first  # only looked at: as old as when it was stored
    assert len(second) == 50  # newer than everything that went
    assert all(f"a{i}" not in first for i in range(10) if f"a{i}" != hit.key)  # the oldest went first


def test_eviction_can_empty_an_index_which_then_refills() -> None:
    rng = np.random.default_rng(19)
    index = filled(random_units(rng, 40, 32))
    assert evict([index], 100) == 40 and len(index) == 0 and index.search(random_units(rng, 1, 32)[0], now=0.0) is None
    index.add("again", unit(*range(1, 33)), 1e9, None)
    assert index.search(unit(*range(1, 33)), now=0.0).key == "again"  # type: ignore[union-attr]
