"""Retrieval shards as Ray actors (Ray itself is called through :mod:`mtdesk.actors.rayapi`).

- :func:`create_retrieval_shards` starts (or finds, by name) ``n`` shard actors, placed
  over the Ray nodes by ``MTDESK_RAY_PLACEMENT`` (see :mod:`mtdesk.actors.scheduling`);
  they restart on failure (on a live node when theirs is lost) and reload from their
  snapshots / Redis.
- :class:`ActorShardClient` is a :class:`~mtdesk.retrieval.search.ShardClient` over one
  actor that batches: while a call is in flight, new queries queue and leave together
  in the next call (one actor call costs ~1.7 ms; a batch costs about the same).
- :func:`actor_retriever` is the :class:`~mtdesk.core.ports.Retriever` the conversation
  shards use in a Ray deployment.

Only the composition root (cli) starts Ray; this module expects Ray running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtdesk.actors import rayapi
from mtdesk.actors.retrieval_shard import ENCODER, RESULTS, RetrievalShard
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import TenantNotice
from mtdesk.retrieval.index_slice import Hit, SearchRequest
from mtdesk.retrieval.search import Embedders, KnowledgeRetriever
from mtdesk.retrieval.store import KnowledgeStore

NAME = "mtdesk-retrieval-{}"
MAX_BATCH = 512
# A search is retried twice on a restarted actor (a query is cheap to repeat, and one that
# keeps killing its actor must not loop for ever); 64 concurrent batches per actor.
RetrievalShardActor = rayapi.actor_class(RetrievalShard, max_task_retries=2, num_cpus=0.5,
                                         max_concurrency=64)


def create_retrieval_shards(
    settings: Settings, n: int, *, num_cpus: float = 0.5, namespace: str | None = None,
    **shard_options: Any,
) -> list[Any]:
    """``n`` shard actor handles (named, so a restarted server finds the running ones);
    ``shard_options`` go to :class:`RetrievalShard`. Their placement group lives as long
    as the process that created them."""
    group = rayapi.actor_group("retrieval_shard", settings, n, num_cpus=num_cpus)
    return [rayapi.create(RetrievalShardActor, NAME.format(i), group, i,
                          settings, i, n, namespace=namespace, **shard_options)
            for i in range(n)]


class ActorShardClient:
    def __init__(self, handle: Any, *, max_batch: int = MAX_BATCH) -> None:
        self.handle = handle
        self.max_batch = max_batch
        self._pending: list[tuple[SearchRequest, asyncio.Future[list[Hit]]]] = []
        self._pumping = False
        self.calls = 0  # actor calls made (batching makes this smaller than queries)

    async def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future: asyncio.Future[list[Hit]] = loop.create_future()
            self._pending.append((request, future))
            futures.append(future)
        if not self._pumping:
            self._pumping = True
            loop.create_task(self._pump())
        return [await f for f in futures]

    async def _pump(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                self.calls += 1
                try:
                    raw = await self.handle.search_batch.remote(ENCODER.encode([r for r, _ in batch]))
                    results = RESULTS.decode(raw)
                except Exception as exc:  # RayActorError, RayTaskError, decode errors
                    error = StoreUnavailable(f"retrieval shard unavailable ({type(exc).__name__})")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), hits in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(hits)
        finally:
            self._pumping = False

    async def sync(self, tenant: str) -> int:
        try:
            return int(await self.handle.sync.remote(tenant))
        except Exception as exc:
            raise StoreUnavailable(f"retrieval shard unavailable ({type(exc).__name__})") from exc

    async def drop(self, tenant: str) -> None:
        """Make the actor forget the tenant now (it also does on the erasure notice)."""
        try:
            await self.handle.forget.remote(TenantNotice(tenant))
        except Exception as exc:
            raise StoreUnavailable(f"retrieval shard unavailable ({type(exc).__name__})") from exc

    async def add_vectors(self, tenant: str, ids: np.ndarray, vectors: np.ndarray) -> int:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return int(await self.handle.add_vectors.remote(
            tenant, np.ascontiguousarray(ids, dtype=np.int64).tobytes(), vectors.tobytes(), vectors.shape[1]
        ))


def actor_retriever(store: KnowledgeStore, settings: Settings, handles: Sequence[Any]) -> KnowledgeRetriever:
    """The Retriever over shard actors (one batching client per actor)."""
    clients = [ActorShardClient(h) for h in handles]
    return KnowledgeRetriever(store, clients, Embedders(settings), block=settings.kb_shard_chunks)


def find_retrieval_shards(n: int, *, namespace: str | None = None) -> list[Any] | None:
    """Handles of the ``n`` running shard actors (by name), or None when any is missing."""
    handles = []
    for i in range(n):
        handle = rayapi.find(NAME.format(i), namespace)
        if handle is None:
            return None
        handles.append(handle)
    return handles


def shard_retriever(store: KnowledgeStore, settings: Settings, n: int, *,
                    namespace: str | None = None) -> KnowledgeRetriever:
    """For a conversation shard: the actor retriever when the ``n`` retrieval actors run
    (and Ray is up), else an in-process one over the same Redis (it loads the tenants it is
    asked about from snapshots / Redis, and follows their change logs)."""
    from mtdesk.retrieval.search import local_retriever

    if rayapi.is_initialized():
        handles = find_retrieval_shards(n, namespace=namespace)
        if handles is not None:
            return actor_retriever(store, settings, handles)
    return local_retriever(store, settings)
