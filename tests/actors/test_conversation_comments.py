"""Instagram comments and mentions, as the business sees them: every comment is recorded
in its author's conversation (media, username, text, the comment it answers); with the
bot's ``comment_replies: "private"`` a comment gets exactly one private message, never
the business's own; mentions are recorded in the account's mentions feed. Real shard,
real Redis, the fake Graph API and LLM."""

from __future__ import annotations

import time

from shardkit import ACCOUNTS, Desk, desk, eventually

from mtdesk.core import keys
from mtdesk.core.clock import SystemClock
from mtdesk.core.events import MENTIONS_USER, Comment, Mention, conversation_key
from mtdesk.core.history import StoredMessage
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.policy.export import export_tenant

IG = ACCOUNTS["instagram"]
PRIVATE = BotConfig(provider="openai", model="gpt-test", comment_replies="private")


def comment(text: str | None, *, cid: str, user: str = "7310492856614412",
            age_s: float = 0, **kw: object) -> Comment:
    return Comment(event_id=cid, channel="instagram", account_id=IG, user_id=user,
                   timestamp_ms=int((time.time() - age_s) * 1000), user_name="ana.surfs",
                   text=text, media_id="17918195224117851", media_type="FEED",
                   **kw)  # type: ignore[arg-type]


async def _history(d: Desk, user: str) -> list[StoredMessage]:
    return await d.store().read(d.tenant_id, conversation_key("instagram", IG, user))


async def _ended(d: Desk, event_id: str) -> bool:
    return await _state(d, event_id) in ("sent", "failed", "skipped")


async def _state(d: Desk, event_id: str) -> str:
    raw = await d.redis.hget(keys.reply(d.tenant_id, event_id), "state")  # type: ignore[misc]
    return raw.decode() if raw else ""


async def test_a_comment_is_recorded_in_its_authors_conversation_and_not_answered(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:  # the default bot: comment replies off
        await (await d.shard()).start()
        await d.push(comment("Do you ship to Switzerland?", cid="c-1",
                             parent_id="c-0"))
        await eventually(lambda: _state(d, "c-1"))
        [stored] = await _history(d, "7310492856614412")
        assert (stored.kind, stored.message_id, stored.text) == (
            "comment", "c-1", "Do you ship to Switzerland?")
        assert (stored.media_id, stored.user_name, stored.reply_to) == (
            "17918195224117851", "ana.surfs", "c-0")
        assert await _state(d, "c-1") == "skipped"
        assert d.graph.sends == [] and d.graph.signals == [] and d.llm.chat_requests == []
        # The tenant's export carries it like any message.
        exported = b"".join([c async for c in export_tenant(
            d.redis, SystemClock(), d.tenant_id, cipher=d.cipher())])
        assert b"Do you ship to Switzerland?" in exported and b'"user_name":"ana.surfs"' in exported


async def test_a_private_reply_answers_the_comment_once_by_its_id(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url, bot=PRIVATE) as d:
        shard = await d.shard()
        await shard.start()
        c = comment("Do you ship this board to Switzerland?", cid="17865799348089039")
        await d.push(c)
        await eventually(lambda: len(d.graph.sends) == 1)
        [send] = d.graph.sends
        assert send.account_id == IG
        assert send.body["recipient"] == {"comment_id": "17865799348089039"}
        assert "Switzerland" in (send.text or "")
        assert d.graph.signals == []  # no thread yet: no read mark, no typing
        [asked] = d.llm.chat_requests  # the comment's text, answered in its language
        assert "Do you ship this board to Switzerland?" in asked.prompt_text()
        assert "Always reply in English" in str(asked.messages[0]["content"])
        await eventually(lambda: _ended(d, c.event_id))
        assert await _state(d, c.event_id) == "sent"
        kinds = [(m.kind, m.direction) for m in await _history(d, c.user_id)]
        assert kinds == [("comment", "in"), ("reply", "out")]
        # Meta delivers the notification again: nothing more is sent (the next comment of
        # the same person is handled after it, in order).
        await d.push(c)
        await d.push(comment("and to Austria?", cid="17865799348089040"))
        await eventually(lambda: len(d.graph.sends) == 2)
        assert [s.body["recipient"] for s in d.graph.sends] == [
            {"comment_id": "17865799348089039"}, {"comment_id": "17865799348089040"}]


async def test_the_business_own_comments_and_old_ones_get_no_private_reply(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url, bot=PRIVATE) as d:
        await (await d.shard()).start()
        await d.push(comment("Yes! We ship across Europe.", cid="own-1", user=IG,
                             by_business=True))
        await d.push(comment("still available?", cid="old-1", age_s=8 * 86400))
        await d.push(comment(None, cid="empty-1"))  # a comment of only a sticker/GIF
        await d.push(comment("last one", cid="new-1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        assert d.graph.sends[0].body["recipient"] == {"comment_id": "new-1"}
        for cid in ("own-1", "old-1", "empty-1"):
            await eventually(lambda cid=cid: _state(d, cid))  # type: ignore[misc]
            assert await _state(d, cid) == "skipped"
        reasons = {m.message_id: m.reason for m in await _history(d, "7310492856614412")}
        assert reasons["old-1"] == "older than 7 days: no private reply"
        assert reasons["empty-1"] == "comment without text"
        [own] = await _history(d, IG)
        assert own.reason == "the business's own comment"
        assert len(d.llm.chat_requests) == 1


async def test_a_long_answer_goes_as_one_private_message(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url, bot=PRIVATE) as d:
        await (await d.shard()).start()
        await d.push(comment("tell me everything " * 120, cid="long-1"))
        await eventually(lambda: len(d.graph.sends) == 1)
        text = d.graph.sends[0].text or ""
        assert len(text.encode("utf-8")) <= 1000 and text.endswith("…")
        await eventually(lambda: _ended(d, "long-1"))
        assert await _state(d, "long-1") == "sent"
        assert len(d.graph.attempts) == 1  # Meta takes one private reply: one was sent
        [_, reply] = await _history(d, "7310492856614412")
        assert reply.text == text  # what is stored is what went


async def test_mentions_are_recorded_in_the_accounts_mentions_feed(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url, bot=PRIVATE) as d:
        await (await d.shard()).start()
        m = Mention(event_id=f"mention:{IG}:c-9", channel="instagram", account_id=IG,
                    user_id=MENTIONS_USER, timestamp_ms=int(time.time() * 1000),
                    media_id="17887498072083520", comment_id="c-9")
        await d.push(m)
        await eventually(lambda: _state(d, m.event_id))
        [stored] = await _history(d, MENTIONS_USER)
        assert (stored.kind, stored.media_id, stored.comment_id, stored.status) == (
            "mention", "17887498072083520", "c-9", "skipped")
        assert d.graph.sends == [] and d.llm.chat_requests == []
