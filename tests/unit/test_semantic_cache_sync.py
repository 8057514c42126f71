"""The semantic cache's refresh reads a key range of recent row keys, not the whole partition (docs/scale.md):
what it still finds, and the price it pays for a writer whose clock lags by more than the slack."""

from __future__ import annotations

import asyncio
import secrets
import time
import zlib

import numpy as np

from gateway.backends.config import parse_backends
from gateway.backends.registry import BackendRegistry
from gateway.config.settings import SemanticCacheSettings
from gateway.stores import semantic_cache as service
from gateway.stores import semantic_cache_rows
from gateway.stores.memory import MemoryTables
from policies.semantic_cache import CacheQuery
from tests.unit.test_semantic_cache import CACHED, InstantEmbeddings, lookup_context, topic

BACKENDS = '[{"id": "emb", "url": "https://e.example", "embeddings_deployment": "e"}]'


def instance(store: MemoryTables) -> InstantEmbeddings:
    settings = SemanticCacheSettings(timeout_seconds=1.0, staleness_seconds=0.0)  # every lookup refreshes
    return InstantEmbeddings(store, BackendRegistry(parse_backends({"GATEWAY_BACKENDS": BACKENDS})), None, settings)  # type: ignore[arg-type]


async def write(store: MemoryTables, partition: str, vector: np.ndarray, written_at: float) -> None:
    """An entry as an instance whose clock read `written_at` would store it."""
    entry = semantic_cache_rows.Entry(200, zlib.compress(CACHED.body), CACHED.usage)
    key = f"{int(written_at * 1000):013d}-{secrets.token_hex(4)}"
    entity = semantic_cache_rows.encode_entity(partition, key, vector, entry, time.time() + 3600)
    assert entity is not None
    await store.table(service.TABLE).insert(entity)


async def test_a_refresh_finds_new_entries_but_not_keys_older_than_the_slack(memory_tables: MemoryTables) -> None:
    reader = instance(memory_tables)
    first = await reader.lookup(CacheQuery("p", "user: topic 1", "emb", 0.1), lookup_context())
    assert first.outcome == "MISS" and first.ticket is not None
    partition = first.ticket.partition.key  # type: ignore[attr-defined]
    await write(memory_tables, partition, topic(1), time.time())
    assert (await reader.lookup(CacheQuery("p", "user: topic 1", "emb", 0.1), lookup_context())).outcome == "HIT"
    await asyncio.sleep(0.01)
    lagging = time.time() - service.ROW_KEY_SLACK.total_seconds() - 30  # a writer whose clock lags by slack + 30 s
    await write(memory_tables, partition, topic(2), lagging)
    await write(memory_tables, partition, topic(3), time.time())
    assert (await reader.lookup(CacheQuery("p", "user: topic 3", "emb", 0.1), lookup_context())).outcome == "HIT"
    assert (await reader.lookup(CacheQuery("p", "user: topic 2", "emb", 0.1), lookup_context())).outcome == "MISS"
    newcomer = instance(memory_tables)  # a first load reads the whole partition: the lagging entry is there
    assert (await newcomer.lookup(CacheQuery("p", "user: topic 2", "emb", 0.1), lookup_context())).outcome == "HIT"
    await reader.close()
    await newcomer.close()
