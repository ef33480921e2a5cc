"""``RetrievalShard``: one retrieval shard as a plain class (Ray wraps it in
:mod:`mtdesk.actors.retrieval_deploy`).

It holds the FAISS indexes of the tenants' chunks placed on it (see
:mod:`mtdesk.retrieval.shard` for loading, catching up and snapshots) and speaks bytes:
a batch of msgpack :class:`SearchRequest` in, a msgpack list of hit lists out, so one
actor call carries many queries and is decoded once.
"""

from __future__ import annotations

import time

import msgspec
import numpy as np

from mtdesk.core.redis import Redis, connect
from mtdesk.core.settings import Settings
from mtdesk.retrieval.shard import Hit, IndexShard, SearchRequest
from mtdesk.retrieval.store import KnowledgeStore

REQUESTS = msgspec.msgpack.Decoder(list[SearchRequest])
RESULTS = msgspec.msgpack.Decoder(list[list[Hit]])
ENCODER = msgspec.msgpack.Encoder()


class RetrievalShard:
    def __init__(
        self, settings: Settings, shard: int, n_shards: int, *,
        snapshot_every_s: float = 30.0, check_interval: float = 1.0, hnsw_threshold: int = 20_000,
    ) -> None:
        self.settings = settings
        self.number = shard
        self.n_shards = n_shards
        self.snapshot_every_s = snapshot_every_s
        self.check_interval = check_interval
        self.hnsw_threshold = hnsw_threshold
        self._redis: Redis | None = None
        self._core: IndexShard | None = None
        self._snapshot_at = time.monotonic()

    def _shard(self) -> IndexShard:
        # Made on first use, inside the actor's own event loop (a client is bound to a loop).
        if self._core is None:
            self._redis = connect(self.settings.redis_url, max_connections=8)
            self._core = IndexShard(
                shard=self.number, n_shards=self.n_shards, block=self.settings.kb_shard_chunks,
                store=KnowledgeStore(self._redis), data_dir=self.settings.data_dir,
                check_interval=self.check_interval, hnsw_threshold=self.hnsw_threshold,
            )
        return self._core

    async def search_batch(self, payload: bytes) -> bytes:
        """msgpack ``list[SearchRequest]`` → msgpack ``list[list[Hit]]``, in order."""
        results = await self._shard().search_batch(REQUESTS.decode(payload))
        self._maybe_snapshot()
        return ENCODER.encode(results)

    async def sync(self, tenant: str) -> int:
        """Apply the tenant's latest changes now; returns the vectors held for it."""
        held = await self._shard().sync(tenant)
        self._maybe_snapshot()
        return held

    def add_vectors(self, tenant: str, ids: bytes, vectors: bytes, dim: int) -> int:
        """Load vectors directly (benchmarks): int64 ids and float32 rows as raw bytes."""
        arr = np.frombuffer(vectors, dtype=np.float32).reshape(-1, dim)
        self._shard().add_vectors(tenant, np.frombuffer(ids, dtype=np.int64), arr)
        return len(arr)

    def snapshot(self) -> int:
        self._snapshot_at = time.monotonic()
        return self._shard().snapshot()

    def stats(self) -> dict[str, object]:
        return self._shard().stats()

    def ping(self) -> int:
        return self.number

    async def close(self) -> None:
        self.snapshot()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _maybe_snapshot(self) -> None:
        if time.monotonic() - self._snapshot_at >= self.snapshot_every_s:
            self.snapshot()
