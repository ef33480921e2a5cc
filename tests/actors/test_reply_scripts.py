"""The reply store's Lua scripts do what the state machine's table says, in every state
(real Redis): a step that does not apply changes nothing, a terminal record stays."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest

from mtdesk.actors.replies import ContextWrite, OutgoingReply, ReplyStore
from mtdesk.core import keys
from mtdesk.core.events import Message
from mtdesk.core.history import MessageStore, inbound_message
from mtdesk.core.redis import Redis
from mtdesk.core.replystate import ReplyState, Step, after

TENANT = "t-table"


def _event(n: int) -> Message:
    return Message(event_id=f"m.table.{n}", channel="messenger", account_id="P1",
                   user_id=f"U{n}", timestamp_ms=int(time.time() * 1000), text="hi")


async def _apply(replies: ReplyStore, event: Message, step: Step, n: int) -> None:
    now = int(time.time() * 1000)
    if step is Step.SKIP:
        await replies.store_inbound(TENANT, event.event_id, inbound_message(event),
                                    now_ms=now, skip_reason="stale")
    elif step is Step.CLAIM:
        await replies.claim(TENANT, event.event_id, [], now_ms=now)
    elif step is Step.ANSWER_WITH:
        await replies.claim(TENANT, f"head.{n}", [event.event_id], now_ms=now)
    elif step is Step.GENERATED:
        await replies.generated(TENANT, event.event_id, "text", "p", "m", now_ms=now)
    elif step is Step.PART_SENT:
        # Part 0 of two: not the last, so the reply goes on (sending).
        reply = replace(OutgoingReply.of(TENANT, event, "one two", "p", "m"),
                        parts=("one", "two"))
        await replies.resume(reply, context=lambda state: None).part_sent(0, f"out.{n}")
    else:
        await replies.finish(TENANT, event.event_id,
                             "sent" if step is Step.SENT else "failed", now_ms=now)


@pytest.mark.parametrize("state, step", list(itertools.product(ReplyState, Step)))
async def test_each_step_in_each_state_does_what_the_table_says(
    redis: Redis, state: ReplyState, step: Step
) -> None:
    replies = ReplyStore(redis, ttl_s=60, history_ttl_s=60)
    n = list(ReplyState).index(state) * 100 + list(Step).index(step)
    event = _event(n)
    if state is not ReplyState.NONE:
        await redis.hset(keys.reply(TENANT, event.event_id), "state", state.value)
    await _apply(replies, event, step, n)
    expected = after(state, step) or state
    assert (await replies.load(TENANT, event.event_id)).state == expected.value


async def test_the_last_part_ends_the_reply_and_writes_the_context_in_the_same_step(
    redis: Redis
) -> None:
    replies = ReplyStore(redis, ttl_s=60, history_ttl_s=60)
    event = _event(9999)
    now = int(time.time() * 1000)
    await replies.claim(TENANT, event.event_id, [], now_ms=now)
    reply = OutgoingReply.of(TENANT, event, "Hello there", "p", "m", reason="why")
    context_key = keys.context(TENANT, event.conversation)
    states: list[ReplyState] = []

    def context(state: ReplyState) -> ContextWrite:
        states.append(state)
        return ContextWrite(context_key, b"ctx", 60)

    run = await replies.begin(reply, now_ms=now, context=context)
    await run.part_sent(0, "out.last")
    record = await replies.load(TENANT, event.event_id)
    assert (record.state, record.reason, record.parts_sent) == ("sent", "why", 1)
    assert await redis.get(context_key) == b"ctx" and states == [ReplyState.SENT]
    await run.end(ReplyState.SENT, "why")  # nothing more: it ended with its last part
    assert states == [ReplyState.SENT] and run.context_written
    out = [m for m in await MessageStore(redis).read(TENANT, event.conversation)
           if m.direction == "out"]
    assert [(m.message_id, m.text, m.status) for m in out] == [("out.last", "Hello there", "sent")]
