"""A part Meta accepted is not sent again because its record did not go through: neither
when Redis went away right after Meta's answer (the shard keeps what it knows and records
it when Redis is back), nor after a crash in that window (the resumed reply learns it
from Meta's echo / WhatsApp status, which carries our mark)."""

from __future__ import annotations

import asyncio
import time

import msgspec
from redislink import RedisLink
from shardkit import ACCOUNTS, APP_ID, Desk, desk, eventually

from mtdesk.actors.conversation_shard import ConversationShard
from mtdesk.actors.replies import ReplyStore
from mtdesk.channels.outbound import split_text
from mtdesk.core.events import Echo, Message, Status
from mtdesk.core.redis import Redis
from mtdesk.fakes.graph import RecordedSend

# Long enough that the fake LLM's echo of it is a reply of two Messenger parts.
LONG = " ".join(f"Sentence number {i} of a long question." for i in range(60))


def reply_parts(channel: str = "messenger") -> list[str]:
    return split_text(channel, f"[gpt-test] You said: {LONG}")  # type: ignore[arg-type]


def cut_on_first_send(d: Desk, link: RedisLink) -> list[RecordedSend]:
    """Cut the shard's link to Redis as Meta accepts the first part (before our answer
    reaches the shard): Meta has the part, the shard cannot record it."""
    caught: list[RecordedSend] = []

    def on_send(send: RecordedSend) -> None:
        if not caught:
            caught.append(send)
            link.cut()

    d.graph.on_send = on_send
    return caught


async def cut_mid_send(d: Desk, link: RedisLink, text: str, *, user: str,
                       channel: str = "messenger") -> tuple[ConversationShard, Message,
                                                            list[RecordedSend]]:
    """A started shard talking to Redis through ``link``, ``text`` from ``user`` pushed,
    and the link cut as Meta accepts the reply's first part (waited for)."""
    settings = msgspec.structs.replace(d.settings, redis_url=link.url)
    shard = await d.shard(settings=settings)
    await shard.start()
    caught = cut_on_first_send(d, link)
    message = d.message(text, user=user, channel=channel)
    await d.push(message)
    await eventually(lambda: caught)
    return shard, message, caught


def echo_of(send: RecordedSend, user: str) -> Echo:
    """The ``message_echoes`` webhook Meta sends for ``send``, as the gateway queues it."""
    message = send.body["message"]
    return Echo(event_id=send.message_id or "", channel="messenger",
                account_id=ACCOUNTS["messenger"], user_id=user,
                timestamp_ms=int(time.time() * 1000), app_id=APP_ID,
                metadata=message.get("metadata"), text=message.get("text"))


async def test_a_part_accepted_as_redis_went_down_is_recorded_when_it_is_back_not_resent(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d, RedisLink(redis_url) as link:
        shard, message, caught = await cut_mid_send(d, link, LONG, user="r1")
        # Down longer than a part's record is retried in place (~5 s): the record fails
        # for good and the conversation tries the whole event again once Redis answers.
        await asyncio.sleep(7.0)
        link.restore()
        parts = reply_parts()
        await eventually(lambda: shard.handled >= 1, within=40)
        assert d.texts_to("r1") == parts  # part 0 once, then part 1
        record = await shard_store(d).load(d.tenant_id, message.event_id)
        assert record.state == "sent" and record.parts_sent == len(parts)
        assert record.mids[0] == caught[0].message_id  # what Meta answered, kept
        assert shard.metrics.count("part_recovered") == 1
        out = [m for m in await d.store().read(d.tenant_id, message.conversation)
               if m.direction == "out"]
        assert [m.part for m in out] == list(range(len(parts)))


async def test_after_a_crash_a_part_meta_echoed_is_recorded_not_sent_again(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d, RedisLink(redis_url) as link:
        first, message, caught = await cut_mid_send(d, link, LONG, user="c1")
        await first.abort()  # the crash: what the shard knew is gone with it
        link.restore()
        await d.push(echo_of(caught[0], "c1"))  # Meta's echo of part 0 reaches us
        again = await d.shard()  # same index, same consumer: resumes the entry
        await again.start()
        parts = reply_parts()
        await eventually(lambda: again.handled >= 2)  # the message and the echo
        assert d.texts_to("c1") == parts  # part 0 once (before the crash), part 1 after
        record = await shard_store(d).load(d.tenant_id, message.event_id)
        assert record.state == "sent" and record.parts_sent == len(parts)
        assert record.mids[0] == caught[0].message_id
        assert again.metrics.count("part_recovered") == 1
        out = [m for m in await d.store().read(d.tenant_id, message.conversation)
               if m.direction == "out"]
        assert [m.part for m in out] == list(range(len(parts)))  # the echo not stored twice


async def test_a_shard_too_busy_to_read_the_echo_in_time_still_finds_it_and_sends_nothing_twice(
    redis: Redis, redis_url: str
) -> None:
    # The shard that resumes the reply holds as many entries as it may (max_inflight 1:
    # the message itself), so it reads nothing more until the reply is done; the echo
    # waiting behind it in the stream is found by looking ahead, within the wait.
    async with desk(redis, redis_url, send_confirm_wait_s=1.0) as d, \
            RedisLink(redis_url) as link:
        first, message, caught = await cut_mid_send(d, link, LONG, user="b1")
        await first.abort()
        link.restore()
        await d.push(echo_of(caught[0], "b1"))
        again = await d.shard(max_inflight=1)
        await again.start()
        parts = reply_parts()
        await eventually(lambda: again.handled >= 2)  # the message, then the echo
        assert d.texts_to("b1") == parts  # part 0 once: not sent again after the wait
        assert again.metrics.count("part_recovered") == 1


async def test_after_a_crash_a_whatsapp_part_is_recovered_from_its_status(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d, RedisLink(redis_url) as link:
        long_wa = " ".join(f"Sentence number {i} of a long question." for i in range(120))
        first, message, caught = await cut_mid_send(d, link, long_wa, user="15550001111",
                                                    channel="whatsapp")
        await first.abort()
        link.restore()
        mark = caught[0].body.get("biz_opaque_callback_data")
        assert mark == f"mtdesk:{message.event_id}#0"  # our mark on the send itself
        await d.push(Status(event_id=f"status:{caught[0].message_id}:sent", channel="whatsapp",
                            account_id=ACCOUNTS["whatsapp"], user_id="15550001111",
                            timestamp_ms=int(time.time() * 1000),
                            message_id=caught[0].message_id or "", status="sent",
                            callback_data=mark))
        again = await d.shard()
        await again.start()
        parts = split_text("whatsapp", f"[gpt-test] You said: {long_wa}")
        assert len(parts) == 2
        await eventually(lambda: again.handled >= 2)
        assert d.texts_to("15550001111") == parts
        assert again.metrics.count("part_recovered") == 1


async def test_after_a_crash_with_no_confirmation_the_part_is_sent_after_the_wait(
    redis: Redis, redis_url: str
) -> None:
    """What docs/delivery.md promises when Meta's confirmation never comes (it did not
    accept the part, or its echo is lost): the resumed reply waits
    MTDESK_SEND_CONFIRM_WAIT_S, then sends the part, and the reply ends sent."""
    async with desk(redis, redis_url, send_confirm_wait_s=0.5) as d, \
            RedisLink(redis_url) as link:
        first, message, caught = await cut_mid_send(d, link, LONG, user="n1")
        await first.abort()
        link.restore()
        again = await d.shard()
        await again.start()
        parts = reply_parts()
        await eventually(lambda: again.handled >= 1)
        # Part 0 twice: once before the crash, once after the wait (unprovable either
        # way without Meta's word); never a part lost, never the whole reply twice.
        assert d.texts_to("n1") == [parts[0], *parts]
        record = await shard_store(d).load(d.tenant_id, message.event_id)
        assert record.state == "sent" and record.parts_sent == len(parts)
        assert again.metrics.count("part_recovered") == 0
        # Its echo arriving late changes nothing: the part is recorded once.
        await d.push(echo_of(caught[0], "n1"))
        await eventually(lambda: again.handled >= 2)
        assert d.texts_to("n1") == [parts[0], *parts]


def shard_store(d: Desk) -> ReplyStore:
    """The reply records as a shard reads them."""
    return ReplyStore(d.redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
