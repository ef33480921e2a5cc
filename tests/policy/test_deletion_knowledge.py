"""Account deletion against the real knowledge base: chunks, vectors, change log and the
FAISS snapshots a retrieval shard wrote are gone; another tenant's knowledge still answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _privacy_world import make_settings, where_found

from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.tenants import Tenants
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.retrieval.chunking import Chunk
from mtdesk.retrieval.index_slice import IndexSlice, SearchRequest
from mtdesk.retrieval.store import KnowledgeStore


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


async def test_account_deletion_removes_knowledge_and_index_snapshots(
    redis: Redis, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    tenants = Tenants(redis, FakeClock())
    store = KnowledgeStore(redis)
    vectors = {}
    ids = {}
    for name in ("a", "b"):
        record, _ = await tenants.create(f"Shop {name}", f"{name}@example.com")
        ids[name] = record.id
        info = await store.create_source(record.id, kind="qa", name=f"returns policy {name}", spec=b"")
        vectors[name] = unit(12, 16, seed=ord(name))
        await store.add_chunks(record.id, info.id, info.name,
                               [Chunk(text=f"knowledge {name} number {i}") for i in range(12)],
                               vectors[name])
    shard = IndexSlice(store=store, data_dir=tmp_path)
    for name in ("a", "b"):
        assert await shard.sync(ids[name]) == 12
    assert shard.snapshot() == 2
    assert len(list((tmp_path / "kb").rglob("*.idx"))) == 2

    await DeletionJobs(redis, FakeClock()).schedule_account(ids["a"])
    worker = DeletionWorker(redis, settings, FakeClock())
    assert await worker.run_once() == 1

    assert await where_found(redis, tmp_path, [ids["a"], "knowledge a", "returns policy a"]) == []
    assert [p.name for p in (tmp_path / "kb").rglob("*.idx")] == [f"{ids['b']}.idx"]
    # A shard that still held the tenant finds nothing left when it catches up, and
    # writes no snapshot for it again.
    assert await shard.sync(ids["a"]) == 0
    shard.snapshot()
    assert await where_found(redis, tmp_path, [ids["a"]]) == []
    fresh = IndexSlice(store=store, data_dir=tmp_path)
    hits = await fresh.search_batch([SearchRequest(ids["b"], vectors["b"][3].tobytes(), 1)])
    assert hits[0][0].id == 4
