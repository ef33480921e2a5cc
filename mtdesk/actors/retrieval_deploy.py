"""Retrieval shards as Ray actors (Ray itself is called through :mod:`mtdesk.actors.rayapi`).

- :func:`create_retrieval_shards` starts (or finds, by name) ``n`` shard actors of one
  generation, placed over the Ray nodes by ``MTDESK_RAY_PLACEMENT`` (see
  :mod:`mtdesk.actors.scheduling`); they restart on failure (on a live node when theirs
  is lost) and reload from their snapshots / Redis.
- :class:`RetrievalDeployment` is the director's side: it starts the generation the
  stored layout names (:mod:`mtdesk.core.retrieval_layout`; none stored: generation 0
  with ``MTDESK_RETRIEVAL_SHARDS``) and re-shards live: a new generation of ``n`` actors
  beside the old one, warmed (every tenant with a knowledge base synced), the layout
  written, and after a grace period the old actors killed.
- :class:`ActorShardClient` is a :class:`~mtdesk.retrieval.search.ShardClient` over one
  actor that batches: while a call is in flight, new queries queue and leave together
  in the next call (one actor call costs ~1.7 ms; a batch costs about the same).
- :class:`ActorRetriever` (from :func:`actor_retriever`, :func:`shard_retriever`,
  :func:`following_retriever`) is the :class:`~mtdesk.core.ports.Retriever` the
  conversation shards use in a Ray deployment: it re-reads the layout at most once a
  second and moves to a new generation's actors; a search that fails on an actor of a
  generation that was replaced meanwhile is asked again of the new one.

Only the composition root (cli) starts Ray; this module expects Ray running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from mtdesk.actors import rayapi
from mtdesk.actors.retrieval_shard import ENCODER, RESULTS, RetrievalShard
from mtdesk.core import retrieval_layout
from mtdesk.core.errors import StoreUnavailable
from mtdesk.core.ports import Passage
from mtdesk.core.redis import Redis
from mtdesk.core.retrieval_layout import RetrievalLayout
from mtdesk.core.settings import Settings
from mtdesk.policy.erasure.notices import TenantNotice
from mtdesk.retrieval.index_slice import Hit, SearchRequest
from mtdesk.retrieval.search import Embedders, KnowledgeRetriever, ShardClient
from mtdesk.retrieval.store import KnowledgeStore

log = logging.getLogger(__name__)

MAX_BATCH = 512
# A search is retried twice on a restarted actor (a query is cheap to repeat, and one that
# keeps killing its actor must not loop for ever); 64 concurrent batches per actor.
RetrievalShardActor = rayapi.actor_class(RetrievalShard, max_task_retries=2, num_cpus=0.5,
                                         max_concurrency=64)


def create_retrieval_shards(
    settings: Settings, n: int, *, num_cpus: float = 0.5, namespace: str | None = None,
    generation: int = 0, **shard_options: Any,
) -> list[Any]:
    """``n`` shard actor handles of ``generation`` (named, so a restarted server finds the
    running ones); ``shard_options`` go to :class:`RetrievalShard`. Their placement group
    lives as long as the process that created them."""
    return _create(settings, n, num_cpus=num_cpus, namespace=namespace,
                   generation=generation, **shard_options)[1]


def _create(settings: Settings, n: int, *, num_cpus: float, namespace: str | None,
            generation: int, **shard_options: Any) -> tuple[rayapi.ActorGroup, list[Any]]:
    group = rayapi.actor_group("retrieval_shard", settings, n, num_cpus=num_cpus)
    return group, [rayapi.create(RetrievalShardActor, retrieval_layout.shard_name(generation, i),
                                 group, i, settings, i, n, namespace=namespace, **shard_options)
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


class ActorRetriever(KnowledgeRetriever):
    """The Retriever over shard actors (one batching client per actor). With ``follow``
    it re-reads the retrieval layout from Redis at most every ``check_s`` seconds (one
    ``GET``, by whichever search comes first after that; never per message) and, when the
    generation changed, looks the new actors up by name and asks them from then on."""

    def __init__(self, store: KnowledgeStore, settings: Settings, handles: Sequence[Any], *,
                 generation: int = 0, namespace: str | None = None, follow: bool = True,
                 check_s: float = 1.0) -> None:
        super().__init__(store, [ActorShardClient(h) for h in handles], Embedders(settings),
                         block=settings.kb_shard_chunks)
        self.generation = generation
        self.namespace = namespace
        self.follow = follow
        self.check_s = check_s
        self._checked = time.monotonic()

    async def _current(self) -> list[ShardClient]:
        if self.follow and time.monotonic() - self._checked >= self.check_s:
            self._checked = time.monotonic()  # the others meanwhile ask the shards they know
            with contextlib.suppress(Exception):  # Redis away: keep the actors known
                await self._follow()
        return self.shards

    async def _follow(self) -> bool:
        """Move to the generation the stored layout names; True when the shards changed."""
        layout = await retrieval_layout.read(self.store.redis)
        self._checked = time.monotonic()
        if layout is None or layout.generation == self.generation:
            return False
        handles = await asyncio.to_thread(find_retrieval_shards, layout.shards,
                                          namespace=self.namespace, generation=layout.generation)
        if handles is None:  # not (or no longer) running: keep the ones known
            return False
        if layout.generation != self.generation:  # another caller may have moved meanwhile
            log.info("retrieval shards: generation %d → %d (%d shards)", self.generation,
                     layout.generation, layout.shards)
            self.shards = [ActorShardClient(h) for h in handles]
            self.generation = layout.generation
        return True

    async def search_vector(self, tenant_id: str, vector: bytes, k: int, max_id: int) -> list[Passage]:
        shards = await self._current()
        try:
            return await self._search_on(shards, tenant_id, vector, k, max_id)
        except StoreUnavailable:
            # An actor of a generation replaced since (killed after its grace period):
            # the same search on the new generation. Otherwise a real failure.
            if not self.follow:
                raise
            if self.shards is shards:  # (else another search moved meanwhile)
                with contextlib.suppress(Exception):  # the search's own error says more
                    await self._follow()
                if self.shards is shards:
                    raise
            return await self._search_on(self.shards, tenant_id, vector, k, max_id)


def actor_retriever(store: KnowledgeStore, settings: Settings, handles: Sequence[Any], *,
                    generation: int = 0, namespace: str | None = None,
                    follow: bool = True) -> ActorRetriever:
    """The Retriever over shard actors of ``generation`` (following later generations)."""
    return ActorRetriever(store, settings, handles, generation=generation,
                          namespace=namespace, follow=follow)


def _names(generation: int, n: int) -> list[str]:
    return [retrieval_layout.shard_name(generation, i) for i in range(n)]


def find_retrieval_shards(n: int, *, namespace: str | None = None,
                          generation: int = 0) -> list[Any] | None:
    """Handles of the ``n`` running shard actors of ``generation`` (by name), or None when
    any is missing."""
    handles = []
    for name in _names(generation, n):
        handle = rayapi.find(name, namespace)
        if handle is None:
            return None
        handles.append(handle)
    return handles


def shard_retriever(store: KnowledgeStore, settings: Settings, n: int, *,
                    namespace: str | None = None, generation: int = 0) -> KnowledgeRetriever:
    """For a conversation shard: the actor retriever when the ``n`` retrieval actors of
    ``generation`` run (and Ray is up), else an in-process one over the same Redis (it
    loads the tenants it is asked about from snapshots / Redis, and follows their change
    logs)."""
    from mtdesk.retrieval.search import local_retriever

    if rayapi.is_initialized():
        handles = find_retrieval_shards(n, namespace=namespace, generation=generation)
        if handles is not None:
            return actor_retriever(store, settings, handles, generation=generation,
                                   namespace=namespace)
    return local_retriever(store, settings)


async def following_retriever(store: KnowledgeStore, settings: Settings, *,
                              namespace: str | None = None) -> KnowledgeRetriever:
    """:func:`shard_retriever` for the generation and count the stored layout names (none
    stored: generation 0 with ``MTDESK_RETRIEVAL_SHARDS``)."""
    try:
        layout = await retrieval_layout.read(store.redis)
    except Exception:  # noqa: BLE001 - Redis away at start: the settings' count
        layout = None
    if layout is None:
        layout = RetrievalLayout(generation=0, shards=settings.retrieval_shards)
    return await asyncio.to_thread(shard_retriever, store, settings, layout.shards,
                                   namespace=namespace, generation=layout.generation)


class RetrievalDeployment:
    """The retrieval shard actors of a deployment, and their live re-sharding (the
    director's side; the only writer of the layout). ``handles`` are the actors serving
    now, of ``layout.generation``."""

    def __init__(self, settings: Settings, redis: Redis, *, namespace: str | None = None,
                 grace_s: float = 10.0, warm_timeout_s: float = 600.0, num_cpus: float = 0.5,
                 shard_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.namespace = namespace
        self.grace_s = grace_s
        self.warm_timeout_s = warm_timeout_s
        self.num_cpus = num_cpus
        self.shard_options = dict(shard_options or {})
        self.layout = RetrievalLayout(generation=0, shards=settings.retrieval_shards)
        self.handles: list[Any] = []
        self._group: rayapi.ActorGroup | None = None

    def names(self) -> list[str]:
        return _names(self.layout.generation, len(self.handles))

    async def start(self, timeout_s: float = 180.0) -> RetrievalLayout:
        """Start (or find, by name) the generation the stored layout names, with its count;
        no layout stored: generation 0 with ``MTDESK_RETRIEVAL_SHARDS``. Returns once every
        actor answers, the layout written."""
        stored = await retrieval_layout.read(self.redis)
        layout = (RetrievalLayout(generation=stored.generation, shards=stored.shards)
                  if stored is not None else
                  RetrievalLayout(generation=0, shards=self.settings.retrieval_shards))
        group, handles = await self._start_generation(layout.generation, layout.shards, timeout_s)
        self._group, self.handles, self.layout = group, handles, layout
        await retrieval_layout.write(self.redis, layout)
        return layout

    async def _start_generation(self, generation: int, n: int, timeout_s: float,
                                ) -> tuple[rayapi.ActorGroup, list[Any]]:
        group, handles = await asyncio.to_thread(
            _create, self.settings, n, num_cpus=self.num_cpus, namespace=self.namespace,
            generation=generation, **self.shard_options)
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ping.remote() for h in handles)), timeout_s)
        except BaseException:
            await self._kill(handles, group, _names(generation, n))
            raise
        return group, handles

    async def reshard(self, n: int, *, on_switch: Callable[[RetrievalLayout], Awaitable[None]]
                      | None = None) -> RetrievalLayout:
        """``n`` retrieval shards while searches flow: a new generation started beside the
        old one and warmed (each new actor syncs every tenant with a knowledge base), the
        layout written (the conversation shards move within about a second; ``on_switch``
        is awaited then), and after ``grace_s`` (searches in flight on the old actors end)
        the old actors killed. A failure before the switch kills the new actors, leaves
        the old generation serving and the reason in the layout's ``error``, and raises."""
        if not 1 <= n <= retrieval_layout.MAX_SHARDS:
            raise ValueError(f"retrieval shards must be between 1 and {retrieval_layout.MAX_SHARDS}")
        old = self.layout
        if n == old.shards:
            return old
        generation = old.generation + 1
        await retrieval_layout.write(self.redis, RetrievalLayout(
            generation=old.generation, shards=old.shards, target=n))
        try:
            # Leftovers of an earlier try of this generation were made for another count.
            names = _names(generation, n)
            await self._kill([h for name in names
                              if (h := rayapi.find(name, self.namespace)) is not None],
                             None, names)
            group, handles = await self._start_generation(generation, n, 180.0)
            try:
                await asyncio.wait_for(self._warm(handles), self.warm_timeout_s)
            except BaseException:
                await self._kill(handles, group, names)
                raise
        except Exception as exc:
            await retrieval_layout.write(self.redis, RetrievalLayout(
                generation=old.generation, shards=old.shards,
                error=f"retrieval re-sharding to {n} stopped: {type(exc).__name__}: {exc}"))
            raise
        new = RetrievalLayout(generation=generation, shards=n)
        await retrieval_layout.write(self.redis, new)
        old_handles, old_group = self.handles, self._group
        self.handles, self._group, self.layout = handles, group, new
        log.info("retrieval shards: generation %d (%d shards) serves; generation %d (%d) "
                 "stops in %.0f s", generation, n, old.generation, old.shards, self.grace_s)
        if on_switch is not None:
            with contextlib.suppress(Exception):
                await on_switch(new)
        await asyncio.sleep(self.grace_s)
        await self._kill(old_handles, old_group, _names(old.generation, len(old_handles)))
        return new

    async def _warm(self, handles: Sequence[Any]) -> None:
        """Every new actor loads its part of every tenant with a knowledge base."""
        store = KnowledgeStore(self.redis)
        for tenant in await store.tenants_with_knowledge():
            await asyncio.gather(*(h.sync.remote(tenant) for h in handles))

    async def _kill(self, handles: Sequence[Any], group: rayapi.ActorGroup | None,
                    names: list[str]) -> None:
        """Kill ``handles``, wait until ``names`` are free, drop their placement group."""
        for h in handles:
            with contextlib.suppress(Exception):
                rayapi.kill(h)
        await asyncio.to_thread(rayapi.wait_names_free, names, 10.0, self.namespace)
        rayapi.remove_group(group)

    async def stop(self) -> None:
        """Kill the actors serving now (the layout stays: the next start uses it)."""
        await self._kill(self.handles, self._group, self.names())
        self.handles, self._group = [], None
