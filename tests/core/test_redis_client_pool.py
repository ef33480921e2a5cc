"""The process's Redis client under many concurrent commands: a shard hosting hundreds of
busy conversations has hundreds of commands in flight when its loop lags, and none may
fail with "Too many connections" (an event failing there is answered a minute late, and
may be answered twice)."""

from __future__ import annotations

import asyncio

from mtdesk.core.redis import connect


async def test_three_hundred_commands_in_flight_at_once_all_succeed(redis, redis_url) -> None:
    client = connect(redis_url)
    try:
        # BLPOP on an empty list holds its connection for its whole timeout, so all of
        # these are in flight together.
        results = await asyncio.gather(
            *(client.blpop([f"empty-{i}"], timeout=0.2) for i in range(300)),
            *(client.incr("counter") for _ in range(50)),
        )
    finally:
        await client.aclose()
    assert results[:300] == [None] * 300
    assert sorted(results[300:]) == list(range(1, 51))
    assert int(await redis.get("counter")) == 50
