"""A reply the Graph API keeps refusing with retriable errors (an outage, a throttling
storm) longer than the sender's own retries is still delivered, once, when it ends;
a refusal that is not retriable, or one that outlasts MTDESK_SEND_RETRY_FOR_S, ends it
failed as before."""

from __future__ import annotations

from shardkit import desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.core.redis import Redis

QUICK = {"base_delay_s": 0.01, "max_delay_s": 0.02, "max_attempts": 2}


async def test_a_storm_longer_than_the_senders_retries_delays_the_reply_but_loses_nothing(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        # 503, 613 and 130429 in turn, six answers: three rounds of the sender's 2 tries.
        for code, status in ((0, 503), (613, 400), (130429, 400)) * 2:
            d.graph.fail_next("*", code, http_status=status)
        shard = await d.shard(sender_options=QUICK)
        await shard.start()
        await d.push(d.message("is it in stock?", user="U1"))
        await eventually(lambda: len(d.graph.sends) == 1, within=30)
        await eventually(lambda: shard.handled == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: is it in stock?"]
        assert len(d.graph.attempts) == 7  # six refusals, then the one that went
        assert len(d.llm.chat_requests) == 1  # the same stored reply, not a new answer


async def test_a_storm_outlasting_the_budget_ends_the_reply_failed(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, send_retry_for_s=0.5) as d:
        d.graph.fail_next("*", 613, times=1000)
        shard = await d.shard(sender_options=QUICK)
        await shard.start()
        event = d.message("hello?", user="U1")
        await d.push(event)
        await eventually(lambda: shard.handled == 1, within=30)
        assert d.graph.sends == []
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        assert (await replies.load(d.tenant_id, event.event_id)).state == "failed"


async def test_a_refusal_that_is_not_retriable_is_not_tried_again(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        d.graph.fail_next("*", 551)  # this person isn't available
        shard = await d.shard(sender_options=QUICK)
        await shard.start()
        await d.push(d.message("hello?", user="U1"))
        await eventually(lambda: shard.handled == 1)
        assert len(d.graph.attempts) == 1 and d.graph.sends == []
