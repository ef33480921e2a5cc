"""Which retrieval shard actors serve searches: their generation and count.

The director (the process that started the actors) is the only writer. What a caller may
rely on:

- :class:`RetrievalLayout` at ``keys.retrieval_layout()``: ``generation`` names the set of
  actors that serve searches now (:func:`shard_name`), ``shards`` how many there are;
  ``generation`` grows by one with every live re-sharding and never goes back (a restart
  continues with the stored one). ``target`` says a re-sharding toward that count is under
  way (the new generation being started and warmed); ``error`` is why the last one
  stopped, if it did.
- The actors of generation 0 keep the names of deployments older than live re-sharding
  (``mtdesk-retrieval-{i}``), so a running older deployment is still found; later
  generations are ``mtdesk-retrieval-g{generation}-{i}``.
- A conversation shard's retriever re-reads the layout at most once a second (never per
  message) and moves to the new generation's actors when it changed.
"""

from __future__ import annotations

import time

import msgspec

from mtdesk.core import keys
from mtdesk.core.redis import Redis, as_opt_bytes

# The most retrieval shards a deployment may ask for (each is a process).
MAX_SHARDS = 1024


class RetrievalLayout(msgspec.Struct, kw_only=True, omit_defaults=True):
    generation: int
    shards: int
    target: int | None = None
    error: str = ""
    time: float = 0.0


def shard_name(generation: int, index: int) -> str:
    """The retrieval shard actor's name (``ray list actors`` shows it)."""
    if generation == 0:
        return f"mtdesk-retrieval-{index}"
    return f"mtdesk-retrieval-g{generation}-{index}"


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RetrievalLayout).decode


def decode(raw: bytes | None) -> RetrievalLayout | None:
    if raw is None:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return None


async def read(redis: Redis) -> RetrievalLayout | None:
    return decode(as_opt_bytes(await redis.get(keys.retrieval_layout())))


async def write(redis: Redis, layout: RetrievalLayout) -> None:
    layout.time = time.time()
    await redis.set(keys.retrieval_layout(), _encode(layout))


def to_json(layout: RetrievalLayout) -> bytes:
    return _encode(layout)
