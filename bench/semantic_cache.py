"""Semantic cache: index lookups at 1k, 10k and 100k entries, memory per 10k entries, and a hit end to end.

    .venv/bin/python -m bench.semantic_cache [--lookups 300] [--hits 300] [--skip-e2e]

1. In-process: one partition's `VectorIndex` holding 1536-dimension vectors shaped like real embeddings (all
   in a narrow cone around a common direction, typical cosine similarity ~0.74 between unrelated entries).
   Timed: `search` for near-duplicates of stored entries (what a hit looks like, distance ~0.03) and for
   unrelated queries (a miss). Recall: how often it returns the entry an exact scan over all entries returns.
2. Memory: everything one partition of 10k entries holds (tracemalloc), with answers of ~1 KB compressed.
3. End to end: Azurite, the simulator and a gateway process with a lookup/store policy; a cached answer is
   asked for repeatedly. The gateway's `Server-Timing` gives its total and the embedding call's share; a hit
   without the embedding is total minus embedding (the simulator's embeddings are local and fast, but a real
   embeddings deployment takes 10-50 ms, which no cache design avoids).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the gateway's entry points do; the imports below load numpy

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import aiohttp
import numpy as np

from bench.harness import API_VERSION, local_stack
from gateway.dev import devstack
from gateway.stores.semantic_cache import Entry
from gateway.stores.vector_index import VectorIndex
from policies.usage import Usage

DIMS = 1536
SIZES = (1_000, 10_000, 100_000)
POLICY = """<policies><inbound><base />
  <azure-openai-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="sim" embeddings-backend-auth="system-assigned" />
</inbound><outbound><base /><azure-openai-semantic-cache-store duration="3600" /></outbound></policies>"""


def embeddings_like(rng: np.random.Generator, count: int, center: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((count, DIMS), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = center * 0.85 + noise * 0.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def answer_entry(i: int) -> Entry:
    text = f"Answer number {i}: " + " ".join(f"word{(i * 7 + j) % 5000}" for j in range(150))
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    body = json.dumps({"object": "chat.completion", "choices": [choice]})
    return Entry(200, zlib.compress(body.encode()), Usage(prompt=20, completion=150, total=170))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_index(lookups: int) -> None:
    rng = np.random.default_rng(42)
    center = rng.standard_normal(DIMS).astype(np.float32)
    center /= np.linalg.norm(center)
    vectors = embeddings_like(rng, SIZES[-1], center)
    payloads = [None] * SIZES[-1]
    print(f"index lookups, {DIMS} dimensions, one partition ({lookups} lookups each; recall: same entry as an exact scan)")
    cases = (("hit, distance ~0.03", 0.006), ("hit, distance ~0.18", 0.018), ("miss (unrelated)", None))
    for size in SIZES:
        index = VectorIndex()
        index.extend([f"k{i}" for i in range(size)], vectors[:size], np.full(size, 4e9), payloads[:size])
        matrix = vectors[:size]
        for label, noise in cases:
            if noise is None:
                queries = embeddings_like(rng, lookups, center)
            else:
                queries = matrix[rng.integers(0, size, lookups)] + rng.standard_normal((lookups, DIMS), dtype=np.float32) * noise
            for query in queries[:20]:  # warm up
                index.search(query, 0.0)
            samples, matches = [], []
            for query in queries:
                start = time.perf_counter()
                matches.append(index.search(query, 0.0))
                samples.append((time.perf_counter() - start) * 1000)
            exact = matrix @ (queries / np.linalg.norm(queries, axis=1, keepdims=True)).T  # after timing: it flushes the caches
            best = exact.argmax(axis=0)
            found = sum(m is not None and m.key == f"k{b}" for m, b in zip(matches, best))
            gap = max(m.distance - (1 - float(exact[b, i])) for i, (m, b) in enumerate(zip(matches, best)) if m is not None)
            print(
                f"  {size:>7,} entries  {label:<20} p50 {percentile(samples, 0.5):6.3f} ms  p99 {percentile(samples, 0.99):6.3f} ms"
                f"  recall {found / lookups:6.1%}  (worst distance above the exact nearest: {gap:.4f})"
            )


def bench_memory() -> None:
    rng = np.random.default_rng(1)
    vectors = embeddings_like(rng, 10_000, np.ones(DIMS, np.float32) / np.sqrt(DIMS))
    entries = [answer_entry(i) for i in range(10_000)]
    keys = [f"{1_760_000_000_000 + i:013d}-{i:08x}" for i in range(10_000)]
    del rng
    tracemalloc.start()
    index = VectorIndex()
    for start in range(0, 10_000, 1000):  # as a table sync adds them: page by page
        index.extend(keys[start : start + 1000], vectors[start : start + 1000].copy(), np.full(1000, 4e9), entries[start : start + 1000])
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    answers = sum(len(e.answer) for e in entries)
    print(
        f"memory per 10k entries: {held / 2**20:.1f} MiB for the index (vectors {10_000 * DIMS * 4 / 2**20:.1f} MiB, sign bits"
        f" {10_000 * DIMS / 8 / 2**20:.1f} MiB, capacity slack, keys), plus {answers / 2**20:.1f} MiB of answers"
        f" ({answers / 10_000:.0f} B each compressed)"
    )


async def bench_hit(hits: int) -> None:
    with local_stack({"GATEWAY_POLICY_POLL_SECONDS": "0.3", "GATEWAY_LOCAL_QUEUE_WORKER": "false"}) as stack:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "policy.xml"
            path.write_text(POLICY)
            subprocess.run(
                [sys.executable, "-m", "gateway", "policies", "apply", str(path), "--scope", "global"],
                env={**os.environ, **stack.env}, cwd=devstack.REPO_ROOT, check=True, capture_output=True,
            )  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--hits", type=int, default=300)
    parser.add_argument("--skip-e2e", action="store_true", help="only the in-process index and memory numbers")
    args = parser.parse_args()
    bench_index(args.lookups)
    bench_memory()
    if not args.skip_e2e:
        asyncio.run(bench_hit(args.hits))


if __name__ == "__main__":
    main()
