"""Transactions on a cluster: a watched one keeps its optimistic check (concurrent writers
of one tenant's knowledge take distinct chunk ids), one mixing slots still runs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from redis.exceptions import WatchError

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.retrieval.chunking import Chunk
from mtdesk.retrieval.store import KnowledgeStore


async def test_concurrent_knowledge_writes_of_one_tenant_take_distinct_ids(
    cluster_redis: Redis,
) -> None:
    store = KnowledgeStore(cluster_redis)
    chunks = [Chunk(text=f"passage {i}") for i in range(3)]

    async def add() -> list[int]:
        ids = await store.add_chunks("t_kb", "s1", "faq", chunks, np.ones((3, 8), np.float32))
        return [int(i) for i in ids]

    taken = await asyncio.gather(*(add() for _ in range(8)))
    flat = [i for ids in taken for i in ids]
    assert sorted(flat) == list(range(1, 25))
    assert int(await cluster_redis.get(keys.kb_seq("t_kb"))) == 24


async def test_a_watched_key_changed_meanwhile_fails_the_transaction(cluster_redis: Redis) -> None:
    key = keys.bot("t_w")
    await cluster_redis.set(key, b"1")
    async with cluster_redis.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        assert await pipe.get(key) == b"1"
        await cluster_redis.set(key, b"2")  # another writer
        pipe.multi()
        pipe.set(key, b"3")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await cluster_redis.get(key) == b"2"


async def test_a_transaction_across_slots_still_runs(cluster_redis: Redis) -> None:
    async with cluster_redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.tenant("t_x"), "name", "X")
        pipe.sadd(keys.TENANTS, "t_x")
        assert await pipe.execute() == [1, 1]
    assert await cluster_redis.sismember(keys.TENANTS, "t_x")
