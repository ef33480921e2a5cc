"""Where a tenant's chunks live: ids in blocks of ``block`` consecutive chunk ids.

Chunk ids only grow, so a tenant's first ``block`` chunks share one shard, and when its
knowledge grows past that, the next block opens on the next shard: knowledge spreads
across shards as it grows, without moving what is already placed. A query fans out to
the shards holding the tenant's blocks and merges the top-k.
"""

from __future__ import annotations

import zlib

import numpy as np


def home(tenant: str, n_shards: int) -> int:
    return zlib.crc32(tenant.encode("utf-8")) % n_shards


def shard_of(tenant: str, chunk_id: int, n_shards: int, block: int) -> int:
    return (home(tenant, n_shards) + (chunk_id - 1) // block) % n_shards


def mine(tenant: str, ids: np.ndarray, shard: int, n_shards: int, block: int) -> np.ndarray:
    """The ids of ``ids`` that live on ``shard``."""
    if n_shards == 1 or not len(ids):
        return ids
    placed = (home(tenant, n_shards) + (ids - 1) // block) % n_shards
    return ids[placed == shard]


def layout(shard: int, n_shards: int, block: int) -> str:
    """Which of a tenant's chunks ``shard`` holds, as a snapshot records it: a snapshot
    made under another layout holds other chunks (e.g. only part of the tenant)."""
    return "all" if n_shards == 1 else f"{shard}/{n_shards}/{block}"


def shards_for(tenant: str, max_chunk_id: int, n_shards: int, block: int) -> list[int]:
    """The shards that may hold any of a tenant's chunks (ids 1..max_chunk_id)."""
    blocks = max(1, (max(max_chunk_id, 1) - 1) // block + 1)
    start = home(tenant, n_shards)
    return sorted({(start + b) % n_shards for b in range(min(blocks, n_shards))})
