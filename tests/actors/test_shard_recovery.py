"""Crashes, restarts, failures and bounded memory: nothing lost, nothing answered twice."""

from __future__ import annotations

import asyncio
import time

from shardkit import ACCOUNTS, desk, eventually

from mtdesk.actors.replies import OutgoingReply, ReplyStore
from mtdesk.channels.outbound import split_text
from mtdesk.core import analytics, keys
from mtdesk.core.events import conversation_key
from mtdesk.core.history import StoredMessage
from mtdesk.core.inbox import Inbox
from mtdesk.core.redis import Redis


async def test_a_shard_restarted_mid_stream_resumes_its_pending_entries_without_duplicates(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        first = await d.shard(ack_delay_s=0.5)  # acks lag behind: some replies sent, not acked
        await first.start()
        early = [f"a{i}" for i in range(4)]
        for u in early:
            await d.push(d.message(f"hello from {u}", user=u))
        await eventually(lambda: all(d.texts_to(u) for u in early))
        d.llm.latency_s = 1.0
        late = [f"b{i}" for i in range(4)]
        for u in late:
            await d.push(d.message(f"hello from {u}", user=u))
        await eventually(lambda: len(d.llm.chat_requests) == 8)  # b* are at the model
        await first.abort()  # a crash: nothing drained, nothing more acknowledged
        assert await d.pending() >= 4
        d.llm.latency_s = 0.0
        again = await d.shard()  # same index, so the same consumer: resumes its entries
        await again.start()

        async def settled() -> bool:
            return await d.pending() == 0

        await eventually(settled)
        for u in early + late:
            assert d.texts_to(u) == [f"[gpt-test] You said: hello from {u}"]
        assert again.handled >= 4


async def test_a_half_sent_split_reply_resumes_from_the_next_part_with_the_same_text(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        # The state a crash leaves: the reply generated and stored, part 0 accepted by Meta
        # and recorded, the inbound entry read by shard-0 but never acknowledged.
        event = d.message("tell me everything")
        await redis.xgroup_create(keys.inbound(0), keys.SHARD_GROUP, id="0", mkstream=True)
        for p in range(1, d.settings.partitions):
            await redis.xgroup_create(keys.inbound(p), keys.SHARD_GROUP, id="0", mkstream=True)
        await d.push(event)
        for p in range(d.settings.partitions):
            await redis.xreadgroup(keys.SHARD_GROUP, "shard-0", {keys.inbound(p): ">"})
        long_text = " ".join(f"Sentence number {i} of the stored answer." for i in range(120))
        parts = split_text("messenger", long_text)
        assert len(parts) >= 3
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        now = int(time.time() * 1000)
        await replies.store_inbound(d.tenant_id, event.event_id, StoredMessage(
            direction="in", message_id=event.event_id, kind="message", channel="messenger",
            account_id=ACCOUNTS["messenger"], user_id="U1", timestamp_ms=now,
            text="tell me everything"), now_ms=now)
        assert await replies.claim(d.tenant_id, event.event_id, [], now_ms=now) == []
        assert await replies.generated(d.tenant_id, event.event_id, long_text, "openai",
                                       "gpt-test", now_ms=now)
        reply = OutgoingReply.of(d.tenant_id, event, long_text, "openai", "gpt-test")
        await replies.resume(reply, context=lambda state: None).part_sent(0, "m.part0")

        shard = await d.shard()
        await shard.start()
        await eventually(lambda: shard.handled == 1)
        assert [s.text for s in d.graph.sends] == parts[1:]  # part 0 not sent again
        assert d.llm.chat_requests == []  # the same stored text, not a new answer
        record = await replies.load(d.tenant_id, event.event_id)
        assert record.state == "sent" and record.parts_sent == len(parts)
        out = [m for m in await d.store().read(d.tenant_id, event.conversation)
               if m.direction == "out"]
        assert [m.part for m in out] == list(range(len(parts)))


async def test_memory_is_bounded_and_context_comes_back_on_reactivation(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, max_active_conversations=2) as d:
        d.llm.latency_s = 0.05
        shard = await d.shard()
        await shard.start()
        peak = 0
        users = [f"p{i}" for i in range(6)]
        for u in users:
            await d.push(d.message(f"my name is {u}", user=u))

        def all_answered() -> bool:
            nonlocal peak
            peak = max(peak, shard.active_conversations)
            return all(d.texts_to(u) for u in users)

        await eventually(all_answered)
        assert peak <= 2
        assert shard.active_conversations <= 2
        # p0 was evicted long ago; its context is restored from Redis.
        await d.push(d.message("what is my name?", user="p0"))
        await eventually(lambda: len(d.texts_to("p0")) == 2)
        prompt = [m["content"] for m in d.llm.chat_requests[-1].messages]
        assert "my name is p0" in prompt and "[gpt-test] You said: my name is p0" in prompt


async def test_graph_190_is_not_retried_and_disconnects_the_channel(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        d.graph.fail_next(ACCOUNTS["messenger"], 190, http_status=401)
        first = d.message("hello")
        await d.push(first)
        await eventually(lambda: shard.handled == 1)
        assert len(d.graph.attempts) == 1 and d.graph.sends == []
        record = await ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=d.cipher()).load(
            d.tenant_id, first.event_id)
        assert (record.state, record.reason) == ("failed", "graph error 190")
        status = await redis.hget(keys.channel(d.tenant_id, d.channel_ids["messenger"]), "status")
        assert status == b"disconnected"
        # Later messages on that channel are recorded, not answered (no model call either).
        second = d.message("anyone?")
        await d.push(second)
        await eventually(lambda: shard.handled == 2)
        assert len(d.llm.chat_requests) == 1 and len(d.graph.attempts) == 1
        history = await d.store().read(d.tenant_id, second.conversation)
        assert history[-1].reason == "channel disconnected"


async def test_a_failing_model_gets_the_fallback_message_and_a_person_and_nothing_crashes(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard(analytics_interval_s=0.05)
        await shard.start()
        d.llm.fail_next(500)
        first = d.message("hello")
        await d.push(first)
        await eventually(lambda: shard.handled == 1)
        assert d.texts_to("U1") == ["Sorry, I don't know the answer to that yet. "
                                    "A person will follow up."]
        record = await ReplyStore(redis, ttl_s=60, history_ttl_s=60, cipher=d.cipher()).load(
            d.tenant_id, first.event_id)
        assert record.state == "sent" and record.provider == "fallback"
        assert shard.metrics.count("fallback") == 1
        # "A person will follow up": the conversation is a person's now, in the inbox and
        # in the analytics, and the bot says nothing more in it.
        conv = conversation_key("messenger", ACCOUNTS["messenger"], "U1")
        card = await Inbox(redis, d.cipher()).card(d.tenant_id, conv)
        assert card is not None and card.status == "human"

        async def handed_off() -> bool:
            day = analytics.day_of(int(time.time() * 1000))
            return (await analytics.read(redis, d.tenant_id, [day], ("messenger",)))[0] \
                .handoffs == 1
        await eventually(handed_off)
        await d.push(d.message("still there?"))
        await eventually(lambda: shard.handled == 2)
        assert len(d.texts_to("U1")) == 1
        await d.push(d.message("and now?", user="U2"))  # the shard carries on
        await eventually(lambda: len(d.graph.sends) == 2)
        assert d.texts_to("U2") == ["[gpt-test] You said: and now?"]


async def test_entries_left_by_a_shard_that_no_longer_exists_are_claimed(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        for p in range(d.settings.partitions):
            await redis.xgroup_create(keys.inbound(p), keys.SHARD_GROUP, id="0", mkstream=True)
        event = d.message("left behind")
        await d.push(event)
        for p in range(d.settings.partitions):  # read by shard-7, which then went away
            await redis.xreadgroup(keys.SHARD_GROUP, "shard-7", {keys.inbound(p): ">"})
        shard = await d.shard(claim_idle_ms=0, claim_interval_s=0.1)
        await shard.start()
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: left behind"]
        await eventually(lambda: shard.handled == 1)
        assert await d.pending() == 0


async def test_an_erasure_notice_makes_the_shard_forget_a_cached_conversation(
    redis: Redis, redis_url: str
) -> None:
    import json

    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        event = d.message("my address is 1 Main St")
        await d.push(event)
        await eventually(lambda: shard.handled == 1)
        # What the privacy module does: delete the data, then tell the shards.
        await redis.delete(keys.context(d.tenant_id, event.conversation),
                           keys.history(d.tenant_id, event.conversation))
        await eventually(lambda: redis.publish(keys.ERASURE_NOTICES, json.dumps({
            "scope": "conversations", "tenant": d.tenant_id,
            "conversations": [event.conversation]})))
        await eventually(lambda: shard.active_conversations == 0)
        await shard.stop()  # stopping persists contexts: the erased one must stay gone
        assert not await redis.exists(keys.context(d.tenant_id, event.conversation))


async def test_a_shard_keeps_reading_after_its_streams_were_deleted(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        await d.push(d.message("one"))
        await eventually(lambda: len(d.graph.sends) == 1)
        # An operator deletes the streams (and with them the consumer group).
        await redis.delete(*(keys.inbound(p) for p in range(d.settings.partitions)))
        await eventually(lambda: redis.exists(keys.inbound(0)), within=20)  # group re-made
        await d.push(d.message("two"))
        await eventually(lambda: len(d.graph.sends) == 2, within=20)


async def test_an_event_that_keeps_failing_is_dropped_after_a_few_tries_not_looped(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        await redis.set(keys.bot(d.tenant_id), b"{corrupt")  # every attempt fails
        shard = await d.shard(claim_idle_ms=0, claim_interval_s=0.05, max_failures=3)
        await shard.start()
        await d.push(d.message("hello?"))
        await eventually(lambda: shard.metrics.count("poison") == 1)
        await eventually(lambda: shard.handled == 1)
        assert d.graph.sends == [] and await d.pending() == 0


async def test_a_broken_knowledge_base_still_gets_an_answer(redis: Redis, redis_url: str) -> None:
    from mtdesk.core.ports import Passage

    class BrokenKnowledgeBase:  # the Retriever port, failing like an unreachable index
        async def search(self, tenant_id: str, query: str, k: int = 5) -> list[Passage]:
            raise ConnectionError("index shard unreachable")

        async def has_knowledge(self, tenant_id: str) -> bool:
            raise ConnectionError("index shard unreachable")

    async with desk(redis, redis_url) as d:
        shard = await d.shard(retriever=BrokenKnowledgeBase())
        await shard.start()
        await d.push(d.message("hello"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.graph.sends[0].text == "[gpt-test] You said: hello"
        assert shard.metrics.count("retrieval_failed") == 1


async def test_a_shard_that_loses_redis_right_after_reading_keeps_reading_and_answers_all(
    redis: Redis, redis_url: str
) -> None:
    """Redis gone between a read and handing the entries to their conversations (a new
    customer's stored context cannot be fetched): the shard still answers that message
    once Redis is back, and every message after it; it does not stop reading."""
    import msgspec
    from redislink import RedisLink

    from mtdesk.core.events import partition_of

    async with desk(redis, redis_url) as d, RedisLink(redis_url) as link:
        settings = msgspec.structs.replace(d.settings, redis_url=link.url)
        shard = await d.shard(settings=settings, claim_idle_ms=2000, claim_interval_s=0.5)
        await shard.start()
        await d.push(d.message("warm up", user="w0"))
        await eventually(lambda: d.texts_to("w0"))
        caught = d.message("caught mid-read", user="c0")
        stream = keys.inbound(partition_of(caught.conversation, d.settings.partitions))
        link.cut_after_reply_with(stream.encode())  # the read's reply names its stream
        await d.push(caught)
        await eventually(lambda: not link.up)
        await asyncio.sleep(1.5)  # down for a while: the shard's retries meet a cut link
        link.restore()
        after = [f"n{i}" for i in range(3)]
        for u in after:
            await d.push(d.message(f"after from {u}", user=u))
        await eventually(lambda: all(d.texts_to(u) for u in ["c0", *after]), within=30)
        assert d.texts_to("c0") == ["[gpt-test] You said: caught mid-read"]
        for u in after:
            assert d.texts_to(u) == [f"[gpt-test] You said: after from {u}"]
        await shard.stop(drain_timeout_s=5)
