"""A person takes a conversation over: their reply goes out once through the bot's own
sender, the bot is silent from that moment (an answer being generated is dropped, not
sent; for a person's echo from Meta's own inbox see test_takeover_mid_answer.py), and
comes back on a hand back or when MTDESK_HANDOFF_PAUSE_S runs out. Real shard, real Redis,
the fake Graph API and LLM."""

from __future__ import annotations

import time

from shardkit import Desk, desk, eventually

from mtdesk.core import keys
from mtdesk.core.events import Message, TemplateSend
from mtdesk.core.inbox import Inbox, agent_reply
from mtdesk.core.redis import Redis

DAY_MS = 86_400_000


async def _reply(d: Desk, event_id: str) -> dict[str, str]:
    raw = await d.redis.hgetall(keys.reply(d.tenant_id, event_id))  # type: ignore[misc]
    # (the reply's text is sealed at rest: not read here)
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"text"}


async def _ended(d: Desk, event_id: str) -> bool:
    return (await _reply(d, event_id)).get("state") in ("sent", "failed", "skipped")


async def _person_replies(d: Desk, conv: str, text: str | None, *, tag: str | None = None,
                          template: TemplateSend | None = None) -> str:
    event = agent_reply(conv, text=text, author="user_ann", tag=tag, template=template)
    await Inbox(d.redis).queue_reply(d.tenant_id, event, pause_s=d.settings.handoff_pause_s,
                                     partitions=d.settings.partitions,
                                     now_ms=int(time.time() * 1000))
    return event.event_id


async def _person_takes_over(d: Desk, user: str, first: str, text: str) -> tuple[Message, str]:
    """A started shard answers ``first`` from ``user``; a person then replies ``text`` and
    the reply ends. The customer's message and the person's reply id."""
    await (await d.shard()).start()
    m = d.message(first, user=user)
    await d.push(m)
    await eventually(lambda: len(d.graph.sends) == 1)
    reply_id = await _person_replies(d, m.conversation, text)
    await eventually(lambda: _ended(d, reply_id))
    return m, reply_id


async def test_a_persons_reply_is_sent_once_stored_as_theirs_and_the_bot_goes_silent(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        first, reply_id = await _person_takes_over(d, "U1", "hello?",
                                                   "Hi, Ann here. Let me look.")
        assert d.texts_to("U1")[-1] == "Hi, Ann here. Let me look."
        assert (await _reply(d, reply_id))["state"] == "sent"
        # Next customer message: recorded, not answered.
        second = d.message("thanks, waiting", user="U1")
        await d.push(second)
        await eventually(lambda: _ended(d, second.event_id))
        assert (await _reply(d, second.event_id))["reason"] == "paused: human agent"
        assert len(d.graph.sends) == 2
        history = await d.store().read(d.tenant_id, first.conversation)
        mine = [m for m in history if m.kind == "agent"]
        assert [(m.text, m.author, m.status) for m in mine] == [
            ("Hi, Ann here. Let me look.", "user_ann", "sent")]
        card = await Inbox(redis, d.cipher()).card(d.tenant_id, first.conversation)
        assert card is not None and card.status == "human"
        assert card.last_text == "thanks, waiting" and card.unread == 1
        # At rest the card's line is sealed like the message, and opens only with the key.
        stored = await redis.hget(keys.inbox_card(d.tenant_id, first.conversation),  # type: ignore[misc]
                                  "last_text")
        assert stored is not None and b"thanks" not in stored
        unkeyed = await Inbox(redis).card(d.tenant_id, first.conversation)
        assert unkeyed is not None and unkeyed.last_text is None


async def test_an_answer_being_generated_when_a_person_replies_is_dropped_not_sent(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        d.llm.hold()
        m = d.message("is my order late?", user="U2")
        await d.push(m)
        await eventually(lambda: d.llm.waiting == 1)
        reply_id = await _person_replies(d, m.conversation, "It ships today.")
        d.llm.release()
        await eventually(lambda: _ended(d, m.event_id))
        await eventually(lambda: _ended(d, reply_id))
        record = await _reply(d, m.event_id)
        assert (record["state"], record["reason"]) == ("failed", "a person took over the conversation")
        assert d.texts_to("U2") == ["It ships today."]


async def test_after_a_hand_back_the_bot_answers_again(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        m, _ = await _person_takes_over(d, "U4", "hi", "Ann here.")
        await Inbox(redis).hand_back(d.tenant_id, m.conversation)
        again = d.message("one more question", user="U4")
        await d.push(again)
        await eventually(lambda: len(d.graph.sends) == 3)
        assert (await _reply(d, again.event_id))["state"] == "sent"
        card = await Inbox(redis, d.cipher()).card(d.tenant_id, m.conversation)
        assert card is not None and card.status == "bot"


async def test_a_human_agent_reply_goes_tagged_within_seven_days(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        old = d.message("hello from last week", user="U5")
        old = type(old)(**{**{f: getattr(old, f) for f in old.__struct_fields__},
                           "timestamp_ms": int(time.time() * 1000) - 3 * DAY_MS})
        await d.push(old)
        await eventually(lambda: _ended(d, old.event_id))
        assert d.graph.sends == []  # the bot may not answer outside the window
        reply_id = await _person_replies(d, old.conversation, "Sorry for the wait!",
                                         tag="HUMAN_AGENT")
        await eventually(lambda: _ended(d, reply_id))
        assert [s.body for s in d.graph.sends][0]["messaging_type"] == "MESSAGE_TAG"
        assert d.graph.sends[0].body["tag"] == "HUMAN_AGENT"
        assert d.texts_to("U5") == ["Sorry for the wait!"]


async def test_a_whatsapp_template_is_sent_with_its_parameters(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        m = d.message("hola", user="15550002222", channel="whatsapp", mid="wamid.T1")
        await d.push(m)
        await eventually(lambda: len(d.graph.sends) == 1)
        template = TemplateSend(name="order_update", language="en_US",
                                parameters=("Ann", "#1234"))
        reply_id = await _person_replies(d, m.conversation, None, template=template)
        await eventually(lambda: _ended(d, reply_id))
        body = d.graph.sends[-1].body
        assert body["type"] == "template" and body["to"] == "15550002222"
        assert body["template"] == {
            "name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Ann"}, {"type": "text", "text": "#1234"}]}]}
        history = await d.store().read(d.tenant_id, m.conversation)
        assert history[-1].text == "[template order_update (en_US): Ann, #1234]"


async def test_after_the_hand_off_pause_the_bot_answers_again_by_itself(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, handoff_pause_s=1) as d:  # MTDESK_HANDOFF_PAUSE_S=1
        m, _ = await _person_takes_over(d, "U9", "hi", "Ann here.")
        during = d.message("are you there?", user="U9")
        await d.push(during)
        await eventually(lambda: _ended(d, during.event_id))
        assert (await _reply(d, during.event_id))["reason"] == "paused: human agent"
        # nobody handed back: the pause runs out on its own and the bot is back
        await eventually(lambda: _paused_over(d, m.conversation))
        after = d.message("hello again", user="U9")
        await d.push(after)
        await eventually(lambda: _ended(d, after.event_id))
        assert (await _reply(d, after.event_id))["state"] == "sent"
        assert len(d.graph.sends) == 3
        card = await Inbox(redis, d.cipher()).card(d.tenant_id, m.conversation)
        assert card is not None and card.status == "bot"


async def _paused_over(d: Desk, conversation: str) -> bool:
    return not await d.redis.exists(keys.paused(d.tenant_id, conversation))
