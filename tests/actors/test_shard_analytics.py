"""Analytics counted where the events happen, through a real shard (real Redis, the fake
Graph API and the fake LLM): a message in and the bot's reply, its time and tokens; a
person answering from Meta's inbox (a hand-off); a reply Meta refuses, by reason. Read
back as the console's API reads it, and written in one small pipeline per second."""

from __future__ import annotations

import time

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.core import analytics, keys
from mtdesk.core.events import Echo, Handover
from mtdesk.core.redis import Redis


def _today() -> list[str]:
    return [analytics.day_of(int(time.time() * 1000))]


async def _figures(redis: Redis, tenant: str, channel: str = "messenger") -> analytics.Figures:
    return (await analytics.read(redis, tenant, _today(), (channel,)))[0]


async def test_a_message_and_the_bots_reply_are_counted_with_time_and_tokens(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard(analytics_interval_s=0.05)
        await shard.start()
        for user in ("U1", "U2", "U1"):
            await d.push(d.message("what are your hours?", user=user))
            await eventually(lambda: len(d.graph.sends) >= 1)
        await eventually(lambda: shard.handled == 3)

        async def counted() -> bool:
            return (await _figures(redis, d.tenant_id)).bot_replies == 3
        await eventually(counted)
        f = (await _figures(redis, d.tenant_id)).as_json()
        assert f["messages_in"] == 3
        assert f["human_replies"] == 0 and f["handoffs"] == 0
        assert f["conversations_answered"] == 2  # U1 twice is one conversation
        assert f["automation_rate"] == 1.0
        assert f["reply_time_ms"]["replies"] == 3
        assert 0 <= f["reply_time_ms"]["median"] <= f["reply_time_ms"]["p95"] <= 60_000
        assert f["llm_tokens"]["prompt"] > 0 and f["llm_tokens"]["completion"] > 0
        assert f["failures"] == {}
        # another channel's figures are its own
        assert (await _figures(redis, d.tenant_id, "whatsapp")).messages_in == 0
        # counts only: no text, no user id in the day's hash; a TTL within a year
        day = keys.analytics(d.tenant_id, _today()[0])
        raw = await redis.hgetall(day)
        assert all(b"U1" not in k and b"hours" not in k for k in raw)
        assert 0 < await redis.ttl(day) <= 366 * 86400


async def test_a_person_answering_from_metas_inbox_is_a_hand_off_and_a_human_reply(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, handoff_pause_s=600) as d:
        shard = await d.shard(analytics_interval_s=0.05)
        await shard.start()
        await d.push(d.message("hello", user="U1"))
        await d.push(d.message("hello", user="U2"))
        await eventually(lambda: shard.handled == 2)
        for n in (1, 2):  # two messages typed by a person: one hand-off
            await d.push(Echo(event_id=f"m.agent.{n}", channel="messenger",
                              account_id=ACCOUNTS["messenger"], user_id="U1",
                              timestamp_ms=int(time.time() * 1000), app_id="263902037430900",
                              text="a person here"))
        await eventually(lambda: shard.handled == 4)

        async def counted() -> bool:
            return (await _figures(redis, d.tenant_id)).human_replies == 2
        await eventually(counted)
        f = (await _figures(redis, d.tenant_id)).as_json()
        assert (f["bot_replies"], f["human_replies"], f["handoffs"]) == (2, 2, 1)
        assert (f["conversations_answered"], f["conversations_with_human"]) == (2, 1)
        assert f["automation_rate"] == 0.5


async def test_thread_control_passed_to_another_app_is_a_hand_off_and_standby_is_in(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard(analytics_interval_s=0.05)
        await shard.start()
        now = int(time.time() * 1000)
        await d.push(Handover(event_id="h1", channel="messenger", account_id=ACCOUNTS["messenger"],
                              user_id="U1", timestamp_ms=now, action="pass",
                              new_owner_app_id="263902037430900"))
        await d.push(d.message("is anyone there?", user="U1", standby=True))
        await eventually(lambda: shard.handled == 2)

        async def counted() -> bool:
            return (await _figures(redis, d.tenant_id)).messages_in == 1
        await eventually(counted)
        f = await _figures(redis, d.tenant_id)
        assert (f.handoffs, f.bot_replies) == (1, 0)
        assert d.graph.sends == []


async def test_a_reply_meta_refuses_is_counted_by_reason(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        d.graph.fail_next(ACCOUNTS["messenger"], 10, 2018278)  # outside the window
        shard = await d.shard(analytics_interval_s=0.05)
        await shard.start()
        await d.push(d.message("hello?", user="U1"))
        await eventually(lambda: shard.handled == 1)

        async def counted() -> bool:
            return bool((await _figures(redis, d.tenant_id)).failures)
        await eventually(counted)
        f = await _figures(redis, d.tenant_id)
        assert f.failures == {"outside the 24 h window (10/2018278)": 1}
        assert f.bot_replies == 0 and f.messages_in == 1


async def test_many_messages_cost_one_pipeline_of_a_few_commands(
    redis: Redis, redis_url: str
) -> None:
    """Counting adds no round trip per message: the shard writes its tally as one
    pipeline whose size depends on the fields touched, not on the messages."""
    async with desk(redis, redis_url) as d:
        shard = await d.shard(analytics_interval_s=3600)  # written only when asked here
        await shard.start()
        for i in range(30):
            await d.push(d.message(f"question {i}", user=f"U{i % 3}"))
        await eventually(lambda: shard.handled == 30, within=60)
        tally = shard._conv_services.tally
        commands = await tally.flush(redis)
        # in, bot, tok_in, tok_out and a few reply-time buckets + EXPIREAT; one PFADD
        # of the three conversations + EXPIREAT
        assert commands <= 12
        f = (await _figures(redis, d.tenant_id)).as_json()
        # a person's queued messages are answered by one reply (a burst): one reply each
        assert (f["messages_in"], f["conversations_answered"]) == (30, 3)
        assert 3 <= f["bot_replies"] == len(d.graph.sends) <= 30
        assert not tally  # written and forgotten
