"""The inbox knows people by name: WhatsApp's contact name from the webhook, Messenger's
and Instagram's from Meta's profile (asked once, not per message), never recreating an
erased conversation. Real shard, real Redis, the fake Graph API and LLM."""

from __future__ import annotations

import asyncio

from shardkit import desk, eventually

from mtdesk.actors.profiles import FetchProfile, Pictures, Profiles
from mtdesk.core import keys
from mtdesk.core.events import Message
from mtdesk.core.inbox import Inbox
from mtdesk.core.media import MediaStore
from mtdesk.core.redis import Redis
from mtdesk.fakes.graph import FakeGraphAPI


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
    """WhatsApp's contact name goes on the card in the script that stores the message:
    there as soon as the message is (no write of its own, no Graph call), sealed like
    every name, and once a day: the person's next message leaves it."""
    async with desk(redis, redis_url) as d:
        await (await d.shard()).start()
        m = d.message("hola", user="15550003333", channel="whatsapp", user_name="Caio")
        zscores = await _calls(redis, "zscore")
        await d.push(m)
        await eventually(lambda: d.texts_to("15550003333"))
        await asyncio.sleep(0.3)  # a profile task, were there one, would have written
        assert await _calls(redis, "zscore") == zscores  # no profile script ran
        assert await _card_name(d, m.conversation) == "Caio"
        card = keys.inbox_card(d.tenant_id, m.conversation)
        stamped = await redis.hget(card, "profile_ms")
        assert stamped
        assert b"Caio" not in (await redis.hget(card, "name") or b"")  # sealed
        await d.push(d.message("otra", user="15550003333", channel="whatsapp",
                               user_name="Caio"))
        await eventually(lambda: len(d.texts_to("15550003333")) == 2)
        assert await redis.hget(card, "profile_ms") == stamped
        assert d.graph.profile_requests == []


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_profile_for_a_conversation_no_longer_there_is_not_kept(redis: Redis) -> None:
    stored = await Inbox(redis).set_profile("t_gone", "messenger:1:PS9", name="Late",
                                            picture=None, now_ms=1)
    assert stored is False and await redis.keys("*") == []


PNG = b"\x89PNG\r\n\x1a\n" + b"ana's face" * 20


async def test_a_persons_picture_is_kept_sealed_with_the_conversation_and_replaced_daily(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        url = d.graph.add_attachment(PNG, "image/png")
        d.graph.add_profile("PS2", first_name="Ana", profile_pic=url)
        await (await d.shard()).start()
        m = d.message("hi", user="PS2")
        await d.push(m)
        inbox = Inbox(redis, d.cipher())

        async def ref() -> str | None:
            card = await inbox.card(d.tenant_id, m.conversation)
            return card.picture_ref if card else None

        await eventually(ref)
        first = await ref()
        assert first is not None
        store = MediaStore(redis, cipher=d.cipher())
        kept = await store.get(d.tenant_id, m.conversation, first)
        assert kept is not None and kept.content == PNG and kept.mime_type == "image/png"
        raw = await redis.xrange(keys.media(d.tenant_id, m.conversation))
        assert PNG not in b"".join(v for _, f in raw for v in f.values())  # sealed at rest

        # The next day's look-up keeps the new copy and drops the old one.
        sender = d.shards[0][1].sender
        profiles = Profiles(inbox, _profile_of(d.graph, PNG + b"!"), lambda: 4_000_000_000_000,
                            pictures=Pictures(sender.download, store, lambda: 2))
        profiles.note(d.tenant_id, m)
        await profiles.settled()
        second = await ref()
        assert second is not None and second != first
        assert await store.get(d.tenant_id, m.conversation, first) is None
        assert [s.ref for s in await store.refs(d.tenant_id, m.conversation)] == [second]
        fresh = await store.get(d.tenant_id, m.conversation, second)
        assert fresh is not None and fresh.content == PNG + b"!"


async def test_a_picture_for_a_conversation_erased_meanwhile_leaves_nothing(redis: Redis) -> None:
    store = MediaStore(redis)
    inbox = Inbox(redis)
    conv = "messenger:1:PS9"

    async def fetch(*_: str) -> dict[str, object]:
        return {"first_name": "Late", "profile_pic": "https://cdn.example/late.png"}

    async def download_while_erased(_: object, **__: object) -> tuple[bytes, str]:
        # erased while the picture came (the index and the card go, as erasure does)
        await redis.zrem(keys.conversations("t_gone"), conv)
        await redis.delete(keys.inbox_card("t_gone", conv))
        return PNG, "image/png"

    await redis.zadd(keys.conversations("t_gone"), {conv: 1})
    profiles = Profiles(inbox, fetch, lambda: 4_000_000_000_000,
                        pictures=Pictures(download_while_erased, store, lambda: 1))
    profiles.note("t_gone", Message(event_id="m1", channel="messenger", account_id="1",
                                    user_id="PS9", timestamp_ms=1, text="x"))
    await profiles.settled()
    assert await redis.keys("*") == []


def _profile_of(graph: FakeGraphAPI, picture: bytes) -> FetchProfile:
    async def fetch(channel: str, account: str, user_id: str, fields: str) -> dict[str, object]:
        return {"first_name": "Ana", "profile_pic": graph.add_attachment(picture, "image/png")}
    return fetch


async def test_a_whatsapp_name_whose_store_failed_is_given_again_until_written(
    redis: Redis,
) -> None:
    """The name is noted as written only once its message is stored: a store that failed
    (and is retried) takes it again; after it, not again that day."""
    async def no_fetch(*_: object) -> None:
        return None

    clock = [1_800_000_000_000]  # ms: a 2027 date
    profiles = Profiles(Inbox(redis), no_fetch, lambda: clock[0])
    event = Message(event_id="wamid.r1", channel="whatsapp", account_id="1003",
                    user_id="15550009999", timestamp_ms=1, text="hola", user_name="Rui")
    assert profiles.with_message("t_x", event) == "Rui"
    assert profiles.with_message("t_x", event) == "Rui"  # the first store failed
    profiles.written("t_x", event)
    assert profiles.with_message("t_x", event) is None
    clock[0] += 24 * 3600 * 1000
    assert profiles.with_message("t_x", event) == "Rui"  # a day later
