"""An index slice: the in-memory FAISS indexes of the tenants' chunks placed on one
retrieval shard (or of whole tenants, in process).

Names: a *retrieval shard* is the Ray actor (:class:`~mtdesk.actors.retrieval_shard.RetrievalShard`)
that holds one :class:`IndexSlice`; a *conversation shard* is the actor that answers
messages; an inbound stream *partition* is a Redis stream. The slice is what this module is.

A slice loads a tenant on first use: from its snapshot in the data directory when there
is one, else rebuilt from the vectors in Redis. It then keeps up with the tenant's
change log (on ``sync``, and at most every ``check_interval`` seconds before a search),
so writers only write Redis and the log. Snapshots record the last log entry applied and
the layout they were made under (which of the tenant's chunks the slice holds, see
:func:`~mtdesk.retrieval.placement.layout`); a snapshot that is missing, unreadable,
older than the trimmed log, or made under another layout is rebuilt from Redis. So an
in-process slice holding whole tenants (the admin's search, a conversation shard's
fallback) never takes the part a retrieval shard actor of a larger layout wrote into
the same folder for the whole, nor does an actor after the number of shards changed.

Plain class: the Ray actor (:mod:`mtdesk.actors.retrieval_shard`) and the in-process
deployment both use it. Not thread-safe; one event loop drives it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from mtdesk.retrieval.placement import layout, mine
from mtdesk.retrieval.store import KnowledgeStore, LogEntry
from mtdesk.retrieval.vectors import VectorIndex

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def snapshot_name(tenant: str) -> str:
    """File name of a tenant's snapshot in a shard's directory."""
    safe = tenant if _SAFE.match(tenant) else msgspec.json.encode(tenant).hex()[:80]
    return f"{safe}.idx"


class SearchRequest(msgspec.Struct, frozen=True, array_like=True):
    tenant: str
    vector: bytes  # float32, normalized
    k: int


class Hit(msgspec.Struct, frozen=True, array_like=True):
    id: int
    score: float


class _Part:
    __slots__ = ("index", "checked", "dirty", "log_id", "fed")

    def __init__(self, index: VectorIndex | None) -> None:
        self.index = index
        self.checked = 0.0
        self.dirty = False
        self.log_id: bytes | None = None  # the last change-log entry applied
        self.fed = False  # added directly (benchmarks), not kept from Redis


class IndexSlice:
    """The FAISS indexes one retrieval shard (``shard`` of ``n_shards``) holds."""

    def __init__(
        self, *, shard: int = 0, n_shards: int = 1, block: int = 50_000,
        store: KnowledgeStore | None = None, data_dir: str | Path | None = None,
        check_interval: float = 1.0, hnsw_threshold: int = 20_000,
    ) -> None:
        self.shard = shard
        self.n_shards = n_shards
        self.block = block
        self.store = store
        self.dir = Path(data_dir) / "kb" / f"shard-{shard}" if data_dir is not None else None
        self.check_interval = check_interval
        self.hnsw_threshold = hnsw_threshold
        self.layout = layout(shard, n_shards, block)
        self._parts: dict[str, _Part] = {}
        # tenant → its first load under way: concurrent searches and syncs share it (a
        # search must not see the tenant half loaded, as no passages).
        self._loading: dict[str, asyncio.Future[_Part]] = {}

    # -- the query path --------------------------------------------------------------------
    async def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """Top-k hits for each request, in order. One FAISS call per tenant in the batch."""
        by_tenant: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            by_tenant[req.tenant].append(i)
        out: list[list[Hit]] = [[] for _ in requests]
        for tenant, rows in by_tenant.items():
            part = await self._fresh(tenant)
            index = part.index
            if index is None or len(index) == 0:
                continue
            k = max(requests[i].k for i in rows)
            queries = np.stack([np.frombuffer(requests[i].vector, dtype=np.float32) for i in rows])
            if queries.shape[1] != index.dim:
                continue  # a query from another embedder than the index's: no answer
            scores, ids = index.search(queries, k)
            for row, i in enumerate(rows):
                kk = requests[i].k
                out[i] = [
                    Hit(int(c), float(s)) for c, s in zip(ids[row][:kk], scores[row][:kk], strict=True) if c >= 0
                ]
        return out

    # -- keeping up with Redis -------------------------------------------------------------
    async def sync(self, tenant: str) -> int:
        """Catch up with the tenant's change log now. Returns the live vectors held."""
        part = self._parts.get(tenant)
        if part is None:
            part = await self._load(tenant)
        else:
            await self._catch_up(tenant, part)
        return len(part.index) if part.index is not None else 0

    async def drop(self, tenant: str) -> None:
        """Forget the tenant: its index leaves memory and its snapshot file is deleted
        (account deletion). A later search loads it again from whatever Redis holds."""
        self._parts.pop(tenant, None)
        self._loading.pop(tenant, None)  # a load under way keeps nothing
        path = self._path(tenant)
        if path is not None:
            path.unlink(missing_ok=True)

    async def prune(self) -> list[str]:
        """Drop every tenant held (index and snapshot) whose account erasure began or
        whose knowledge is gone from Redis: an erasure notice this shard missed (its
        subscription was down). Returns them. One pipelined read; none when empty."""
        if self.store is None:
            return []
        held = [t for t, part in self._parts.items() if not part.fed]
        gone = await self.store.without_knowledge(held) if held else []
        for tenant in gone:
            await self.drop(tenant)
        return gone

    def add_vectors(self, tenant: str, ids: np.ndarray, vectors: np.ndarray, embedder: str = "") -> None:
        """Add vectors directly (benchmarks; a tenant fed this way is not synced from Redis)."""
        part = self._parts.get(tenant)
        if part is None or part.index is None:
            part = _Part(self._new_index(vectors.shape[1], embedder))
            part.checked = float("inf")
            part.fed = True
            self._parts[tenant] = part
        assert part.index is not None
        part.index.add(ids, vectors)
        part.dirty = True

    def stats(self) -> dict[str, object]:
        tenants = {
            t: {"vectors": len(p.index), "kind": p.index.kind, "tombstones": p.index.tombstones,
                "bytes": p.index.nbytes()}
            for t, p in self._parts.items() if p.index is not None
        }
        return {"shard": self.shard, "tenants": tenants}

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> int:
        """Write the snapshot of every tenant changed since the last one. Returns how many."""
        if self.dir is None:
            return 0
        written = 0
        for tenant, part in list(self._parts.items()):
            path = self._path(tenant)
            if not part.dirty or path is None:
                continue
            if part.index is None or len(part.index) == 0:
                path.unlink(missing_ok=True)  # the tenant's knowledge is gone: so is its copy
                part.dirty = False
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            part.index.log_id = (part.log_id or b"").decode()
            part.index.layout = self.layout
            tmp.write_bytes(part.index.to_bytes())
            os.replace(tmp, path)  # atomic: a crash leaves the old snapshot or the new one
            part.dirty = False
            written += 1
        return written

    # -- internals -------------------------------------------------------------------------
    def _path(self, tenant: str) -> Path | None:
        if self.dir is None:
            return None
        return self.dir / snapshot_name(tenant)

    def _new_index(self, dim: int, embedder: str) -> VectorIndex:
        return VectorIndex(dim, hnsw_threshold=self.hnsw_threshold, embedder=embedder)

    async def _fresh(self, tenant: str) -> _Part:
        part = self._parts.get(tenant)
        if part is None:
            return await self._load(tenant)
        if time.monotonic() - part.checked >= self.check_interval:
            await self._catch_up(tenant, part)
        return part

    async def _load(self, tenant: str) -> _Part:
        pending = self._loading.get(tenant)
        if pending is None:
            pending = asyncio.ensure_future(self._load_now(tenant))
            self._loading[tenant] = pending
            pending.add_done_callback(lambda done: self._loaded(tenant, done))
        # shield: one caller cancelled must not cancel the load the others wait for.
        return await asyncio.shield(pending)

    def _loaded(self, tenant: str, done: asyncio.Future[_Part]) -> None:
        if self._loading.get(tenant) is done:
            del self._loading[tenant]
        if not done.cancelled():
            done.exception()  # seen: every waiter may have gone (it is theirs to raise)

    async def _load_now(self, tenant: str) -> _Part:
        part = _Part(None)
        path = self._path(tenant)
        if path is not None and path.is_file():
            try:
                part.index = VectorIndex.from_bytes(path.read_bytes(), hnsw_threshold=self.hnsw_threshold)
                part.log_id = part.index.log_id.encode() or None
            except Exception as exc:  # a torn or foreign file: rebuild from Redis instead
                log.warning("kb snapshot unreadable, rebuilding", extra={"shard": self.shard, "error": type(exc).__name__})
                part.index = None
            if part.index is not None and part.index.layout != self.layout:
                # Another layout's part of the tenant (or an older file that does not say).
                log.info("kb snapshot of another shard layout, rebuilding", extra={"shard": self.shard})
                part.index, part.log_id = None, None
        if part.index is None:
            await self._rebuild(tenant, part)
        else:
            await self._catch_up(tenant, part)
        if self._loading.get(tenant) is asyncio.current_task():  # not dropped meanwhile
            self._parts[tenant] = part
        return part

    async def _rebuild(self, tenant: str, part: _Part) -> None:
        part.checked = time.monotonic()
        if self.store is None:
            return
        head = await self.store.log_head(tenant)
        meta = await self.store.meta(tenant)
        ids, vecs = await self.store.scan_vectors(tenant)
        keep = np.isin(ids, mine(tenant, ids, self.shard, self.n_shards, self.block))
        ids, vecs = ids[keep], vecs[keep] if len(ids) else vecs
        dim = vecs.shape[1] if len(ids) else int(meta.get("dim", "0") or 0)
        part.index = self._new_index(dim, meta.get("embedder", "")) if dim else None
        if part.index is not None and len(ids):
            part.index.add(ids, vecs)
        part.log_id = head
        part.dirty = True
        if head:
            # Changes logged while we scanned are applied again; adds and removes are idempotent.
            await self._apply(tenant, part, await self.store.log_since(tenant, head) or [])

    async def _catch_up(self, tenant: str, part: _Part) -> None:
        part.checked = time.monotonic()
        if self.store is None:
            return
        after = part.log_id
        if after is None:
            head = await self.store.log_head(tenant)
            if head is not None:  # knowledge appeared since we loaded an empty tenant
                await self._rebuild(tenant, part)
            return
        entries = await self.store.log_since(tenant, after)
        if entries is None:
            await self._rebuild(tenant, part)
            return
        await self._apply(tenant, part, entries)

    async def _apply(self, tenant: str, part: _Part, entries: list[LogEntry]) -> None:
        assert self.store is not None
        for entry in entries:
            if entry.op == "reset":
                await self._rebuild(tenant, part)
                return
            ids = mine(tenant, entry.ids, self.shard, self.n_shards, self.block)
            if entry.op == "add" and len(ids):
                found, vecs = await self.store.vectors(tenant, ids.tolist())
                if len(found):
                    if part.index is None:
                        meta = await self.store.meta(tenant)
                        part.index = self._new_index(vecs.shape[1], meta.get("embedder", ""))
                    if vecs.shape[1] != part.index.dim:
                        await self._rebuild(tenant, part)
                        return
                    part.index.add(found, vecs)
            elif entry.op == "del" and len(ids) and part.index is not None:
                part.index.remove(ids.tolist())
            part.log_id = entry.id
            part.dirty = True
