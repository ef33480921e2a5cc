"""A person who answers from Meta's inbox while the bot's answer is being made has the
conversation from that moment: the bot's answer under way is dropped, not sent after
them; the bot's own echoes never do that; with hand-offs off the answer still goes."""

from __future__ import annotations

import asyncio
import time

from shardkit import ACCOUNTS, Desk, desk, eventually

from mtdesk.actors.replies import ReplyStore
from mtdesk.core import keys
from mtdesk.core.events import Echo
from mtdesk.core.redis import Redis

INBOX_APP = "263902037430900"  # Meta's Page inbox: a person


def _echo(n: int, *, app_id: str | None = INBOX_APP, metadata: str | None = None) -> Echo:
    return Echo(event_id=f"m.agent.{n}", channel="messenger", account_id=ACCOUNTS["messenger"],
                user_id="U1", timestamp_ms=int(time.time() * 1000), app_id=app_id,
                metadata=metadata, text="Hi, Sam here from the shop: let me check.")


async def _read_by_the_shard(d: Desk, entries: int) -> None:
    """Until the shard has read ``entries`` entries it has not acknowledged yet."""
    for _ in range(500):
        if await d.pending() >= entries:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the shard did not read {entries} entries")


async def test_a_persons_echo_during_the_model_call_drops_the_bots_answer(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard, question = await d.answering("is the blue one in stock?", user="U1")  # the model is answering
        await d.push(_echo(1))  # ... and a person answers from Meta's inbox
        await _read_by_the_shard(d, 2)  # the echo is read (queued behind the question)
        d.llm.release()
        await eventually(lambda: shard.handled == 2)
        assert d.texts_to("U1") == []
        replies = ReplyStore(redis, ttl_s=3600, history_ttl_s=3600, cipher=d.cipher())
        record = await replies.load(d.tenant_id, question.event_id)
        assert (record.state, record.reason) == ("failed", "a person took over the conversation")
        assert await redis.exists(keys.paused(d.tenant_id, question.conversation))
        assert shard.metrics.count("taken_over") == 1
        await d.push(d.message("thanks!", user="U1"))  # the person has it now
        await eventually(lambda: shard.handled == 3)
        assert d.graph.sends == []


async def test_our_own_echo_during_the_model_call_drops_nothing(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        d.llm.hold()
        await d.push(d.message("hello", user="U1"))
        await eventually(lambda: d.llm.waiting == 1)
        await d.push(_echo(2, app_id=None, metadata="mtdesk:earlier-reply#0"))
        await _read_by_the_shard(d, 2)
        d.llm.release()
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: hello"]


async def test_with_hand_offs_off_a_persons_echo_does_not_silence_the_bot(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, handoff_pause_s=0) as d:
        shard = await d.shard()
        await shard.start()
        d.llm.hold()
        await d.push(d.message("hello", user="U1"))
        await eventually(lambda: d.llm.waiting == 1)
        await d.push(_echo(3))
        await _read_by_the_shard(d, 2)
        d.llm.release()
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.texts_to("U1") == ["[gpt-test] You said: hello"]
