"""FAISS indexes: exact then HNSW, removals, snapshots, restarts and sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtdesk.core import keys
from mtdesk.core.redis import Redis
from mtdesk.core.settings import Settings
from mtdesk.retrieval.chunking import Chunk
from mtdesk.retrieval.index_slice import IndexSlice, SearchRequest
from mtdesk.retrieval.placement import shards_for
from mtdesk.retrieval.search import Embedders, KnowledgeRetriever
from mtdesk.retrieval.store import KnowledgeStore
from mtdesk.retrieval.vectors import VectorIndex


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_index_turns_hnsw_past_the_threshold_and_still_finds_exact_matches() -> None:
    x = unit(400, 32)
    index = VectorIndex(32, hnsw_threshold=200)
    index.add(np.arange(1, 201), x[:200])
    assert index.kind == "flat"
    index.add(np.arange(201, 401), x[200:])
    assert index.kind == "hnsw" and len(index) == 400
    _, ids = index.search(x[[0, 250]], 1)
    assert ids[:, 0].tolist() == [1, 251]


def test_removed_ids_are_never_returned_and_compaction_drops_them() -> None:
    x = unit(300, 16)
    index = VectorIndex(16, hnsw_threshold=100, compact_ratio=0.3)
    index.add(np.arange(1, 301), x)
    index.remove([1, 2, 3])
    assert index.tombstones == 3
    _, ids = index.search(x[:3], 5)
    assert not {1, 2, 3} & set(ids.ravel().tolist())
    index.remove(range(4, 120))  # past the ratio: rebuilt without tombstones
    assert index.tombstones == 0 and len(index) == 181
    _, ids = index.search(x[:1], 10)
    assert all(i > 119 for i in ids.ravel().tolist())


def test_adding_the_same_id_twice_keeps_one_copy() -> None:
    x = unit(5, 8)
    index = VectorIndex(8)
    index.add(np.arange(1, 6), x)
    index.add(np.arange(1, 6), x)
    assert len(index) == 5


def test_a_snapshot_round_trip_keeps_vectors_and_tombstones() -> None:
    x = unit(150, 16)
    index = VectorIndex(16, hnsw_threshold=100)
    index.add(np.arange(1, 151), x)
    index.remove([7])
    again = VectorIndex.from_bytes(index.to_bytes(), hnsw_threshold=100)
    assert again.kind == "hnsw" and len(again) == 149 and 7 not in again
    _, ids = again.search(x[[6, 8]], 1)  # id 7 is row 6
    assert ids[0, 0] != 7 and ids[1, 0] == 9


async def _put(store: KnowledgeStore, tenant: str, n: int, dim: int, seed: int = 0) -> np.ndarray:
    info = await store.create_source(tenant, kind="qa", name="S", spec=b"")
    vecs = unit(n, dim, seed)
    await store.add_chunks(tenant, info.id, "S", [Chunk(text=f"c{i}") for i in range(n)], vecs)
    return vecs


async def test_a_restarted_shard_reloads_its_snapshot_and_catches_up(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    vecs = await _put(store, "t1", 30, 16)
    shard = IndexSlice(store=store, data_dir=tmp_path)
    assert await shard.sync("t1") == 30
    assert shard.snapshot() == 1
    more = await _put(store, "t1", 5, 16, seed=1)  # written while the shard is "down"
    restarted = IndexSlice(store=store, data_dir=tmp_path)
    assert await restarted.sync("t1") == 35
    hits = await restarted.search_batch([SearchRequest("t1", more[0].tobytes(), 1),
                                         SearchRequest("t1", vecs[3].tobytes(), 1)])
    assert [h[0].id for h in hits] == [31, 4]


async def test_a_lost_or_torn_snapshot_is_rebuilt_from_redis(redis: Redis, tmp_path: Path) -> None:
    store = KnowledgeStore(redis)
    vecs = await _put(store, "t1", 20, 16)
    shard = IndexSlice(store=store, data_dir=tmp_path)
    await shard.sync("t1")
    shard.snapshot()
    (path,) = (tmp_path / "kb").rglob("*.idx")
    path.write_bytes(b"torn")
    rebuilt = IndexSlice(store=store, data_dir=tmp_path)
    hits = await rebuilt.search_batch([SearchRequest("t1", vecs[5].tobytes(), 1)])
    assert hits[0][0].id == 6
    path.unlink()
    again = IndexSlice(store=store, data_dir=tmp_path)
    assert await again.sync("t1") == 20


async def test_knowledge_spreads_over_shards_and_queries_merge(redis: Redis) -> None:
    store = KnowledgeStore(redis)
    vecs = await _put(store, "big", 50, 16)
    shards = [IndexSlice(shard=i, n_shards=3, block=20, store=store) for i in range(3)]
    held = [await s.sync("big") for s in shards]
    assert sorted(held) == [10, 20, 20]  # blocks of 20 ids on three shards
    assert shards_for("big", 50, 3, 20) == [0, 1, 2]
    assert len(shards_for("small", 19, 3, 20)) == 1
    await store.set_meta("big", spec="lexical", embedder="x", dim="16")
    retriever = KnowledgeRetriever(store, shards, Embedders(Settings()), block=20)
    for i in (0, 25, 45):
        passages = await retriever.search_vector("big", vecs[i].tobytes(), 3, 50)
        assert passages[0].chunk_id == str(i + 1) and len(passages) == 3


async def test_a_snapshot_of_another_shard_layout_is_rebuilt_not_taken_for_the_whole(
    redis: Redis, tmp_path: Path
) -> None:
    store = KnowledgeStore(redis)
    await _put(store, "big", 50, 16)
    two = [IndexSlice(shard=i, n_shards=2, block=20, store=store, data_dir=tmp_path) for i in range(2)]
    held = [await shard.sync("big") for shard in two]
    assert sorted(held) == [20, 30] and [s.snapshot() for s in two] == [1, 1]
    # One shard holding whole tenants (the admin's search), and shard 0 after the
    # deployment went from two shards to three: both read shard-0's folder.
    whole = IndexSlice(store=store, data_dir=tmp_path)
    assert await whole.sync("big") == 50
    three = IndexSlice(shard=0, n_shards=3, block=20, store=store, data_dir=tmp_path)
    assert await three.sync("big") == 20  # its own block only, as placed now
    # A shard of the layout that wrote the snapshot still loads it (it does not need
    # the vectors in Redis, which a rebuild would).
    await redis.delete(keys.kb_vectors("big"))
    same = IndexSlice(shard=1, n_shards=2, block=20, store=store, data_dir=tmp_path)
    assert await same.sync("big") == held[1]


async def test_deleted_chunks_disappear_from_a_running_shard(redis: Redis) -> None:
    store = KnowledgeStore(redis)
    vecs = await _put(store, "t1", 10, 16)
    shard = IndexSlice(store=store, check_interval=0.0)
    await shard.sync("t1")
    await store.remove_chunks("t1", np.array([1, 2], dtype=np.int64))
    hits = await shard.search_batch([SearchRequest("t1", vecs[0].tobytes(), 3)])
    assert 1 not in [h.id for h in hits[0]] and len(hits[0]) == 3
