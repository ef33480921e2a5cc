"""The process's Redis client under more concurrent callers than it has connections:
callers wait for a free connection rather than fail (a shard hosting hundreds of busy
conversations on a 64-connection pool must not drop events with "Too many connections")."""

from __future__ import annotations

import asyncio

from mtdesk.core.redis import connect


async def test_more_concurrent_commands_than_connections_all_succeed(redis, redis_url) -> None:
    client = connect(redis_url, max_connections=2)
    try:
        # BLPOP on an empty list holds its connection for its whole timeout.
        results = await asyncio.gather(
            *(client.blpop([f"empty-{i}"], timeout=0.1) for i in range(8)),
            *(client.incr("counter") for _ in range(20)),
        )
    finally:
        await client.aclose()
    assert results[:8] == [None] * 8
    assert sorted(results[8:]) == list(range(1, 21))
    assert int(await redis.get("counter")) == 20
