"""The inbox knows people by name: WhatsApp's contact name from the webhook, Messenger's
and Instagram's from Meta's profile (asked once, not per message), never recreating an
erased conversation. Real shard, real Redis, the fake Graph API and LLM."""

from __future__ import annotations

from shardkit import desk, eventually

from mtdesk.core.inbox import Inbox
from mtdesk.core.redis import Redis


async def _card_name(d, conv: str) -> str | None:  # type: ignore[no-untyped-def]
    card = await Inbox(d.redis, d.cipher()).card(d.tenant_id, conv)
    return card.name if card else None


async def test_messenger_and_instagram_names_come_from_metas_profile_once(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        d.graph.add_profile("PS1", first_name="Ana", last_name="Silva",
                            profile_pic="https://cdn.example/ana.jpg")
        d.graph.add_profile("IG1", name="Bea Costa", username="bea")
        await (await d.shard()).start()
        first = d.message("hi", user="PS1")
        await d.push(first)
        await d.push(d.message("hola", user="IG1", channel="instagram"))
        await eventually(lambda: _card_name(d, first.conversation))
        assert await _card_name(d, first.conversation) == "Ana Silva"
        card = await Inbox(redis, d.cipher()).card(d.tenant_id, first.conversation)
        assert card is not None and card.picture == "https://cdn.example/ana.jpg"
        ig = d.message("x", user="IG1", channel="instagram").conversation
        await eventually(lambda: _card_name(d, ig))
        assert await _card_name(d, ig) == "Bea Costa"
        await d.push(d.message("again", user="PS1"))
        await eventually(lambda: len(d.graph.sends) == 3)
        assert d.graph.profile_requests.count("PS1") == 1


async def test_whatsapp_names_come_with_the_message(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        m = d.message("hola", user="15550003333", channel="whatsapp", user_name="Caio")
        await d.push(m)
        await eventually(lambda: _card_name(d, m.conversation))
        assert await _card_name(d, m.conversation) == "Caio"
        assert d.graph.profile_requests == []


async def test_a_profile_for_a_conversation_no_longer_there_is_not_kept(redis: Redis) -> None:
    stored = await Inbox(redis).set_profile("t_gone", "messenger:1:PS9", name="Late",
                                            picture=None, now_ms=1)
    assert stored is False and await redis.keys("*") == []
