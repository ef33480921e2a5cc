"""One FAISS index of inner-product vectors with int64 ids (a tenant's part on a shard).

Exact search (``IndexIDMap2`` over ``IndexFlatIP``) while small; past ``hnsw_threshold``
vectors it becomes HNSW (``IndexHNSWFlat``, M=32) for sub-millisecond queries. HNSW cannot
remove ids, so removal there marks *tombstones* that searches skip (an ``IDSelectorNot``);
when tombstones pass ``compact_ratio`` of the index it is rebuilt without them.

Not thread-safe: one owner (a shard) calls it. Vectors must be L2-normalized float32.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any, cast

import faiss
import msgspec
import numpy as np


class _Header(msgspec.Struct, frozen=True):
    dim: int
    kind: str
    tombstones: list[int]
    log_id: str
    embedder: str
    layout: str = ""  # which chunks of the tenant (see placement.layout); "" = not recorded


class VectorIndex:
    def __init__(
        self, dim: int, *, hnsw_threshold: int = 20_000, compact_ratio: float = 0.2,
        hnsw_m: int = 32, ef_search: int = 64, ef_construction: int = 64,
        embedder: str = "", log_id: str = "", layout: str = "",
    ) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.compact_ratio = compact_ratio
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.embedder = embedder
        self.log_id = log_id  # the last change-log entry this index reflects (see shard)
        self.layout = layout  # which of the tenant's chunks it holds (see shard)
        self.kind = "flat"
        # Always an id map (IndexIDMap2 over a flat index, IndexIDMap over HNSW).
        self._index: faiss.IndexIDMap = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._tombstones: set[int] = set()
        self._live: set[int] = set()  # makes adds idempotent (a log replay may repeat one)
        self._params: faiss.SearchParameters | None = None

    # -- size ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def nbytes(self) -> int:
        """Approximate memory (vectors, graph links, id map)."""
        n = int(self._index.ntotal)
        per = self.dim * 4 + 8
        if self.kind == "hnsw":
            per += self.hnsw_m * 2 * 4 + 8  # level-0 links dominate
        return n * per

    # -- writes ----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        fresh = np.fromiter((i not in self._live for i in ids.tolist()), dtype=bool, count=len(ids))
        ids, vectors = ids[fresh], vectors[fresh]
        if not len(ids):
            return
        self._live.update(ids.tolist())
        if self.kind == "flat" and int(self._index.ntotal) + len(ids) > self.hnsw_threshold:
            old_ids, old_vecs = self._all()
            self._build_hnsw(np.concatenate([old_ids, ids]), np.concatenate([old_vecs, vectors]))
            return
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids; returns how many were present."""
        arr = np.fromiter((int(i) for i in ids), dtype=np.int64)
        if not len(arr):
            return 0
        present = {i for i in arr.tolist() if i in self._live}
        self._live -= present
        if not present:
            return 0
        if self.kind == "flat":
            return int(self._index.remove_ids(faiss.IDSelectorBatch(np.fromiter(present, dtype=np.int64))))
        self._tombstones |= present
        self._params = None
        if self._tombstones and len(self._tombstones) > self.compact_ratio * int(self._index.ntotal):
            self.compact()
        return len(present)

    def compact(self) -> None:
        """Rebuild without tombstones (and as flat again when it shrank below the threshold)."""
        ids, vecs = self._all()
        keep = ~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))
        ids, vecs = ids[keep], vecs[keep]
        self._tombstones.clear()
        self._params = None
        if len(ids) > self.hnsw_threshold:
            self._build_hnsw(ids, vecs)
        else:
            self.kind = "flat"
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            if len(ids):
                self._index.add_with_ids(vecs, ids)

    # -- reads -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if int(self._index.ntotal) == 0 or k <= 0:
            n = len(queries)
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        if self.kind == "hnsw":
            scores, ids = self._index.search(queries, k, params=self._search_params())
        else:
            scores, ids = self._index.search(queries, k)
        return scores, ids

    def ids(self) -> np.ndarray:
        return np.array(sorted(self._live), dtype=np.int64)

    def __contains__(self, chunk_id: int) -> bool:
        return chunk_id in self._live

    # -- snapshots -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = msgspec.msgpack.encode(
            _Header(self.dim, self.kind, sorted(self._tombstones), self.log_id, self.embedder,
                    self.layout)
        )
        body = faiss.serialize_index(self._index).tobytes()
        out = io.BytesIO()
        out.write(len(header).to_bytes(4, "little"))
        out.write(header)
        out.write(body)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, **options: int | float) -> VectorIndex:
        n = int.from_bytes(data[:4], "little")
        header = msgspec.msgpack.decode(data[4 : 4 + n], type=_Header)
        index = cls(header.dim, embedder=header.embedder, log_id=header.log_id,
                    layout=header.layout, **options)  # type: ignore[arg-type]
        index.kind = header.kind
        # faiss's stubs say Index; the object is downcast to what was serialized: an id map.
        index._index = cast(
            faiss.IndexIDMap, faiss.deserialize_index(np.frombuffer(data[4 + n :], dtype=np.uint8))
        )
        index._tombstones = set(header.tombstones)
        index._live = set(index._all(vectors=False)[0].tolist()) - index._tombstones
        if index.kind == "hnsw":
            inner = cast(faiss.IndexHNSW, faiss.downcast_index(index._index.index))
            inner.hnsw.efSearch = index.ef_search
        return index

    # -- internals -------------------------------------------------------------------------
    def _search_params(self) -> faiss.SearchParameters:
        if self._params is None:
            # Missing from faiss's stubs (present in the module): typed loosely here.
            params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = self.ef_search
            if self._tombstones:
                dead = np.fromiter(self._tombstones, dtype=np.int64)
                self._selector_parts: tuple[faiss.IDSelector, ...] = (faiss.IDSelectorBatch(dead),)
                params.sel = faiss.IDSelectorNot(self._selector_parts[0])
                self._selector_parts += (params.sel,)  # keep the C++ objects alive
            self._params = params
        return self._params

    def _all(self, *, vectors: bool = True) -> tuple[np.ndarray, np.ndarray]:
        n = int(self._index.ntotal)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64) if n else np.zeros(0, np.int64)
        if not vectors:
            return ids, np.zeros((0, self.dim), np.float32)
        vecs = self._index.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        return ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def _build_hnsw(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        index = faiss.IndexIDMap(hnsw)
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
        self._index = index
        self.kind = "hnsw"
        self._params = None
