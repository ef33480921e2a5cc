"""The Redis client: one per process, made by the composition root and passed in."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Redis = aioredis.Redis

# What "Redis is unreachable" looks like from redis-py; callers map it to StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 512) -> Redis:
    """A client for ``url`` (bytes in, bytes out; hiredis parses when installed).

    Connections open on demand up to ``max_connections``; past that a command fails at
    once (redis' ConnectionError). The default is far above what a process uses (one
    connection per command in flight) because a shard hosts hundreds of conversations
    that each have a command in flight when its loop lags under load: at 64, ``mtdesk
    bench e2e`` at 300 msgs/s dropped events ("Too many connections"). A blocking pool
    was tried and is worse: its lock convoy costs ~5% of a shard's CPU, and under
    overload a waiter can starve past any timeout."""
    return aioredis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        decode_responses=False,
    )
