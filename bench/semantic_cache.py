"""Semantic cache: the index's memory, its agreement with an exact float32 scan, and lookup time at 10k and
100k entries beside that exact scan; then a hit end to end.

    .venv/bin/python -m bench.semantic_cache [--queries 1000] [--exact-lookups 100] [--hits 300] [--skip-e2e]

1. Data, 1536 dimensions, one partition (entries + queries):
   * simulator: the simulator's own embeddings (hashed bags of words) of generated prompts; queries are stored
     prompts reworded (distance 0), with one word replaced, added or dropped (distance ~0.03-0.25), and 20 %
     unrelated prompts;
   * random: random unit vectors; queries are near-duplicates of stored ones at a distance uniform in 0-0.3,
     and 25 % unrelated vectors;
   * cone: vectors in a narrow cone (unrelated entries at cosine ~0.74, as with older embedding models, the
     hard case for a sign-bit pass), queries as for random.
2. Agreement: for each query, the index's decision (a hit on which entry, or a miss) at a threshold against
   that of an exact float32 scan; a hit on an entry at the very same exact distance as the nearest counts as
   the same. Top-1: the index returns an entry at the exact nearest distance, whatever the threshold.
3. Lookup time (wall clock, and the CPU time of the lookup's thread: on a shared machine the wall clock's p99 is
   mostly time the OS gave other processes): `VectorIndex.search` over all queries, and the exact float32 scan (a matrix-vector product over
   normalised float32 vectors, expired ones masked: the reference for agreement) over `--exact-lookups` of them.
4. Memory: what the index holds per 10k entries (tracemalloc: arrays, keys, containers), how `nbytes` (the
   number the memory cap uses) compares, float32 vectors alone, the answers (the payloads) separately, and how
   long one eviction round takes.
5. End to end: Azurite, the simulator and a gateway process with a lookup/store policy; a cached answer is
   asked for repeatedly. The gateway's `Server-Timing` gives its total and the embedding call's share; the
   process's resident memory afterwards is what an instance needs before any cache entries.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the gateway's entry points do; the imports below load numpy

import argparse
import asyncio
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import numpy as np

from bench.harness import API_VERSION, apply_policy, local_stack, rss_mib
from gateway.dev.simulator.texts import content_words, vector
from gateway.stores.semantic_cache_rows import Entry
from gateway.stores.vector_index import VectorIndex, evict
from policies.usage import Usage

DIMS = 1536
SIZES = (10_000, 100_000)
THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3)
COLUMNS = (8, 11, 7, 7, 9, 11, 8, 9, 8) + (8,) * len(THRESHOLDS)
FOREVER = 4e9
POLICY = """<policies><inbound><base />
  <azure-openai-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="sim" embeddings-backend-auth="system-assigned" />
</inbound><outbound><base /><azure-openai-semantic-cache-store duration="3600" /></outbound></policies>"""
VOCABULARY = [f"term{i}" for i in range(5000)]
T = TypeVar("T")


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def at_distance(rng: np.random.Generator, base: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Vectors at the given cosine distances from the rows of `base` (unit vectors)."""
    noise = rng.standard_normal(base.shape, dtype=np.float32)
    noise = unit(noise - (noise * base).sum(axis=1, keepdims=True) * base)
    cosine = (1 - distances)[:, None]
    return unit(base * cosine + noise * np.sqrt(1 - cosine**2))


def prompt(rng: np.random.Generator) -> list[str]:
    return [VOCABULARY[i] for i in rng.integers(0, len(VOCABULARY), rng.integers(4, 16))]


def embed(words: list[str]) -> np.ndarray:
    return np.array(vector(content_words(" ".join(words)), DIMS, DIMS), np.float32)


def reworded(rng: np.random.Generator, words: list[str]) -> list[str]:
    words = list(words)
    change = rng.integers(0, 4)
    if change == 0:  # the same words in another order, with stop words: the same embedding
        return ["please", "tell", "me", *reversed(words)]
    if change == 1:
        words[rng.integers(len(words))] = VOCABULARY[rng.integers(len(VOCABULARY))]
    elif change == 2:
        words.append(VOCABULARY[rng.integers(len(VOCABULARY))])
    elif len(words) > 1:
        words.pop(rng.integers(len(words)))
    return words


def simulator_data(rng: np.random.Generator, size: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    prompts = [prompt(rng) for _ in range(size)]
    asked = [reworded(rng, prompts[i]) for i in rng.integers(0, size, queries - queries // 5)]
    asked += [prompt(rng) for _ in range(queries // 5)]
    return np.stack([embed(p) for p in prompts]), np.stack([embed(p) for p in asked])


def spread_data(center: np.ndarray | None) -> Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]:
    """Random unit vectors (center None) or vectors in a narrow cone around `center`, with near-duplicate queries."""

    def make(rng: np.random.Generator, size: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
        def draw(count: int) -> np.ndarray:
            noise = unit(rng.standard_normal((count, DIMS), dtype=np.float32))
            return noise if center is None else unit(center * 0.85 + noise * 0.5)

        entries = draw(size)
        near = queries - queries // 4
        picked = entries[rng.integers(0, size, near)]
        return entries, np.concatenate([at_distance(rng, picked, rng.uniform(0, 0.3, near)), draw(queries // 4)])

    return make


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(function: Callable[[np.ndarray], T], queries: np.ndarray) -> tuple[list[float], list[float], list[T]]:
    """Milliseconds per call, wall clock and this thread's CPU (wall minus CPU is time the OS ran others), and results."""
    for query in queries[:20]:  # warm up
        function(query)
    wall, cpu, results = [], [], []
    for query in queries:
        start, start_cpu = time.perf_counter(), time.thread_time()
        results.append(function(query))
        cpu.append((time.thread_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return wall, cpu, results


def exact_nearest(entries: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(queries, entries) cosine similarities by float32 products, in blocks."""
    return np.concatenate([unit(queries[i : i + 256]) @ entries.T for i in range(0, len(queries), 256)])


def bench_index(queries: int, exact_lookups: int) -> None:
    rng = np.random.default_rng(42)
    cone = unit(rng.standard_normal(DIMS, dtype=np.float32))
    sets = (("simulator", simulator_data), ("random", spread_data(None)), ("cone", spread_data(cone)))
    print(f"index lookups, {DIMS} dimensions, one partition, {queries} queries per row; agreement with an exact float32 scan")
    print("  milliseconds per lookup (index, then the exact float32 scan) and agreement at each threshold")
    header = ("entries", "data", "p50", "p99", "CPU p99", "exact p50", "p99", "CPU p99", "top-1", *(f"@{t}" for t in THRESHOLDS))
    print("  " + "".join(f"{h:>{w}}" for h, w in zip(header, COLUMNS)))
    for size in SIZES:
        for name, make in sets:
            entries, asked = make(rng, size, queries)
            index = VectorIndex()
            index.extend([f"k{i}" for i in range(size)], entries, np.full(size, FOREVER), [None] * size)
            expires = np.full(size, FOREVER)
            index_ms, index_cpu, found_matches = timed(lambda q, index=index: index.search(q, 0.0), asked)
            matches = [match for match in found_matches if match is not None]
            assert len(matches) == len(asked)
            exact_ms, exact_cpu, _ = timed(lambda q, entries=entries, expires=expires: _exact_search(entries, expires, q), asked[:exact_lookups])
            similarity = exact_nearest(entries, asked)
            nearest = 1 - similarity.max(axis=1)
            chosen = 1 - similarity[np.arange(len(asked)), np.array([int(m.key[1:]) for m in matches])]
            found = np.array([m.distance for m in matches])
            same_entry = np.abs(chosen - nearest) < 1e-6
            agreement = [np.mean(np.where(nearest <= t, (found <= t) & same_entry, found > t)) for t in THRESHOLDS]
            times = [percentile(index_ms, 0.5), percentile(index_ms, 0.99), percentile(index_cpu, 0.99)]
            times += [percentile(exact_ms, 0.5), percentile(exact_ms, 0.99), percentile(exact_cpu, 0.99)]
            cells = [f"{size:,}", name, *(f"{t:.2f}" for t in times), *(f"{a:.1%}" for a in (same_entry.mean(), *agreement))]
            print(
                "  "
                + "".join(f"{c:>{w}}" for c, w in zip(cells, COLUMNS))
                + f"   (hits at 0.05: {np.mean(nearest <= 0.05):.0%}; distance error max {np.max(np.abs(found - chosen)):.4f})"
            )
            del entries, similarity


def _exact_search(vectors: np.ndarray, expires: np.ndarray, query: np.ndarray) -> tuple[int, float]:
    scores = vectors @ unit(query)
    scores[expires <= 0.0] = -np.inf
    slot = int(np.argmax(scores))
    return slot, 1 - float(scores[slot])


def answer_entry(i: int) -> Entry:
    text = f"Answer number {i}: " + " ".join(f"word{(i * 7 + j) % 5000}" for j in range(150))
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    body = json.dumps({"object": "chat.completion", "choices": [choice]})
    return Entry(200, zlib.compress(body.encode()), Usage(prompt=20, completion=150, total=170))


def bench_memory() -> None:
    """Memory as a table sync builds the index: page by page, keys made as entities arrive."""
    print("memory of one partition (tracemalloc; `nbytes` is what the memory cap counts)")
    rng = np.random.default_rng(1)
    page = 1000
    for size in SIZES:
        entries = [answer_entry(i) for i in range(size)]
        vectors = unit(rng.standard_normal((page, DIMS), dtype=np.float32))
        tracemalloc.start()
        index = VectorIndex(Entry.nbytes)
        for start in range(0, size, page):
            keys = [f"{1_760_000_000_000 + i:013d}-{i:08x}" for i in range(start, start + page)]
            index.extend(keys, vectors, np.full(page, FOREVER), entries[start : start + page])
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        answers = sum(entry.nbytes() for entry in entries)
        per_10k = 10_000 / size / 2**20
        print(
            f"  {size:>7,} entries: index {held * per_10k:5.1f} MiB per 10k (peak while loading {peak / 2**20:.0f} MiB in all),"
            f" float32 vectors alone {size * DIMS * 4 * per_10k:5.1f} MiB per 10k;"
            f" answers {answers * per_10k:4.1f} MiB per 10k ({answers / size:.0f} B each, {len(entries[0].answer)} compressed);"
            f" nbytes {index.nbytes / (held + answers):.3f} of index + answers"
        )
        started = time.perf_counter()
        dropped = evict([index], int(index.nbytes * 0.95))
        print(
            f"  {size:>7,} entries: one eviction round to 90 % of a cap 5 % below them: {dropped:,} entries in {(time.perf_counter() - started) * 1000:.0f} ms"
        )
        del index, entries


async def bench_hit(hits: int) -> None:
    with local_stack({"GATEWAY_POLICY_POLL_SECONDS": "0.3", "GATEWAY_LOCAL_QUEUE_WORKER": "false"}) as stack:
        apply_policy(stack.env, POLICY)
        url = f"{stack.gateway_url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
        headers = {"api-key": stack.subscription_key, "content-type": "application/json"}
        body = json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}]})
        direct_url = f"{stack.simulator_url}/openai/deployments/text-embedding-3-small/embeddings?api-version={API_VERSION}"
        async with aiohttp.ClientSession() as session:

            async def call() -> tuple[str, dict[str, float], float]:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    elapsed = (time.perf_counter() - start) * 1000
                    timing = {part.split(";")[0].strip(): float(part.split("dur=")[1]) for part in response.headers["server-timing"].split(",")}
                    return response.headers.get("x-semantic-cache", ""), timing, elapsed

            deadline = time.monotonic() + 15
            while (await call())[0] != "HIT":  # the policy loads, the first answer is stored
                if time.monotonic() > deadline:
                    raise RuntimeError("The gateway never answered from the cache.")
                await asyncio.sleep(0.2)
            totals, embeddings, without, client = [], [], [], []
            for _ in range(hits):
                outcome, timing, elapsed = await call()
                assert outcome == "HIT", outcome
                totals.append(timing["total"])
                embeddings.append(timing.get("embedding", 0.0))
                without.append(timing["total"] - timing.get("embedding", 0.0))
                client.append(elapsed)
            direct = []
            for _ in range(hits):
                start = time.perf_counter()
                embed = {"input": "user: What is the capital of France?"}
                async with session.post(direct_url, json=embed, headers={"api-key": stack.simulator_key}) as response:
                    await response.read()
                direct.append((time.perf_counter() - start) * 1000)
        print(f"cache hit end to end through a gateway process ({hits} sequential hits)")
        for label, values in (
            ("client round trip", client),
            ("gateway total (Server-Timing)", totals),
            ("  of which the embedding call", embeddings),
            ("hit without the embedding call", without),
            ("embedding call to the simulator direct", direct),
        ):
            print(f"  {label:<40} p50 {percentile(values, 0.5):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms")
        print(f"  gateway process resident memory with the cache in use: {rss_mib(stack.gateway_pid):.0f} MiB (the default cap's budget starts here)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-lookups", type=int, default=100, help="lookups timed for the exact float32 scan")
    parser.add_argument("--hits", type=int, default=300)
    parser.add_argument("--skip-e2e", action="store_true", help="only the in-process index and memory numbers")
    args = parser.parse_args()
    bench_index(args.queries, args.exact_lookups)
    bench_memory()
    if not args.skip_e2e:
        asyncio.run(bench_hit(args.hits))


if __name__ == "__main__":
    main()
