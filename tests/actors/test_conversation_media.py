"""Media in, as a customer and a business see it: pictures, voice notes and documents are
fetched from the (fake) Graph API with real bytes, kept with the conversation, heard or
described for the model, and a failed download never costs the customer an answer.

Real shard, real Redis, the fake Graph API and the fake OpenAI-compatible server as local
HTTP servers."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from shardkit import ACCOUNTS, Desk, desk, eventually

from mtdesk.core import keys
from mtdesk.core.events import Attachment, Message, Unsend
from mtdesk.core.history import MEDIA_KIND, StoredMessage
from mtdesk.core.media import MediaStore
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 40  # 10 KB of "picture"
FAST_RETRY = {"retry_base_s": 0.05}


def vision_bot(**kw: object) -> BotConfig:
    return BotConfig(provider="openai", model="gpt-vision", vision=True,
                     system_prompt="You are Acme's assistant.", **kw)  # type: ignore[arg-type]


def whatsapp_media(d: Desk, media_id: str, kind: str, mime: str, *, caption: str | None = None,
                   user: str = "U1") -> Message:
    return d.message(caption, user=user, channel="whatsapp", type=kind,
                     attachments=(Attachment(type=kind, media_id=media_id, mime_type=mime,
                                             caption=caption),))


async def media_entries(redis: Redis, d: Desk, conv: str) -> list[StoredMessage]:
    return [m for m in await d.store().read(d.tenant_id, conv) if m.kind == MEDIA_KIND]


async def test_a_picture_reaches_a_vision_model_and_is_kept_with_the_conversation(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, bot=vision_bot()) as d:
        d.graph.add_media("IMG1", JPEG, "image/jpeg", account_id=ACCOUNTS["whatsapp"])
        shard = await d.shard()
        await shard.start()
        msg = whatsapp_media(d, "IMG1", "image", "image/jpeg", caption="Is this one in stock?")
        await d.push(msg)
        await eventually(lambda: d.texts_to(msg.user_id))

        [request] = d.llm.chat_requests
        # The picture itself, as an OpenAI image content part (a data: URL of its bytes).
        assert request.images == [{"mime_type": "image/jpeg", "size": len(JPEG),
                                   "sha256": hashlib.sha256(JPEG).hexdigest()}]
        assert "Is this one in stock?" in request.prompt_text()
        assert "[saw 1 image: image/jpeg" in d.texts_to(msg.user_id)[0]
        # The business keeps the file: the history names it, the store holds its bytes.
        [entry] = await media_entries(redis, d, msg.conversation)
        assert entry.reply_to == msg.event_id
        [record] = entry.media
        assert (record.status, record.size, record.sha256) == (
            "stored", len(JPEG), hashlib.sha256(JPEG).hexdigest())
        cipher = TenantCipher.from_settings(redis, d.settings)
        stored = await MediaStore(redis, cipher=cipher).get(d.tenant_id, msg.conversation,
                                                            record.ref)
        assert stored is not None and stored.content == JPEG
        # Sealed at rest with the tenant's key: the raw bytes are nowhere in Redis.
        assert not await _found_in_redis(redis, JPEG[:64])


async def test_without_vision_the_model_is_told_what_was_sent(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        url = d.graph.add_attachment(JPEG, "image/jpeg", expires_s=600)
        shard = await d.shard()
        await shard.start()
        msg = d.message(None, user="U2", type="image",
                        attachments=(Attachment(type="image", url=url),))
        await d.push(msg)
        await eventually(lambda: d.texts_to("U2"))
        [request] = d.llm.chat_requests
        assert request.images == []
        assert "The customer sent a picture (image/jpeg, 10 KB)." in request.prompt_text()
        # The Messenger CDN URL was fetched (without the Page token) and the file kept.
        assert len(d.graph.downloads) == 1
        [entry] = await media_entries(redis, d, msg.conversation)
        assert entry.media[0].status == "stored"


async def test_a_voice_note_is_transcribed_answered_like_text_and_the_transcript_kept(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url, transcriber="openai:whisper-1") as d:
        voice = b"OggS where is my parcel"  # the fake hears the words the bytes spell
        d.graph.add_media("VOICE1", voice, "audio/ogg; codecs=opus",
                          account_id=ACCOUNTS["whatsapp"])
        shard = await d.shard()
        await shard.start()
        msg = whatsapp_media(d, "VOICE1", "audio", "audio/ogg; codecs=opus", user="U3")
        await d.push(msg)
        await eventually(lambda: d.texts_to("U3"))

        [heard] = d.llm.transcription_requests
        assert heard.model == "whisper-1" and heard.params["size"] == len(voice)
        assert heard.params["filename"] == "voice.ogg"
        # Answered like text: the model's user message is the transcript itself.
        [request] = d.llm.chat_requests
        assert request.messages[-1]["content"] == "OggS where is my parcel"
        assert d.texts_to("U3") == ["[gpt-test] You said: OggS where is my parcel"]
        # The transcript is kept with the message, for the inbox and exports.
        [entry] = await media_entries(redis, d, msg.conversation)
        assert entry.text == "OggS where is my parcel"
        assert entry.media[0].transcript == "OggS where is my parcel"


async def test_without_a_transcriber_the_customer_is_asked_to_write_once(
    redis: Redis, redis_url: str
) -> None:
    bot = BotConfig(provider="openai", model="gpt-test", voice_reply="Please type it for me!")
    async with desk(redis, redis_url, bot=bot) as d:
        d.graph.add_media("V1", b"OggS first", "audio/ogg", account_id=ACCOUNTS["whatsapp"])
        d.graph.add_media("V2", b"OggS second", "audio/ogg", account_id=ACCOUNTS["whatsapp"])
        shard = await d.shard()
        await shard.start()
        await d.push(whatsapp_media(d, "V1", "audio", "audio/ogg", user="U4"))
        await eventually(lambda: d.texts_to("U4"))
        assert d.texts_to("U4") == ["Please type it for me!"]
        assert d.llm.chat_requests == []  # no model asked

        # Sent once: the next voice note goes to the model, described.
        await d.push(whatsapp_media(d, "V2", "audio", "audio/ogg", user="U4"))
        await eventually(lambda: len(d.texts_to("U4")) == 2)
        [request] = d.llm.chat_requests
        assert "The customer sent a voice note (audio/ogg, 11 bytes). It could not be " \
               "listened to." in request.prompt_text()
        # The business still has both files.
        conv = f"whatsapp:{ACCOUNTS['whatsapp']}:U4"
        assert [e.media[0].status for e in await media_entries(redis, d, conv)] == [
            "stored", "stored"]


def _failing_pdf(d: Desk, user: str, name: str, *, failures: int) -> Message:
    """A WhatsApp document ``{name}.pdf`` from ``user`` whose first ``failures``
    downloads Meta answers 503."""
    media_id = f"DOC-{user}"
    d.graph.add_media(media_id, b"%PDF-1.7 " + name.encode(), "application/pdf",
                      account_id=ACCOUNTS["whatsapp"])
    d.graph.fail_next_download(times=failures, status=503)
    return d.message(None, user=user, channel="whatsapp", type="document",
                     attachments=(Attachment(type="document", media_id=media_id,
                                             mime_type="application/pdf",
                                             filename=f"{name}.pdf"),))


async def test_a_failed_download_is_answered_with_a_description_and_retried(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        msg = _failing_pdf(d, "U5", "invoice", failures=2)
        shard = await d.shard(media_options=FAST_RETRY)
        await shard.start()
        await d.push(msg)
        await eventually(lambda: d.texts_to("U5"))
        [request] = d.llm.chat_requests
        assert ('The customer sent a document named "invoice.pdf" (application/pdf). '
                "It could not be downloaded.") in request.prompt_text()
        await eventually(_acknowledged(d))  # answered and acknowledged, not stuck
        # The background retry gets the file in the end; the history records it.
        await eventually(lambda: _stored(redis, d, msg.conversation))
        statuses = [e.media[0].status for e in await media_entries(redis, d, msg.conversation)]
        assert statuses == ["failed", "stored"]
        assert len(d.llm.chat_requests) == 1  # not answered twice


async def test_a_download_being_retried_is_taken_up_by_the_shard_started_after(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        msg = _failing_pdf(d, "U9", "receipt", failures=1)
        first = await d.shard(media_options={"retry_base_s": 60.0})  # no retry before it stops
        await first.start()
        await d.push(msg)
        await eventually(lambda: d.texts_to("U9"))
        # Meta delivers the same message again: still de-duplicated, not answered twice.
        await d.push(msg)
        await eventually(_acknowledged(d))
        assert len(d.texts_to("U9")) == 1
        listed = await redis.hgetall(keys.media_retries(d.tenant_id))
        assert len(listed) == 1 and b"receipt" not in b"".join(listed.values())  # sealed

        await first.stop()  # the process goes, its retry with it
        services = d.shards[0][1]
        assert services.media is not None
        await services.media.aclose()
        second = await d.shard(media_options=FAST_RETRY)
        await second.start()
        await eventually(lambda: _stored(redis, d, msg.conversation))
        await eventually(lambda: _unlisted(redis, d))
        statuses = [e.media[0].status for e in await media_entries(redis, d, msg.conversation)]
        assert statuses == ["failed", "stored"]  # recorded once
        assert len(d.llm.chat_requests) == 1 and len(d.texts_to("U9")) == 1


async def test_an_expired_attachment_url_still_gets_an_answer(
    redis: Redis, redis_url: str
) -> None:
    async with desk(redis, redis_url) as d:
        url = d.graph.add_attachment(b"\x00\x00\x00 ftypmp4 video", "video/mp4", expires_s=-1)
        shard = await d.shard(media_options={"retries": 0})
        await shard.start()
        msg = d.message("look at this", user="U6", type="video",
                        attachments=(Attachment(type="video", url=url),))
        await d.push(msg)
        await eventually(lambda: d.texts_to("U6"))
        prompt = d.llm.chat_requests[0].prompt_text()
        assert "look at this" in prompt
        assert "The customer sent a video. It could not be downloaded." in prompt


async def test_media_leaves_with_an_unsent_message(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        d.graph.add_media("IMG9", JPEG, "image/jpeg", account_id=ACCOUNTS["whatsapp"])
        shard = await d.shard()
        await shard.start()
        msg = whatsapp_media(d, "IMG9", "image", "image/jpeg", user="U8")
        await d.push(msg)
        await eventually(lambda: d.texts_to("U8"))
        store = MediaStore(redis)
        assert len(await store.refs(d.tenant_id, msg.conversation)) == 1
        await d.push(Unsend(event_id=f"unsend:{msg.event_id}", channel="whatsapp",
                            account_id=msg.account_id, user_id="U8",
                            timestamp_ms=msg.timestamp_ms + 5, target_id=msg.event_id))
        await eventually(lambda: _no_media(store, d, msg.conversation))
        assert await media_entries(redis, d, msg.conversation) == []


async def test_an_unsent_message_stops_its_download_retry(redis: Redis, redis_url: str) -> None:
    async with desk(redis, redis_url) as d:
        d.graph.add_media("IMG5", JPEG, "image/jpeg", account_id=ACCOUNTS["whatsapp"])
        d.graph.fail_next_download(times=1, status=503)
        shard = await d.shard(media_options={"retry_base_s": 0.5})
        await shard.start()
        msg = whatsapp_media(d, "IMG5", "image", "image/jpeg", user="U10")
        await d.push(msg)
        await eventually(lambda: d.texts_to("U10"))
        assert await redis.hlen(keys.media_retries(d.tenant_id)) == 1
        await d.push(Unsend(event_id=f"unsend:{msg.event_id}", channel="whatsapp",
                            account_id=msg.account_id, user_id="U10",
                            timestamp_ms=msg.timestamp_ms + 5, target_id=msg.event_id))
        await eventually(lambda: _unlisted(redis, d))
        services = d.shards[0][1]
        assert services.media is not None
        await eventually(lambda: services.media is not None and services.media.retrying == 0)
        # The retry found the listing gone: nothing of the message came back.
        assert await media_entries(redis, d, msg.conversation) == []
        assert not await MediaStore(redis).refs(d.tenant_id, msg.conversation)


def _acknowledged(d: Desk) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await d.pending() == 0
    return check


async def _stored(redis: Redis, d: Desk, conv: str) -> bool:
    return any(e.media and e.media[0].status == "stored" for e in await media_entries(redis, d, conv))


async def _unlisted(redis: Redis, d: Desk) -> bool:
    return not await redis.hgetall(keys.media_retries(d.tenant_id))


async def _no_media(store: MediaStore, d: Desk, conv: str) -> bool:
    return not await store.refs(d.tenant_id, conv)


async def _found_in_redis(redis: Redis, needle: bytes) -> bool:
    async for name in redis.scan_iter(count=500):
        if (await redis.type(name)) == b"stream":
            for _entry, fields in await redis.xrange(name):
                if any(needle in v for v in fields.values()):
                    return True
    return False

