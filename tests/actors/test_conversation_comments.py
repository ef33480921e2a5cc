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


def _mention_events(name: str) -> list[Mention]:
    """Meta's ``mentions`` webhook fixture ``name``, for the desk's Instagram account."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
    from meta_kinds import IG_ID, load

    from mtdesk.channels.webhook import parse_webhook

    parsed = parse_webhook(load(name).replace(IG_ID.encode(), IG.encode()))
    assert all(isinstance(e, Mention) for e in parsed.events) and parsed.events
    return [e for e in parsed.events if isinstance(e, Mention)]


async def test_what_a_mention_says_is_read_from_graph_stored_sealed_and_shown(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        # What Meta answers for the mentioned comment and the mentioned caption
        # (Instagram Platform › IG User › Mentioned Comment / Mentioned Media).
        d.graph.add_mention(IG, comment_id="17894227972186120",
                            text="@juniper.coffee your oat flat white saved my morning",
                            timestamp="2026-12-02T06:09:08+0000", like_count=3,
                            media={"id": "17887498072083520",
                                   "permalink": "https://www.instagram.com/p/DAbc123/"})
        d.graph.add_mention(IG, media_id="17887498072083521",
                            caption="Sunday brunch at @juniper.coffee", media_type="IMAGE",
                            media_url="https://scontent.cdninstagram.com/v/t51/brunch.jpg",
                            timestamp="2026-12-02T05:40:00+0000", username="ottilie.brunches")
        shard = await d.shard()
        await shard.start()
        [in_comment] = _mention_events("instagram_mention_comment")
        [in_caption] = _mention_events("instagram_mention_caption")
        await d.push(in_comment)
        await d.push(in_caption)

        async def read_both() -> bool:
            kinds = [m.kind for m in await _history(d, MENTIONS_USER)]
            return kinds.count("mention_content") == 2
        await eventually(read_both)
        stored = await _history(d, MENTIONS_USER)
        said = {m.reply_to: m for m in stored if m.kind == "mention_content"}
        comment_says, caption_says = said[in_comment.event_id], said[in_caption.event_id]
        assert comment_says.text == "@juniper.coffee your oat flat white saved my morning"
        assert comment_says.comment_id == "17894227972186120"
        assert [a.url for a in comment_says.attachments] == ["https://www.instagram.com/p/DAbc123/"]
        assert (caption_says.text, caption_says.user_name) == (
            "Sunday brunch at @juniper.coffee", "ottilie.brunches")
        assert [(a.type, a.url) for a in caption_says.attachments] == [
            ("image", "https://scontent.cdninstagram.com/v/t51/brunch.jpg")]
        # Asked with the account's token for the documented fields, never answered.
        assert sorted(f.split(".")[0] for _a, f in d.graph.mention_requests) == [
            "mentioned_comment", "mentioned_media"]
        assert all(account == IG for account, _f in d.graph.mention_requests)
        assert d.graph.sends == [] and d.llm.chat_requests == []
        # Sealed at rest: the stored entries hold neither the words nor the username.
        raw = b"".join(f[b"m"] for _e, f in await redis.xrange(
            keys.history(d.tenant_id, conversation_key("instagram", IG, MENTIONS_USER))))
        assert b"oat flat white" not in raw and b"ottilie.brunches" not in raw
        assert b"Sunday brunch" not in raw
        # A redelivered mention is read again but stored once.
        await d.push(in_caption)
        await eventually(lambda: shard.metrics.count("mention_read") == 3)
        again = [m.kind for m in await _history(d, MENTIONS_USER)]
        assert again.count("mention_content") == 2


async def test_a_mention_meta_will_not_show_stays_recorded_without_its_content(
    redis: Redis, redis_url: str,
) -> None:
    async with desk(redis, redis_url) as d:
        shard = await d.shard()
        await shard.start()
        [in_comment] = _mention_events("instagram_mention_comment")  # nothing registered
        await d.push(in_comment)
        await eventually(lambda: shard.metrics.count("mention_unread") == 1)
        assert [m.kind for m in await _history(d, MENTIONS_USER)] == ["mention"]
