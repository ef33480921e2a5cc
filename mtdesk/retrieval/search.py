"""The :class:`~mtdesk.core.ports.Retriever` over sharded FAISS indexes.

``KnowledgeRetriever.search(tenant, query, k)`` embeds the query with the embedder that
built the tenant's index (recorded in Redis), asks the shards holding the tenant's
chunks (batched per shard by the shard client), merges their top-k, and returns
:class:`~mtdesk.core.ports.Passage` objects with the source names for citations.
Scores are cosine similarities in the embedder's space. ``has_knowledge(tenant)`` says
whether the tenant has any indexed chunk at all (a conversation tells "the knowledge has
nothing on this" from "there is no knowledge yet" with it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from mtdesk.core.ports import Passage
from mtdesk.core.settings import Settings
from mtdesk.retrieval.embedders import Embedder, embedder_for
from mtdesk.retrieval.index_slice import Hit, IndexSlice, SearchRequest
from mtdesk.retrieval.placement import shards_for
from mtdesk.retrieval.store import IndexState, KnowledgeStore


class ShardClient(Protocol):
    """What the retriever needs of a shard: the in-process :class:`IndexSlice` is one."""

    async def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]: ...

    async def sync(self, tenant: str) -> int: ...

    async def drop(self, tenant: str) -> None:
        """Forget the tenant (its account was erased): index and snapshot."""
        ...


class Embedders:
    """Embedders by spec, built once per process (the local model loads once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, Embedder] = {}

    def get(self, spec: str) -> Embedder:
        emb = self._cache.get(spec)
        if emb is None:
            emb = self._cache[spec] = embedder_for(spec, self.settings)
        return emb


# How long a reader may answer from what it read: its cached index state (``meta_ttl``,
# 1 s) plus the shards' own check interval (1 s), and a margin. A reader marks the tenant
# for this long at each read; an ingestion waits it out before it reports ``ready``.
READER_WINDOW_MS = 2500


class KnowledgeRetriever:
    def __init__(
        self, store: KnowledgeStore, shards: Sequence[ShardClient], embedders: Embedders,
        *, block: int, meta_ttl: float = 1.0,
    ) -> None:
        self.store = store
        self.shards = list(shards)
        self.embedders = embedders
        self.block = block
        self.meta_ttl = meta_ttl
        self._loaded: set[str] = set()  # tenants the shards were asked about
        self._meta: dict[str, tuple[float, IndexState]] = {}  # tenant → (fetched, state)
        # tenant → the refresh under way: concurrent callers share it (one read per
        # tenant however many conversations wait when the cache expires under load).
        self._refreshing: dict[str, asyncio.Future[IndexState]] = {}

    async def _tenant(self, tenant: str) -> IndexState:
        """The tenant's embedder spec, highest chunk id and chunk count, at most
        ``meta_ttl`` old."""
        cached = self._meta.get(tenant)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.meta_ttl:
            return cached[1]
        pending = self._refreshing.get(tenant)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh_meta(tenant, now))
            self._refreshing[tenant] = pending
            pending.add_done_callback(lambda f: self._refreshed(tenant, f))
        # shield: one caller cancelled (its conversation's timeout) must not cancel the
        # refresh the others wait for.
        return await asyncio.shield(pending)

    async def _refresh_meta(self, tenant: str, started: float) -> IndexState:
        state = await self.store.index_state(tenant, reader_ms=READER_WINDOW_MS)
        if self._refreshing.get(tenant) is asyncio.current_task():  # not invalidated
            self._meta[tenant] = (started, state)
        return state

    def _refreshed(self, tenant: str, done: asyncio.Future[IndexState]) -> None:
        if self._refreshing.get(tenant) is done:
            del self._refreshing[tenant]
        if not done.cancelled():
            done.exception()  # seen: every waiter may have gone (it is theirs to raise)

    async def has_knowledge(self, tenant_id: str) -> bool:
        """True when the tenant has at least one indexed chunk (the same cached read as
        :meth:`search`, so asking right after a search costs nothing)."""
        state = await self._tenant(tenant_id)
        return bool(state.spec) and state.chunks > 0

    async def search(self, tenant_id: str, query: str, k: int = 5) -> list[Passage]:
        state = await self._tenant(tenant_id)
        if not state.spec or not query.strip() or k <= 0:
            return []
        vector = (await self.embedders.get(state.spec).embed([query]))[0]
        return await self.search_vector(tenant_id, vector.tobytes(), k, state.max_id)

    async def _current(self) -> list[ShardClient]:
        """The shards to ask now (a subclass may follow a changing set of them)."""
        return self.shards

    async def search_vector(self, tenant_id: str, vector: bytes, k: int, max_id: int) -> list[Passage]:
        return await self._search_on(await self._current(), tenant_id, vector, k, max_id)

    async def _search_on(self, shards: Sequence[ShardClient], tenant_id: str, vector: bytes,
                         k: int, max_id: int) -> list[Passage]:
        self._loaded.add(tenant_id)
        targets = shards_for(tenant_id, max_id, len(shards), self.block)
        request = SearchRequest(tenant_id, vector, k)
        results = await asyncio.gather(*(shards[s].search_batch([request]) for s in targets))
        hits = sorted((h for r in results for h in r[0]), key=lambda h: -h.score)[:k]
        records = await self.store.chunks(tenant_id, [h.id for h in hits])
        return [
            Passage(text=rec.text, source=rec.source_name, score=h.score, answer=rec.answer,
                    chunk_id=str(h.id), source_id=rec.source_id)
            for h, rec in zip(hits, records, strict=True)
            if rec is not None and h.score > 0  # gone since the index saw it, or unrelated
        ]

    async def refresh(self, tenant_id: str) -> None:
        """Make the shards apply the tenant's latest changes now (after an ingestion)."""
        self._meta.pop(tenant_id, None)
        self._refreshing.pop(tenant_id, None)  # a read under way may predate the change
        self._loaded.add(tenant_id)
        await asyncio.gather(*(s.sync(tenant_id) for s in await self._current()))

    def held(self) -> set[str]:
        """The tenants this retriever holds anything of: cached index state, or an index
        the shards were asked to load."""
        return set(self._meta) | self._loaded

    async def forget(self, tenant_id: str) -> None:
        """Drop everything held of the tenant (its account was erased): the cached
        index state here and its index on every shard (memory and snapshot file). A
        later search finds only what Redis holds by then."""
        self._meta.pop(tenant_id, None)
        self._refreshing.pop(tenant_id, None)
        self._loaded.discard(tenant_id)
        await asyncio.gather(*(s.drop(tenant_id) for s in await self._current()))

    async def prune(self) -> list[str]:
        """Forget every tenant held whose account erasure began or whose knowledge base
        is gone from Redis (erased while no erasure notice could arrive: a dropped
        subscription). Returns them. One pipelined read for all the tenants held; none
        when nothing is held."""
        gone = await self.store.without_knowledge(sorted(self.held()))
        for tenant in gone:
            await self.forget(tenant)
        return gone


def local_retriever(
    store: KnowledgeStore, settings: Settings, *, n_shards: int = 1, check_interval: float = 1.0,
) -> KnowledgeRetriever:
    """An in-process retriever (demo, CLI, tests): ``n_shards`` :class:`IndexSlice` objects."""
    shards = [
        IndexSlice(
            shard=i, n_shards=n_shards, block=settings.kb_shard_chunks, store=store,
            data_dir=settings.data_dir, check_interval=check_interval,
        )
        for i in range(n_shards)
    ]
    return KnowledgeRetriever(store, shards, Embedders(settings), block=settings.kb_shard_chunks)
