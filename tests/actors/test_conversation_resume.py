"""A conversation picks up where a crash left its reply state."""

from __future__ import annotations

import time

import msgspec
from shardkit import ACCOUNTS, Desk, desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.actors.replies.run import OutgoingReply
from mtdesk.core import keys
from mtdesk.core.events import Message
from mtdesk.core.history import StoredMessage
from mtdesk.core.redis import Redis


async def _read_by_shard0(d: Desk, events: list[Message]) -> None:
    """Push events and have consumer shard-0 read them, as before a crash."""
    for p in range(d.settings.partitions):
        await d.redis.xgroup_create(keys.inbound(p), keys.SHARD_GROUP, id="0", mkstream=True)
    for e in events:
        await d.push(e)
    for p in range(d.settings.partitions):
        await d.redis.xreadgroup(keys.SHARD_GROUP, "shard-0", {keys.inbound(p): ">"})


def _stored(e: Message) -> StoredMessage:
    return StoredMessage(direction="in", message_id=e.event_id, kind="message",
                         channel="messenger", account_id=ACCOUNTS["messenger"],
                         user_id=e.user_id, timestamp_ms=e.timestamp_ms, text=e.text)


async def test_a_crash_while_the_model_answered_a_burst_gives_one_reply_to_all_of_it(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        burst = [d.message(t) for t in ("hi", "my parcel is late", "order 42")]
        await _read_by_shard0(d, burst)
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        now = int(time.time() * 1000)
        for e in burst:
            await replies.store_inbound(d.tenant_id, e.event_id, _stored(e), now_ms=now)
        claimed = await replies.claim(d.tenant_id, burst[0].event_id,
                                      [e.event_id for e in burst[1:]], now_ms=now)
        assert claimed == [e.event_id for e in burst[1:]]
        # ... and then the process died while the model was thinking.

        shard = await d.shard()
        await shard.start()
        await eventually(lambda: shard.handled == 3)
        assert len(d.graph.sends) == 1
        assert d.llm.chat_requests[0].messages[-1]["content"] == "hi\nmy parcel is late\norder 42"
        assert (await replies.load(d.tenant_id, burst[0].event_id)).state == "sent"


async def test_a_reply_already_sent_before_the_crash_is_not_sent_again(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        event = d.message("hello")
        await _read_by_shard0(d, [event])
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        now = int(time.time() * 1000)
        await replies.store_inbound(d.tenant_id, event.event_id, _stored(event), now_ms=now)
        await replies.claim(d.tenant_id, event.event_id, [], now_ms=now)
        await replies.generated(d.tenant_id, event.event_id, "Hello!", "openai", "m", now_ms=now)
        await replies.finish(d.tenant_id, event.event_id, "sent", now_ms=now)
        # Sent and recorded, but the entry was never acknowledged.
        shard = await d.shard()
        await shard.start()
        await eventually(lambda: shard.handled == 1)
        assert d.graph.sends == [] and d.llm.chat_requests == []
        assert await d.pending() == 0


async def test_a_send_resumed_after_a_crash_still_offers_the_suggested_replies(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        event = d.message("how long does shipping take", user="R7")
        await _read_by_shard0(d, [event])
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        now = int(time.time() * 1000)
        await replies.store_inbound(d.tenant_id, event.event_id, _stored(event), now_ms=now)
        await replies.claim(d.tenant_id, event.event_id, [], now_ms=now)
        offered = ("How much does shipping cost?", "Do you ship abroad?")
        text = "Orders arrive in 3 to 5 business days. " * 80  # two Messenger parts
        reply = OutgoingReply.of(d.tenant_id, event, text, "openai", "m", suggestions=offered)
        run = await replies.begin(reply, now_ms=now, context=lambda state: None)
        await run.part_sent(0, "m_part0")
        # ... and the process died after Meta accepted the first part.
        raw = await redis.hget(keys.reply(d.tenant_id, event.event_id), "suggest")
        assert raw is not None and b"shipping" not in raw  # sealed like the text

        settings = msgspec.structs.replace(d.settings, send_confirm_wait_s=0.1)
        shard = await d.shard(settings=settings)
        await shard.start()
        await eventually(lambda: shard.handled == 1)
        [send] = d.graph.sends  # the second part only, with the taps under it
        assert send.text == reply.parts[1]
        titles = [q["title"] for q in send.body["message"]["quick_replies"]]
        assert titles == ["How much does…", "Do you ship abroad?"]
