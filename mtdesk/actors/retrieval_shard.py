"""``RetrievalShard``: one retrieval shard as a plain class (Ray wraps it in
:mod:`mtdesk.actors.retrieval_deploy`).

It holds the FAISS indexes of the tenants' chunks placed on it (see
:mod:`mtdesk.retrieval.index_slice` for loading, catching up and snapshots) and speaks bytes:
a batch of msgpack :class:`SearchRequest` in, a msgpack list of hit lists out, so one
actor call carries many queries and is decoded once.

Erasure: from its first search or sync (or :meth:`RetrievalShard.start`) a shard listens
to the erasure notices on ``keys.ERASURE_NOTICES``; a ``tenant`` notice (account deletion) drops
that tenant's index from memory and its snapshot file, so a deleted tenant's vectors do
not linger in an idle actor and a later snapshot cannot write its file again. Once
subscribed, and again after every re-subscription (a notice sent while the subscription
was down is lost), it drops every tenant held whose erasure began or whose knowledge is
gone from Redis (:meth:`RetrievalShard.prune`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
import numpy as np

from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.redis import Redis, connect_to
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import Notice, erased_tenant, listen_for_notices
from mtdesk.retrieval.index_slice import Hit, IndexSlice, SearchRequest
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
        self._core: IndexSlice | None = None
        self._snapshot_at = time.monotonic()
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._subscribed = asyncio.Event()

    def _shard(self) -> IndexSlice:
        # Made on first use, inside the actor's own event loop (a client is bound to a loop).
        if self._core is None:
            self._redis = connect_to(self.settings.redis_url, cluster=self.settings.redis_cluster,
                                     max_connections=8)
            self._core = IndexSlice(
                shard=self.number, n_shards=self.n_shards, block=self.settings.kb_shard_chunks,
                store=KnowledgeStore(self._redis), data_dir=self.settings.data_dir,
                check_interval=self.check_interval, hnsw_threshold=self.hnsw_threshold,
            )
        self._listen()
        return self._core

    def _listen(self) -> None:
        if self._listener is not None or self._redis is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called outside an event loop: the next async call starts listening
        self._listening = True
        self._listener = loop.create_task(
            listen_for_notices(self._redis, lambda: self._listening, self.forget,
                                subscribed=self._subscribed, on_subscribed=self.prune),
            name=f"retrieval-{self.number}:erasure",
        )

    async def start(self, *, timeout_s: float = 10.0) -> None:
        """Listen to erasure notices; returns once subscribed (idempotent). The first
        search or sync starts listening too, without waiting. Raises
        ``StoreUnavailable`` when Redis does not accept the subscription in time."""
        self._shard()
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError as exc:
            raise StoreUnavailable("retrieval shard could not subscribe to erasure notices") from exc

    async def forget(self, notice: Notice) -> bool:
        """Apply an erasure notice: a ``tenant`` scope drops that tenant's index (memory
        and snapshot file). Returns whether it was a tenant erasure; narrower scopes
        (channel, conversations) leave knowledge alone, as it is not personal data."""
        tenant = erased_tenant(notice)
        if tenant is None:
            return False
        if self._core is not None:
            await self._core.drop(tenant)
        return True

    async def prune(self) -> list[str]:
        """Drop the tenants held whose account erasure began or whose knowledge is gone
        from Redis (index and snapshot); returns them. Run after every (re)subscription."""
        if self._core is None:
            return []
        return await self._core.prune()

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
        self._listening = False
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
            self._subscribed.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _maybe_snapshot(self) -> None:
        if time.monotonic() - self._snapshot_at >= self.snapshot_every_s:
            self.snapshot()
