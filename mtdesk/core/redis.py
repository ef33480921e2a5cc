"""The Redis client: one per process, made by the composition root and passed in."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Redis = aioredis.Redis

# What "Redis is unreachable" looks like from redis-py; callers map it to StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 64, pool_timeout_s: float = 10.0) -> Redis:
    """A client for ``url`` (bytes in, bytes out; hiredis parses when installed).

    At most ``max_connections`` connections; when all are busy a caller WAITS up to
    ``pool_timeout_s`` for one (then redis' ConnectionError) instead of failing at once:
    a shard with more busy conversations than connections must not drop events."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
