"""A plain ConversationShard against real Redis, the fake Graph API and the fake LLM:
every message answered once, in order, on the channel it came from."""

from __future__ import annotations

from shardkit import desk, eventually

from mtdesk.core.redis import Redis


async def test_a_message_on_each_channel_gets_one_reply_from_the_tenants_model(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        for channel in ("messenger", "instagram", "whatsapp"):
            await d.push(d.message(f"hello from {channel}", user=f"u-{channel}", channel=channel))
        await eventually(lambda: len(d.graph.sends) == 3)
        for channel in ("messenger", "instagram", "whatsapp"):
            assert d.texts_to(f"u-{channel}") == [f"[gpt-test] You said: hello from {channel}"]
        await eventually(lambda: d.stream_lengths())  # noqa: B023 - placeholder check
