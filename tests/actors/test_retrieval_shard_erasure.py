"""A running retrieval shard (the plain actor class, no Ray) forgets a deleted account:
after the account deletion job, no vectors of the tenant stay in its memory and no
snapshot it writes names the tenant; another tenant's knowledge still answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from redislink import RedisLink

from mtdesk.actors.retrieval_shard import ENCODER, RESULTS, RetrievalShard
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.policy.erasure.notices import ChannelNotice
from mtdesk.retrieval.chunking import Chunk
from mtdesk.retrieval.index_slice import SearchRequest
from mtdesk.retrieval.store import KnowledgeStore


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def files_naming(data_dir: Path, needle: str) -> list[str]:
    return [str(p) for p in data_dir.rglob("*")
            if needle in str(p) or (p.is_file() and needle.encode() in p.read_bytes())]


def tenants_held(shard: RetrievalShard) -> dict[str, dict[str, int]]:
    return shard.stats()["tenants"]  # type: ignore[return-value]


async def add_knowledge(store: KnowledgeStore, tenant: str, name: str, vectors: np.ndarray) -> None:
    info = await store.create_source(tenant, kind="qa", name=name, spec=b"")
    await store.add_chunks(tenant, info.id, info.name,
                           [Chunk(text=f"{name} number {i}") for i in range(len(vectors))], vectors)


async def test_account_deletion_empties_a_running_retrieval_shard(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, data_dir=str(tmp_path), partitions=4)
    tenants = Tenants(redis, FakeClock())
    store = KnowledgeStore(redis)
    ids, vectors = {}, {}
    for name in ("a", "b"):
        record, _ = await tenants.create(f"Shop {name}", f"{name}@example.com")
        ids[name] = record.id
        vectors[name] = unit(12, 16, seed=ord(name))
        await add_knowledge(store, record.id, f"returns policy {name}", vectors[name])

    shard = RetrievalShard(settings, 0, 1, snapshot_every_s=3600)
    try:
        await shard.start()
        assert await shard.sync(ids["a"]) == 12 and await shard.sync(ids["b"]) == 12
        assert shard.snapshot() == 2
        # More knowledge since the snapshot: held in memory only, waiting for the next one.
        await add_knowledge(store, ids["a"], "shipping a", unit(6, 16, seed=7))
        assert await shard.sync(ids["a"]) == 18
        assert files_naming(tmp_path, ids["a"])

        await DeletionJobs(redis, FakeClock()).schedule_account(ids["a"])
        assert await DeletionWorker(redis, settings, FakeClock()).run_once() == 1

        for _ in range(500):  # the purge notices arrive over pub/sub
            if ids["a"] not in tenants_held(shard):
                break
            await asyncio.sleep(0.01)
        held = tenants_held(shard)
        assert ids["a"] not in held
        assert held[ids["b"]]["vectors"] == 12
        # The next snapshot writes nothing for the deleted tenant.
        shard.snapshot()
        assert files_naming(tmp_path, ids["a"]) == []
        assert files_naming(tmp_path, ids["b"])

        raw = await shard.search_batch(ENCODER.encode(
            [SearchRequest(ids["b"], vectors["b"][3].tobytes(), 1)]))
        assert RESULTS.decode(raw)[0][0].id == 4
        # Narrower erasures (one channel, some conversations) leave knowledge alone.
        assert not await shard.forget(ChannelNotice(ids["b"], "x:1:"))
        assert tenants_held(shard)[ids["b"]]["vectors"] == 12
    finally:
        await shard.close()
    assert files_naming(tmp_path, ids["a"]) == []


async def test_a_shard_that_missed_the_erasure_notices_drops_the_tenant_once_reconnected(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    tenants = Tenants(redis, FakeClock())
    store = KnowledgeStore(redis)
    ids = {}
    for name in ("a", "b"):
        record, _ = await tenants.create(f"Shop {name}", f"{name}@example.com")
        ids[name] = record.id
        await add_knowledge(store, record.id, f"returns policy {name}", unit(12, 16, seed=ord(name)))

    async with RedisLink(redis_url) as link:  # the shard's own connection to Redis
        settings = Settings(redis_url=link.url, data_dir=str(tmp_path), partitions=4)
        shard = RetrievalShard(settings, 0, 1, snapshot_every_s=3600)
        try:
            await shard.start()
            assert await shard.sync(ids["a"]) == 12 and await shard.sync(ids["b"]) == 12
            assert shard.snapshot() == 2

            link.cut()  # the shard's subscription is down while the account is deleted
            await DeletionJobs(redis, FakeClock()).schedule_account(ids["a"])
            assert await DeletionWorker(redis, settings, FakeClock()).run_once() == 1
            await asyncio.sleep(0.3)
            assert ids["a"] in tenants_held(shard)  # both notices were lost

            link.restore()
            for _ in range(1000):  # it resubscribes within a few seconds
                if ids["a"] not in tenants_held(shard):
                    break
                await asyncio.sleep(0.01)
            held = tenants_held(shard)
            assert ids["a"] not in held
            assert held[ids["b"]]["vectors"] == 12
            shard.snapshot()
            assert files_naming(tmp_path, ids["a"]) == []
        finally:
            await shard.close()
    assert files_naming(tmp_path, ids["a"]) == []
    assert files_naming(tmp_path, ids["b"])
