"""A shard caps the conversations working at once (MTDESK_MAX_CONCURRENT_CONVERSATIONS):
under load the others wait their turn, and every message is still answered once."""

from __future__ import annotations

import asyncio

from shardkit import desk, eventually

from mtdesk.core.redis import Redis


async def test_at_most_the_cap_of_conversations_wait_on_the_model_at_once(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, max_concurrent_conversations=2) as d:
        d.llm.latency_s = 0.8
        shard = await d.shard()
        await shard.start()
        users = [f"c{i}" for i in range(5)]
        for u in users:
            await d.push(d.message(f"hello from {u}", user=u))
        await eventually(lambda: len(d.llm.chat_requests) == 2)
        await asyncio.sleep(0.3)  # the other three are queued, not calling the model
        assert len(d.llm.chat_requests) == 2
        await eventually(lambda: all(d.texts_to(u) for u in users))
        assert [len(d.texts_to(u)) for u in users] == [1] * 5
        assert len(d.llm.chat_requests) == 5
        await eventually(lambda: shard.handled == 5)
