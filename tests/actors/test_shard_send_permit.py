"""A reply's first send takes its rate-limit permit in the same step that stores the
generated text: each part sent counts exactly once against the account's per-second
limit (shared by all shards), never twice. (A window's counter lives 2 s: each is read
right after its reply.)"""

from __future__ import annotations

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.core import keys
from mtdesk.core.redis import Redis


async def _counted(redis: Redis, channel: str) -> int:
    total = 0
    async for key in redis.scan_iter(match=keys.rate(channel, ACCOUNTS[channel], 0)[:-1] + "*"):
        total += int(await redis.get(key) or 0)
    return total


async def test_each_part_sent_counts_once_against_the_send_rate_limit(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("hello", user="r1"))
        await eventually(lambda: shard.handled == 1)
        assert len(d.texts_to("r1")) == 1
        assert await _counted(redis, "messenger") == 1
        long_text = "Tell me everything. " * 150  # the echo reply is split in parts
        await d.push(d.message(long_text, user="r2", channel="instagram"))
        await eventually(lambda: shard.handled == 2)
        parts = len(d.texts_to("r2"))
        assert parts > 1
        assert await _counted(redis, "instagram") == parts
