"""The Redis client: one per process, made by the composition root and passed in."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Redis = aioredis.Redis

# What "Redis is unreachable" looks like from redis-py; callers map it to StoreUnavailable.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 4096) -> Redis:
    """A client for ``url`` (bytes in, bytes out; hiredis parses when installed).

    Connections open on demand, one per command in flight, up to ``max_connections``;
    past that a command FAILS at once (redis' ConnectionError), so the cap must stay
    above what the process can have in flight. A shard can: up to 2,048 events in flight,
    each conversation with a command pending while its loop lags under load. At 64,
    ``mtdesk bench e2e`` at 300 msgs/s dropped events ("Too many connections"); at 512 it
    still did at 450 msgs/s on a loaded machine. A blocking pool was tried and is worse:
    its lock convoy costs ~5% of a shard's CPU and, under overload, starves waiters past
    any timeout. Idle processes hold few connections; Redis accepts 10,000 by default."""
    return aioredis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        decode_responses=False,
    )
