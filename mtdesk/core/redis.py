"""The Redis client: one per process, made by the composition root and passed in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

Redis = aioredis.Redis

# What "Redis is unreachable" looks like from redis-py; callers map it to StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


CONNECT_TIMEOUT_S = 10.0
"""How long opening one connection may take (see :func:`connect`)."""


def connect(
    url: str,
    *,
    max_connections: int = 4096,
    client_class: type[Redis] = Redis,
    protocol: int | None = None,
) -> Redis:
    """A client for ``url`` (bytes in, bytes out; hiredis parses when installed).

    Connections open on demand, one per command in flight, up to ``max_connections``;
    past that a command FAILS at once (redis' ConnectionError), so the cap must stay
    above what the process can have in flight. A shard can: up to 2,048 events in flight,
    each conversation with a command pending while its loop lags under load. At 64,
    ``mtdesk bench e2e`` at 300 msgs/s dropped events ("Too many connections"); at 512 it
    still did at 450 msgs/s on a loaded machine. A blocking pool was tried and is worse:
    its lock convoy costs ~5% of a shard's CPU and, under overload, starves waiters past
    any timeout. Idle processes hold few connections; Redis accepts 10,000 by default.

    ``client_class``/``protocol``: a subclass such as the shards' pipelined client, and
    the RESP version its connections speak (None: redis-py's default)."""
    extra: dict[str, Any] = {} if protocol is None else {"protocol": protocol}
    return client_class.from_url(
        url,
        max_connections=max_connections,
        # Measured on this process' event loop, not on the wire: a burst of hundreds of
        # new connections on a loaded host (load 10+) takes several seconds of loop time
        # to open while Redis itself is fine; at 2 s such bursts failed. An unreachable
        # Redis still fails at once (refused), so a long budget costs only a dead host.
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=5.0,
        health_check_interval=30,
        decode_responses=False,
        **extra,
    )


# --- reply types --------------------------------------------------------------------------
# redis-py annotates replies for both of its modes at once (``bytes | str``, and streams as
# ``… | None``). Our client is always bytes-mode (``decode_responses=False`` above), so a
# reply is bytes; these tell the type checker so. They are casts: no runtime work, no check,
# the value is returned as is.
HashFields = dict[FieldT, EncodableT]
"""A mapping built up for HSET (redis-py wants exactly this key type: Mapping keys are
invariant, so a ``dict[str, …]`` is refused)."""

StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
"""XRANGE / XREVRANGE / XCLAIM entries: (entry id, fields)."""


def as_bytes(reply: bytes | str) -> bytes:
    """A bytes-mode reply (a key, a field value, a member) as ``bytes``."""
    return cast(bytes, reply)


def as_opt_bytes(reply: bytes | str | None) -> bytes | None:
    """A bytes-mode reply that may be nil (GET, HGET, LINDEX …)."""
    return cast("bytes | None", reply)


def as_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[bytes, bytes]:
    """An HGETALL reply as ``dict[bytes, bytes]``."""
    return cast("dict[bytes, bytes]", reply)


def as_entries(reply: object) -> StreamEntries:
    """An XRANGE / XREVRANGE reply as a list of (entry id, fields)."""
    return cast(StreamEntries, reply)


def as_scored(reply: object) -> list[tuple[bytes, float]]:
    """A ZRANGE … WITHSCORES reply, or the pairs of a ZSCAN page, as (member, score)."""
    return cast("list[tuple[bytes, float]]", reply)


def as_bytes_list(reply: Sequence[object]) -> list[bytes]:
    """A list of bytes-mode replies: a SCAN / SSCAN page's names, LRANGE, ZRANGE (without
    scores), HKEYS …"""
    return cast("list[bytes]", reply)


def as_bytes_set(reply: set[bytes | str]) -> set[bytes]:
    """An SMEMBERS reply."""
    return cast("set[bytes]", reply)


def as_opt_bytes_list(reply: list[bytes | str | None]) -> list[bytes | None]:
    """An HMGET / MGET reply (nil where a field or key is missing)."""
    return cast("list[bytes | None]", reply)


StreamOffsets = dict[KeyT, StreamIdT]
"""XREADGROUP's ``streams`` argument: stream → id to read after (``">"`` for new)."""

PendingEntries = list[tuple[bytes, dict[bytes, bytes] | None]]
"""Entries read by a consumer group (XREADGROUP, XAUTOCLAIM): fields are None for an
entry that was deleted after it was delivered."""

StreamReads = list[tuple[bytes, PendingEntries]]
"""An XREADGROUP reply: (stream name, entries) per stream (redis-py gives 2-item lists)."""


def as_stream_reads(reply: object) -> StreamReads:
    """An XREADGROUP reply (empty when it timed out)."""
    return cast(StreamReads, reply)


def as_autoclaim(reply: object) -> tuple[bytes, PendingEntries, *tuple[list[bytes], ...]]:
    """An XAUTOCLAIM reply: next start id, the claimed entries, and (Redis 7+) the ids of
    deleted entries."""
    return cast("tuple[bytes, PendingEntries, *tuple[list[bytes], ...]]", reply)
