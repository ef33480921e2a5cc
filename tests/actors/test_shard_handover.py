"""Handing a partition from one shard to another (the plain shard class, real Redis, the
fake LLM and Graph API): what the old owner held is answered once, by one of them; a
stale owner's send permits (the first and every later one) and acknowledgements are
refused and it lets the partition go."""

from __future__ import annotations

import asyncio

import redis as redis_sync
from shardkit import Desk, desk, eventually

from mtdesk.actors.conversation_shard import ConversationShard
from mtdesk.channels.outbound import split_text
from mtdesk.core import keys, ownership
from mtdesk.core.events import partition_of
from mtdesk.core.redis import Redis

ALL = [0, 1, 2, 3]


async def _new_owner_settles(d: Desk, p: int) -> ConversationShard:
    """A second shard takes partition ``p`` at epoch 2 and everything pending is
    handled (acknowledged)."""
    b = await d.shard(1, [], epochs={})
    await b.start()
    await b.take_partitions({p: 2})

    async def settled() -> bool:
        return await d.pending() == 0

    await eventually(settled)
    return b


async def test_a_released_partition_s_conversation_finishes_its_answer_on_the_old_owner_and_the_new_one_answers_the_rest_in_order(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        a = await d.shard(0, ALL, epochs=dict.fromkeys(ALL, 1))
        await a.start()
        d.llm.hold()
        first = d.message("one", user="h1")
        await d.push(first)
        p = partition_of(first.conversation, d.settings.partitions)
        await eventually(lambda: d.llm.waiting == 1)
        await d.push(d.message("two", user="h1"))  # queued behind the answer under way
        await eventually(lambda: a.ping()["inflight"] == 2)
        releasing = asyncio.create_task(a.release_partitions([p], timeout_s=10))
        await eventually(lambda: p not in a.partitions)
        await d.push(d.message("three", user="h1"))  # arrives while the handover runs
        d.llm.release()
        assert (await releasing) == {"released": [p], "left_pending": 0}
        # the old owner finished what it was answering and handed "two" back unstarted
        assert d.texts_to("h1") == ["[gpt-test] You said: one"]
        context = await d.stored_context(first.conversation)
        assert context is not None and context.turns  # persisted before letting go

        await ownership.fence(redis, p, 2)
        b = await d.shard(1, [], epochs={})
        await b.start()
        assert (await b.take_partitions({p: 2}))["taken"] == [p]
        await eventually(lambda: len(d.texts_to("h1")) >= 2)
        await asyncio.sleep(0.3)
        # the new owner answers the rest, in order (one reply, or "two" then "three")
        rest = [t.removeprefix("[gpt-test] You said: ") for t in d.texts_to("h1")[1:]]
        assert "\n".join(rest) == "two\nthree"

        async def settled() -> bool:
            return await d.pending() == 0

        await eventually(settled)
        assert b.ping()["epochs"] == {p: 2}


async def test_what_a_release_cannot_finish_in_time_stays_pending_and_the_new_owner_answers_it_once(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        a = await d.shard(0, ALL, epochs=dict.fromkeys(ALL, 1))
        await a.start()
        d.llm.hold()
        held = d.message("slow one", user="h2")
        await d.push(held)
        p = partition_of(held.conversation, d.settings.partitions)
        await eventually(lambda: d.llm.waiting == 1)
        out = await a.release_partitions([p], timeout_s=0.3)
        assert out == {"released": [p], "left_pending": 1}
        await ownership.fence(redis, p, 2)
        d.llm.release()
        b = await d.shard(1, [], epochs={})
        await b.start()
        assert (await b.take_partitions({p: 2}))["claimed"] == 1
        await eventually(lambda: d.texts_to("h2") == ["[gpt-test] You said: slow one"])

        async def settled() -> bool:
            return await d.pending() == 0

        await eventually(settled)
        assert d.texts_to("h2") == ["[gpt-test] You said: slow one"]


async def test_a_stale_owner_sends_nothing_acknowledges_nothing_and_stops_reading_the_partition(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        a = await d.shard(0, ALL, epochs=dict.fromkeys(ALL, 1))
        for q in ALL:
            await ownership.fence(redis, q, 1)
        await a.start()
        d.llm.hold()
        msg = d.message("hello", user="h3")
        await d.push(msg)
        p = partition_of(msg.conversation, d.settings.partitions)
        await eventually(lambda: d.llm.waiting == 1)
        await ownership.fence(redis, p, 2)  # handed over behind its back
        d.llm.release()
        await eventually(lambda: p not in a.partitions)
        assert p not in a.ping()["epochs"]
        assert d.texts_to("h3") == []  # its send permit was refused: nothing went out
        pending = await redis.xpending(keys.inbound(p), keys.SHARD_GROUP)
        assert pending["pending"] == 1  # not acknowledged by the stale owner
        await _new_owner_settles(d, p)
        # answered once, by the new owner (the reply made again from its generating state)
        assert d.texts_to("h3") == ["[gpt-test] You said: hello"]
        await d.push(d.message("again", user="h3"))
        await eventually(lambda: len(d.texts_to("h3")) == 2)
        assert a.handled == 0


async def test_a_stale_owner_sending_a_long_reply_stops_after_the_part_under_way_and_the_new_owner_sends_the_rest_once(
    redis: Redis, redis_url: str,
) -> None:
    # Three parts on Messenger: the partition is handed over behind the owner's back
    # while Meta takes its first part; its next permit is refused (fenced), so nothing
    # after that part goes out from it, and the new owner sends the rest, each once.
    words = " ".join(f"w{i}" for i in range(1100))  # ~5,500 characters
    async with desk(redis, redis_url, send_confirm_wait_s=0.2) as d:
        a = await d.shard(0, ALL, epochs=dict.fromkeys(ALL, 1))
        for q in ALL:
            await ownership.fence(redis, q, 1)
        msg = d.message(words, user="h4")
        p = partition_of(msg.conversation, d.settings.partitions)
        sync = redis_sync.Redis.from_url(redis_url)

        def hand_over_at_the_first_part(sent: object) -> None:
            if len(d.texts_to("h4")) == 1:  # before Meta's answer reaches the shard
                sync.set(keys.partition_owner(p), b"2")

        d.graph.on_send = hand_over_at_the_first_part
        await a.start()
        await d.push(msg)
        await eventually(lambda: p not in a.partitions)
        parts = split_text("messenger", f"[gpt-test] You said: {words}")
        assert len(parts) == 3
        assert d.texts_to("h4") == parts[:1]  # the part under way, nothing after it
        d.graph.on_send = None
        await _new_owner_settles(d, p)
        assert d.texts_to("h4") == parts  # every part once, in order
        sync.close()
