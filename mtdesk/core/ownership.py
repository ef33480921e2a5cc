"""Which conversation shard owns each inbound partition: the ownership map and its epoch.

The director (the process that started the shards) is the only writer. What a caller may
rely on:

- :class:`Ownership` at ``keys.shard_ownership()``: ``owners[p]`` is the shard index that
  owns partition ``p``, ``epochs[p]`` the epoch at which it got it; ``epoch`` grows by one
  with every handover (never goes back, also across restarts of the director);
  ``target``/``moving`` say a re-sharding is under way (toward ``target`` shards, handing
  over partition ``moving`` now); ``error`` is why the last one stopped, if it did.
- ``keys.partition_owner(p)`` holds ``epochs[p]`` as text: the fence. A shard passes the
  epoch it holds ``p`` at to the scripts that acknowledge its entries (and, on one Redis
  server, to the reply's send permit); a different value there means the partition was
  handed over: the stale owner neither acknowledges nor sends for it.
- :func:`plan` is pure: the fewest partitions moved to give ``shards`` shards a balanced
  share (every count within one of the others); :func:`moves` lists them.
- :class:`ReshardRequest` at ``keys.reshard_request()``: the count an operator asked for
  (``mtdesk shards set N``, ``POST /admin/api/v1/cluster/shards``), and the retrieval shard
  count if one was asked for (core/retrieval_layout.py); the director follows it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec

from mtdesk.core import keys
from mtdesk.core.redis import Redis, as_opt_bytes


class Ownership(msgspec.Struct, kw_only=True, omit_defaults=True):
    epoch: int
    owners: list[int]
    epochs: list[int]
    shards: int
    target: int | None = None
    moving: int | None = None
    error: str = ""
    time: float = 0.0

    def partitions_of(self, shard: int) -> list[int]:
        return [p for p, owner in enumerate(self.owners) if owner == shard]

    def held(self, shard: int) -> dict[int, int]:
        """Partition → the epoch ``shard`` holds it at."""
        return {p: self.epochs[p] for p, owner in enumerate(self.owners) if owner == shard}

    def per_shard(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for p, owner in enumerate(self.owners):
            out.setdefault(owner, []).append(p)
        return out


class ReshardRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    conversation: int
    retrieval: int | None = None  # retrieval shards wanted (None: as they are)
    time: float = 0.0


def shard_name(index: int) -> str:
    """The conversation shard actor's name (``ray list actors`` shows it)."""
    return f"mtdesk-shard-{index}"


def round_robin(partitions: int, shards: int) -> list[int]:
    """``owners`` of a fresh deployment: partition ``p`` to shard ``p % shards``."""
    return [p % shards for p in range(partitions)]


def plan(owners: Sequence[int], shards: int) -> list[int]:
    """The owners after re-sharding to ``shards``, moving as few partitions as possible:
    every shard ends with ``P // shards`` or one more (the shards holding most keep the
    extra ones); partitions of shards ``>= shards`` move, and the surplus of shards over
    their share."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    total = len(owners)
    base, extra = divmod(total, shards)
    held: dict[int, list[int]] = {s: [] for s in range(shards)}
    spare: list[int] = []
    for p, owner in enumerate(owners):
        (held[owner] if 0 <= owner < shards else spare).append(p)
    order = sorted(range(shards), key=lambda s: (-len(held[s]), s))
    share = {s: base + (1 if i < extra else 0) for i, s in enumerate(order)}
    new = list(owners)
    for s in range(shards):
        spare.extend(held[s][share[s]:])
        held[s] = held[s][:share[s]]
    spare.sort()
    for s in range(shards):
        while len(held[s]) < share[s]:
            p = spare.pop(0)
            held[s].append(p)
            new[p] = s
    return new


def moves(old: Sequence[int], new: Sequence[int]) -> list[tuple[int, int, int]]:
    """(partition, from, to) for every partition whose owner changes, sources taking
    turns (one shard's drains are spread over the whole re-sharding)."""
    by_source: dict[int, list[tuple[int, int, int]]] = {}
    for p, (a, b) in enumerate(zip(old, new, strict=True)):
        if a != b:
            by_source.setdefault(a, []).append((p, a, b))
    out: list[tuple[int, int, int]] = []
    queues = [by_source[s] for s in sorted(by_source)]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


_encode = msgspec.json.Encoder().encode
_decode_map = msgspec.json.Decoder(Ownership).decode
_decode_request = msgspec.json.Decoder(ReshardRequest).decode


async def read(redis: Redis) -> Ownership | None:
    raw = as_opt_bytes(await redis.get(keys.shard_ownership()))
    if raw is None:
        return None
    try:
        return _decode_map(raw)
    except msgspec.DecodeError:
        return None


async def write(redis: Redis, ownership: Ownership) -> None:
    ownership.time = time.time()
    await redis.set(keys.shard_ownership(), _encode(ownership))


async def fence(redis: Redis, partition: int, epoch: int) -> None:
    """Make ``epoch`` the only one allowed to acknowledge (and send) for ``partition``."""
    await redis.set(keys.partition_owner(partition), str(epoch))


async def request(redis: Redis, conversation: int, retrieval: int | None = None) -> ReshardRequest:
    """Ask for ``conversation`` shards (and ``retrieval`` shards: None keeps the retrieval
    count asked for before, if any, so a request for conversation shards alone, e.g. the
    autoscaler's, does not cancel one for retrieval shards)."""
    if retrieval is None:
        before = await read_request(redis)
        retrieval = before.retrieval if before is not None else None
    wanted = ReshardRequest(conversation=conversation, retrieval=retrieval, time=time.time())
    await redis.set(keys.reshard_request(), _encode(wanted))
    return wanted


async def read_request(redis: Redis) -> ReshardRequest | None:
    raw = as_opt_bytes(await redis.get(keys.reshard_request()))
    if raw is None:
        return None
    try:
        return _decode_request(raw)
    except msgspec.DecodeError:
        return None


def to_json(ownership: Ownership) -> bytes:
    return _encode(ownership)
